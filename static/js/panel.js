/* The panel's few behaviours: bulk selection, copy to clipboard, the live refresh's care for
   what the user holds (unchanged cells are left alone, open logs stay open) and a running
   run's clock. Everything works without it, except the conveniences. The colour theme is
   static/js/theme.js, which must run before the page paints. */
(function () {
  "use strict";

  /* --- Bulk selection -------------------------------------------------------------------- */

  function rowBoxes(form) {
    return Array.prototype.slice.call(form.querySelectorAll("input.row-select"));
  }

  function updateSelection(form) {
    var boxes = rowBoxes(form);
    var checked = boxes.filter(function (box) { return box.checked; }).length;
    var all = form.querySelector("#select-all");
    if (all) {
      all.checked = checked > 0 && checked === boxes.length;
      all.indeterminate = checked > 0 && checked < boxes.length;
    }
    var count = form.querySelector("[data-selected-count]");
    if (count) count.textContent = checked === 1 ? "1 node selected" : checked + " nodes selected";
    form.querySelectorAll("[data-needs-selection]").forEach(function (button) {
      button.disabled = checked === 0;
    });
  }

  function setUpBulk() {
    var form = document.getElementById("bulk-form");
    if (!form) return;
    form.addEventListener("change", function (event) {
      if (event.target.id === "select-all") {
        rowBoxes(form).forEach(function (box) { box.checked = event.target.checked; });
      }
      updateSelection(form);
    });
    updateSelection(form); /* the browser may restore checks on back/forward */
  }

  /* --- Copy to clipboard ----------------------------------------------------------------- */

  function copyText(text, source) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    /* Plain http (not localhost): the old way, from the selected field. */
    source.removeAttribute("readonly");
    source.select();
    var ok = document.execCommand("copy");
    source.setAttribute("readonly", "");
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function setUpCopy() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest("[data-copy-target]");
      if (!button) return;
      var source = document.querySelector(button.getAttribute("data-copy-target"));
      var status = document.querySelector(button.getAttribute("data-copy-status"));
      if (!source) return;
      copyText(source.value || source.textContent, source).then(
        function () { if (status) status.textContent = "Copied to the clipboard."; },
        function () { if (status) status.textContent = "Copy failed: select the text and copy it."; }
      );
    });
  }

  /* --- Add form: the SSH fields only for SSH nodes ------------------------------------------ */

  function setUpTransport() {
    var ssh = document.querySelector("[data-ssh-fields]");
    var radios = document.querySelectorAll('input[name="transport"]');
    if (!ssh || !radios.length) return;
    var sync = function () {
      var chosen = document.querySelector('input[name="transport"]:checked');
      ssh.hidden = !!chosen && chosen.value === "local";
    };
    radios.forEach(function (radio) { radio.addEventListener("change", sync); });
    sync();
  }

  /* --- Live refresh ---------------------------------------------------------------------- */

  function setUpLive() {
    /* Leave identical elements alone: no flicker, no lost focus, and only what changed is
       swapped. The server already answers 204 when nothing at all changed. */
    document.body.addEventListener("htmx:oobBeforeSwap", function (event) {
      var detail = event.detail;
      var incoming = detail.fragment && (detail.fragment.firstElementChild || detail.fragment);
      if (incoming && incoming.id && incoming.id === detail.target.id &&
          detail.target.isEqualNode(incoming)) {
        detail.shouldSwap = false;
        return;
      }
      /* Keep the choice made in a list (the type to skip) while the card is redrawn. */
      detail.target.querySelectorAll("select[id]").forEach(function (select) {
        var again = incoming && incoming.querySelector ? incoming.querySelector("#" + CSS.escape(select.id)) : null;
        if (again && again.querySelector('option[value="' + CSS.escape(select.value) + '"]')) {
          again.value = select.value;
          again.querySelectorAll("option").forEach(function (o) { o.selected = o.value === select.value; });
        }
      });
      /* Keep the run logs and disclosures the user opened open. */
      var open = [];
      detail.target.querySelectorAll("details[open][id]").forEach(function (d) { open.push(d.id); });
      if (open.length && incoming && incoming.querySelectorAll) {
        open.forEach(function (id) {
          var again = incoming.querySelector("#" + CSS.escape(id));
          if (again) again.setAttribute("open", "");
        });
      }
    });
  }

  /* --- A running run's clock ------------------------------------------------------------ */

  /* The server sends a running run's elapsed seconds once (data-elapsed) and its page is
     redrawn only when the run's data changes, so the browser keeps counting in between.
     Same text as the server's `seconds` filter. */
  function formatSeconds(value) {
    if (value < 10) return value.toFixed(1) + " s";
    if (value < 120) return Math.round(value) + " s";
    var whole = Math.floor(value);
    return Math.floor(whole / 60) + " min " + (whole % 60) + " s";
  }

  function setUpElapsed() {
    var seenAt = new WeakMap(); /* each element counts from when it arrived */
    var tick = function () {
      var now = Date.now();
      document.querySelectorAll(".run-elapsed[data-elapsed]").forEach(function (clock) {
        if (!seenAt.has(clock)) seenAt.set(clock, now);
        var start = parseFloat(clock.getAttribute("data-elapsed"));
        if (isNaN(start)) return;
        var text = formatSeconds(start + (now - seenAt.get(clock)) / 1000);
        if (clock.textContent !== text) clock.textContent = text;
      });
    };
    tick();
    window.setInterval(tick, 1000);
  }

  /* --- Folded on a phone: the list's counters and filters ------------------------------- */

  /* Open in the HTML (a page without scripts shows everything); closed on a narrow screen so
     the first node is on the first screen. The CSS hides the toggle on wider screens. */
  function setUpFolds() {
    if (!window.matchMedia("(max-width: 767.98px)").matches) return;
    document.querySelectorAll("details[data-fold-on-phone]").forEach(function (d) {
      d.removeAttribute("open");
    });
  }

  /* --- Filter a long list of choices (a role's nodes) by name ---------------------------- */

  function setUpChoiceFilters() {
    document.querySelectorAll("input[data-choice-filter]").forEach(function (input) {
      var list = document.getElementById(input.getAttribute("aria-controls"));
      if (!list) return;
      input.hidden = false;
      input.addEventListener("input", function () {
        var words = input.value.trim().toLowerCase();
        list.querySelectorAll(".form-check").forEach(function (choice) {
          var box = choice.querySelector("input");
          var shown = !words || (box && box.checked) ||
            choice.textContent.toLowerCase().indexOf(words) !== -1;
          choice.hidden = !shown;
        });
      });
      /* Enter in the filter narrows the list; it does not submit the form. */
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter") event.preventDefault();
      });
    });
  }

  function start() {
    setUpFolds();
    setUpChoiceFilters();
    setUpBulk();
    setUpCopy();
    setUpTransport();
    setUpLive();
    setUpElapsed();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
