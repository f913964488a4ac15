/* The colour theme, the one place it lives: loaded in <head> without `defer`, so the page
   never paints in the wrong theme. The stored choice wins, else the system's; the toggle
   stores a choice, and without one the page follows the system when it changes. */
(function () {
  "use strict";

  var KEY = "panel-theme";

  function stored() {
    try {
      return window.localStorage.getItem(KEY);
    } catch (e) {
      return null; /* storage blocked: follow the system */
    }
  }

  function systemDark() {
    return !!(window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
  }

  function apply(theme) {
    document.documentElement.setAttribute("data-bs-theme", theme);
    document.querySelectorAll("#theme-toggle").forEach(function (button) {
      button.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
    });
  }

  function current() {
    return document.documentElement.getAttribute("data-bs-theme") === "dark" ? "dark" : "light";
  }

  var choice = stored();
  apply(choice ? choice : systemDark() ? "dark" : "light");

  /* The toggle is drawn after this script runs: mark it once the document is parsed. */
  document.addEventListener("DOMContentLoaded", function () { apply(current()); });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("#theme-toggle");
    if (!button) return;
    var theme = current() === "dark" ? "light" : "dark";
    try {
      window.localStorage.setItem(KEY, theme);
    } catch (e) {
      /* not remembered, still applied */
    }
    apply(theme);
  });

  if (window.matchMedia) {
    var query = window.matchMedia("(prefers-color-scheme: dark)");
    if (query.addEventListener) {
      query.addEventListener("change", function (event) {
        if (!stored()) apply(event.matches ? "dark" : "light");
      });
    }
  }
})();
