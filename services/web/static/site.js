// Two small helps, nothing required: the viewer's time zone (so pages can show the
// sessions in it too, and a sign-up records it) and a print button for receipts.
(function () {
  try {
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (tz && document.cookie.indexOf("tz=" + tz) === -1) {
      document.cookie = "tz=" + encodeURIComponent(tz) + "; path=/; max-age=31536000; samesite=lax";
    }
    document.addEventListener("DOMContentLoaded", function () {
      document.querySelectorAll("[data-viewer-tz]").forEach(function (input) {
        if (tz && !input.dataset.kept) { input.value = tz; }
      });
      document.querySelectorAll("[data-print]").forEach(function (button) {
        button.addEventListener("click", function () { window.print(); });
      });
      var problem = document.getElementById("problem");
      if (problem) { problem.focus(); }
    });
  } catch (e) { /* an old browser: the pages work without this */ }
})();
