// holdless console: the few things htmx does not do.
// - Full screen: the wallboard's "Full screen" link also asks the browser for it.
// - Plan files: a file picked in a plan form is read into its textarea (nothing is
//   uploaded until the form is sent).
// - Live status: the wallboard says when its event stream is down (it reconnects).
(function () {
  "use strict";
  document.addEventListener("click", function (e) {
    var link = e.target.closest && e.target.closest("[data-fullscreen]");
    if (link && document.documentElement.requestFullscreen) {
      document.documentElement.requestFullscreen().catch(function () {});
    }
  });
  document.addEventListener("change", function (e) {
    var input = e.target;
    var target = input.getAttribute && input.getAttribute("data-load-into");
    if (!target || !input.files || !input.files[0]) return;
    input.files[0].text().then(function (text) {
      var area = document.getElementById(target);
      if (area) area.value = text;
    });
  });
  function status(text, ok) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.textContent = text;
    el.className = "live-status" + (ok ? "" : " down");
  }
  document.addEventListener("htmx:sseOpen", function () { status("live", true); });
  document.addEventListener("htmx:sseError", function () { status("reconnecting", false); });
})();
