// A running step's log: append what the server streams (server-sent events) until the step ends.
// Text is inserted as text, never as HTML. After a dropped connection, resume at the last offset.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log || !log.dataset.stream) return;
  const badge = document.getElementById("live");
  const outcome = document.getElementById("outcome");
  let offset = Number(log.dataset.offset || 0);

  function seconds(value) {
    if (value === null || value === undefined) return "-";
    return value < 10 ? value.toFixed(2) + "s" : value < 60 ? value.toFixed(1) + "s"
      : Math.floor(value / 60) + "m" + String(Math.round(value % 60)).padStart(2, "0") + "s";
  }

  function ended(result, exitStatus, duration) {
    const exit = document.getElementById("exit");
    if (exit) exit.textContent = exitStatus === null ? "-" : String(exitStatus);
    const time = document.getElementById("duration");
    if (time) time.textContent = seconds(duration);
    if (badge) {
      badge.textContent = "ended: " + result;
      badge.classList.add("ended");
    }
    if (outcome) {
      const span = document.createElement("span");
      span.className = "oc o-" + result.replace(/[^a-z-]/g, "");
      span.textContent = result;
      outcome.replaceChildren(span);
    }
    document.body.dataset.logEnded = result;
  }

  function connect() {
    const source = new EventSource(log.dataset.stream + "?offset=" + offset);
    source.addEventListener("chunk", function (event) {
      const data = JSON.parse(event.data);
      const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 4;
      log.appendChild(document.createTextNode(data.text));
      offset = data.offset;
      if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    });
    source.addEventListener("end", function (event) {
      source.close();
      const data = JSON.parse(event.data);
      ended(data.outcome, data.exit_status, data.duration_s);
    });
    source.onerror = function () {
      source.close();
      window.setTimeout(connect, 2000);
    };
  }
  connect();
})();
