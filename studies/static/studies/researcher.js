/* Researcher pages' behaviour, kept out of the pages so that the Content-Security-Policy allows scripts from
   this site only: the gallery's synchronised playing and utterance picker, and the models page's polling of
   training progress. Each part runs only on the page that has its elements. */
(function () {
  "use strict";

  // Gallery: start every video from 0 at once and keep them on the first one's clock (only it has sound).
  var videos = Array.prototype.slice.call(document.querySelectorAll(".gallery video"));
  if (videos.length) {
    var lead = videos[0];
    document.getElementById("play-all").addEventListener("click", function () {
      videos.forEach(function (v) { v.pause(); v.currentTime = 0; });
      Promise.all(videos.map(function (v) { return v.play(); })).catch(function () {});
    });
    document.getElementById("pause-all").addEventListener("click", function () {
      videos.forEach(function (v) { v.pause(); });
    });
    setInterval(function () {
      if (lead.paused) return;
      videos.forEach(function (v) {
        if (v !== lead && Math.abs(v.currentTime - lead.currentTime) > 0.04) v.currentTime = lead.currentTime;
      });
    }, 250);
  }
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // Models: poll the rows still training, once every two seconds, until they finish.
  function poll() {
    var rows = document.querySelectorAll('tr[data-status="queued"], tr[data-status="training"]');
    if (!rows.length) return;
    rows.forEach(function (row) {
      fetch(row.dataset.progress, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (d) {
        var p = d.progress || {};
        row.dataset.status = d.status;
        row.querySelector('[data-field="status"]').textContent = d.status;
        row.querySelector('[data-field="bar"]').value = p.fraction || 0;
        row.querySelector('[data-field="detail"]').textContent = p.epoch ? (p.stage + " · epoch " + p.epoch) : (p.stage || "");
        if (p.best_val !== undefined) row.querySelector('[data-field="best"]').textContent = Number(p.best_val).toFixed(4);
      });
    });
    setTimeout(poll, 2000);
  }
  if (document.querySelector("tr[data-progress]")) setTimeout(poll, 2000);
})();
