// buquet dashboard: a few lines of vanilla JS (no framework, no build, no network but this server).
(function () {
  "use strict";
  // Ask before destructive actions (forms with data-confirm).
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });
  // Load a payload object on demand into its <pre> (the link works without JS too).
  document.addEventListener("click", function (ev) {
    var a = ev.target.closest("a.load");
    if (!a) return;
    ev.preventDefault();
    var target = document.getElementById(a.getAttribute("data-target"));
    a.textContent = "loading…";
    fetch(a.href, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        var key = a.href.split("/").pop();
        target.textContent = res.ok ? JSON.stringify(res.body[key], null, 2) : res.body.error;
        a.remove();
      })
      .catch(function (err) { a.textContent = "failed: " + err; });
  });
  // Overview auto-refresh (remembered in localStorage).
  var box = document.getElementById("auto-refresh");
  if (box) {
    box.checked = window.localStorage.getItem("buquet.autoRefresh") === "1";
    var timer = null;
    var arm = function () {
      if (timer) window.clearTimeout(timer);
      timer = box.checked ? window.setTimeout(function () { window.location.reload(); }, 10000) : null;
    };
    box.addEventListener("change", function () {
      window.localStorage.setItem("buquet.autoRefresh", box.checked ? "1" : "0");
      arm();
    });
    arm();
  }
})();
