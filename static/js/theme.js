/* Colour theme, set before the page paints: the stored choice, else the system's. */
(function () {
  "use strict";
  var stored = null;
  try {
    stored = window.localStorage.getItem("panel-theme");
  } catch (e) {
    /* storage blocked: follow the system */
  }
  var dark = stored ? stored === "dark"
    : !!(window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.setAttribute("data-bs-theme", dark ? "dark" : "light");
})();
