// dutlab's one script: the job log viewer. Level filter (checkboxes hide levels) and, while the
// job runs, the live follow: new lines from /jobs/<id>/log.json every second; when the job is
// Finished the page reloads, with its results.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log) { return; }

  var levels = document.getElementById("levels");
  if (levels) {
    levels.addEventListener("change", function (event) {
      var level = event.target.getAttribute("data-level");
      if (level) { log.classList.toggle("hide-" + level, !event.target.checked); }
    });
  }

  var url = log.getAttribute("data-follow");
  if (!url) { return; }
  var next = parseInt(log.getAttribute("data-next"), 10) || 0;
  var follow = document.getElementById("follow");
  var count = document.getElementById("line-count");

  function row(line) {
    var div = document.createElement("div");
    div.className = "line lvl-" + line[2];
    div.id = "L" + line[0];
    var n = document.createElement("a");
    n.className = "n";
    n.href = "#L" + line[0];
    n.textContent = String(line[0]);
    var dt = document.createElement("span");
    dt.className = "dt";
    dt.textContent = line[1];
    var msg = document.createElement("span");
    msg.className = "msg";
    msg.textContent = line[3];
    div.appendChild(n);
    div.appendChild(dt);
    div.appendChild(msg);
    return div;
  }

  function badge(id, label) {
    var holder = document.getElementById(id);
    if (holder) {
      holder.innerHTML = "";
      var span = document.createElement("span");
      span.className = "badge " + label.toLowerCase();
      span.textContent = label;
      holder.appendChild(span);
    }
  }

  function poll() {
    fetch(url + "?start=" + next, {credentials: "same-origin", cache: "no-store"})
      .then(function (answer) {
        if (!answer.ok) { throw new Error("HTTP " + answer.status); }
        return answer.json();
      })
      .then(function (data) {
        var lines = data.lines;
        for (var i = 0; i < lines.length; i++) { log.appendChild(row(lines[i])); }
        next = data.next;
        if (count) { count.textContent = data.count + " lines"; }
        badge("job-state", data.state);
        badge("job-health", data.health);
        if (lines.length && follow && follow.checked) { window.scrollTo(0, document.body.scrollHeight); }
        if (data.finished) {
          window.location.reload();
        } else {
          window.setTimeout(poll, lines.length ? 500 : 1000);
        }
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  window.setTimeout(poll, 1000);
}());
