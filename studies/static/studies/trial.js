/* Trial page: the answers unlock only after every rated video has played to the end (a slider page's open
   reference is the participant's to play or not); the player's facts (watched fraction, seeks, pauses,
   replays, hidden time, errors) of every video played to its end, the reference's too, go with the answer,
   and the server checks "ended" against its own clock before it saves anything (too early: the page waits a
   moment and sends the same answer again). Answers are sent once per trial with a client-made submission id,
   retried on network failure, a server error or a rate limit (after its Retry-After). */
(function () {
  "use strict";
  var root = document.getElementById("trial");
  if (!root) return;
  var csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  var qtype = root.dataset.qtype;
  var nextBtn = document.getElementById("next");
  var errorBox = document.getElementById("trial-error");
  var videos = Array.prototype.slice.call(root.querySelectorAll("video.stimulus"));
  var rated = videos.filter(function (v) { return !v.closest(".open-reference"); });
  var state = {};
  var unlockedAt = null;
  var hiddenSince = document.hidden ? Date.now() : null;
  var submissionId = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() :
    "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = Math.random() * 16 | 0; return (c === "x" ? r : (r & 0x3 | 0x8)).toString(16);
    });

  function showError(msg) { errorBox.textContent = msg; errorBox.hidden = !msg; }

  function post(url, body, attempt) {
    attempt = attempt || 0;
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify(body)
    }).then(function (resp) {
      if (resp.status === 429 && attempt < 6) {  // over the rate limit: wait as told, then send it again
        var wait = Math.min(60, parseInt(resp.headers.get("Retry-After"), 10) || 2);
        showError("Please wait a moment…");
        return new Promise(function (res) { setTimeout(res, wait * 1000); })
          .then(function () { return post(url, body, attempt + 1); });
      }
      if (resp.status >= 500 && attempt < 6) { throw new Error("server " + resp.status); }
      return resp.json().then(function (data) { return {status: resp.status, data: data}; });
    }).catch(function (err) {
      if (attempt >= 6) { throw err; }
      showError("Connection problem, retrying…");
      return new Promise(function (res) { setTimeout(res, 500 * Math.pow(2, attempt)); })
        .then(function () { return post(url, body, attempt + 1); });
    });
  }

  function coverage(s, duration) {
    // Union of played intervals over the clip's duration.
    var iv = s.intervals.slice().sort(function (a, b) { return a[0] - b[0]; });
    var total = 0, cur = null;
    iv.forEach(function (x) {
      if (!cur || x[0] > cur[1]) { if (cur) total += cur[1] - cur[0]; cur = [x[0], x[1]]; }
      else { cur[1] = Math.max(cur[1], x[1]); }
    });
    if (cur) total += cur[1] - cur[0];
    return duration > 0 ? Math.min(1, total / duration) : 0;
  }

  function facts(video) {
    var s = state[video.dataset.slot];
    return {
      slot: parseInt(video.dataset.slot, 10), ended: s.endedOnce,
      watched_fraction: Math.round(coverage(s, video.duration || 0) * 1000) / 1000,
      seeks: s.seeks, pauses: s.pauses, replays: s.replays, hidden_ms: Math.round(s.hiddenMs),
      playback_errors: s.errors
    };
  }

  function maybeUnlock() {
    var all = rated.every(function (v) { return state[v.dataset.slot].endedOnce; });
    if (!all || unlockedAt !== null) return;
    unlockedAt = Date.now();
    root.querySelectorAll(".answer").forEach(function (el) { el.disabled = false; });
    var hint = document.getElementById("unlock-hint");
    if (hint) hint.textContent = "Now give your answer.";
    var first = root.querySelector(".answer");
    if (first) first.focus();
    updateNext();
  }

  videos.forEach(function (video) {
    var s = state[video.dataset.slot] = {intervals: [], seeks: 0, pauses: 0, replays: 0, hiddenMs: 0,
                                         errors: 0, endedOnce: false, last: 0};
    var btn = root.querySelector("button.play[data-slot='" + video.dataset.slot + "']");
    btn.addEventListener("click", function () {
      videos.forEach(function (other) { if (other !== video) other.pause(); });
      if (video.ended) { s.replays += 1; video.currentTime = 0; }
      video.playbackRate = 1;
      var p = video.play();
      if (p && p.catch) p.catch(function () { showError("The video could not start. Press Play again."); });
    });
    video.addEventListener("play", function () { s.last = video.currentTime; btn.textContent = "Playing…"; btn.disabled = true; });
    video.addEventListener("ratechange", function () { if (video.playbackRate !== 1) video.playbackRate = 1; });
    video.addEventListener("timeupdate", function () {
      var t = video.currentTime;
      if (!video.seeking && t >= s.last && t - s.last < 1.5) s.intervals.push([s.last, t]);
      s.last = t;
    });
    video.addEventListener("seeking", function () { if (!video.ended && video.currentTime > 0) s.seeks += 1; s.last = video.currentTime; });
    video.addEventListener("pause", function () {
      btn.disabled = false; btn.textContent = video.ended ? "Play again" : "Resume";
      if (!video.ended) s.pauses += 1;
    });
    video.addEventListener("error", function () { s.errors += 1; showError("This video could not be played. Please reload the page."); });
    video.addEventListener("ended", function () {
      s.intervals.push([s.last, video.duration]);
      btn.disabled = false; btn.textContent = "Play again";
      s.endedOnce = true;
      maybeUnlock();
    });
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { hiddenSince = Date.now(); return; }
    if (hiddenSince !== null) {
      var gone = Date.now() - hiddenSince;
      videos.forEach(function (v) { if (!v.paused || v.ended) state[v.dataset.slot].hiddenMs += gone; });
      hiddenSince = null;
    }
  });

  function collect() {
    var answers = [], complete = true;
    if (qtype === "slider") {
      root.querySelectorAll("input.slider").forEach(function (el) {
        if (!el.dataset.touched) complete = false;
        answers.push({item: el.dataset.item, slot: parseInt(el.dataset.slot, 10), value: parseInt(el.value, 10)});
      });
    } else {
      root.querySelectorAll("fieldset").forEach(function (fs) {
        var checked = fs.querySelector("input:checked");
        if (!checked) { complete = false; return; }
        var a = {item: fs.dataset.item, slot: 0};
        if (qtype === "likert") a.value = parseInt(checked.value, 10);
        else {
          var parts = checked.value.split(":");
          a.choice = parts[0];
          if (parts.length > 1) a.strength = parseInt(parts[1], 10);
        }
        answers.push(a);
      });
    }
    return {answers: answers, complete: complete};
  }

  function updateNext() { nextBtn.disabled = unlockedAt === null || !collect().complete; }

  root.querySelectorAll("input.slider").forEach(function (el) {
    el.addEventListener("input", function () {
      el.dataset.touched = "1";
      document.getElementById("o-" + el.dataset.slot + "-" + el.dataset.item).textContent = el.value;
      updateNext();
    });
  });
  root.querySelectorAll("input[type=radio]").forEach(function (el) { el.addEventListener("change", updateNext); });

  // Likert points with a label each stand side by side while every word of every label fits its point; when
  // one would not (many points, long words, a narrow screen) the scale lists its points one per row instead.
  var labelledScales = Array.prototype.slice.call(root.querySelectorAll(".points.labelled"));
  function fitLabels() {
    labelledScales.forEach(function (scale) {
      scale.classList.remove("stacked");
      var tooLong = Array.prototype.some.call(scale.querySelectorAll(".point-label"), function (label) {
        return label.scrollWidth > label.clientWidth + 1;
      });
      scale.classList.toggle("stacked", tooLong);
    });
  }
  if (labelledScales.length) { fitLabels(); window.addEventListener("resize", fitLabels); }

  var sending = false;
  function send(body, early) {
    post(root.dataset.answerUrl, body)
      .then(function (r) {
        if (r.data.ok || r.data.error === "answered") { window.location.assign(r.data.next || window.location.href); return; }
        if (r.data.error === "too_early" && early < 10) {  // the server's clock: a moment more, the same answer
          setTimeout(function () { send(body, early + 1); }, 1000);
          return;
        }
        sending = false; updateNext(); showError(r.data.message);
      })
      .catch(function () { sending = false; updateNext(); showError("Your answer could not be sent. Check your connection and press Next again."); });
  }
  nextBtn.addEventListener("click", function () {
    var c = collect();
    if (!c.complete || sending) return;
    sending = true; nextBtn.disabled = true; showError("");
    send({trial: root.dataset.trial, submission_id: submissionId, answers: c.answers,
          answer_ms: Date.now() - unlockedAt,
          watch: videos.filter(function (v) { return state[v.dataset.slot].endedOnce; }).map(facts)}, 0);
  });
})();
