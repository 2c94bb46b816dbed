// The call page's player, synchronised with its timeline: click a turn to hear it; the turn being
// heard is highlighted. Loaded from our own origin (CSP: no inline script); the page works without it.
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }
  ready(function () {
    var player = document.getElementById("player");
    var status = document.getElementById("player-status");
    var turns = Array.prototype.slice.call(document.querySelectorAll("[data-turn][data-seek]"));
    function seek(seconds) {
      if (!player) return;
      player.currentTime = seconds;
      if (status) status.textContent = "at " + seconds.toFixed(1) + " s";
      var playing = player.play();
      if (playing && playing.catch) playing.catch(function () { /* no audio device: position is set */ });
    }
    document.addEventListener("click", function (event) {
      var target = event.target;
      while (target && target !== document && !(target.getAttribute && target.getAttribute("data-seek"))) {
        target = target.parentNode;
      }
      if (!target || target === document) return;
      var seconds = parseFloat(target.getAttribute("data-seek"));
      if (isFinite(seconds)) seek(seconds);
    });
    if (!player) return;
    var starts = turns.map(function (el) {
      return {turn: el.getAttribute("data-turn"), at: parseFloat(el.getAttribute("data-seek"))};
    }).sort(function (a, b) { return a.at - b.at; });
    player.addEventListener("timeupdate", function () {
      var now = player.currentTime, current = null;
      for (var i = 0; i < starts.length; i++) { if (starts[i].at <= now + 0.05) current = starts[i].turn; }
      turns.forEach(function (el) {
        el.classList.toggle("current", el.getAttribute("data-turn") === current);
      });
      document.body.setAttribute("data-current-turn", current === null ? "" : current);
    });
  });
})();
