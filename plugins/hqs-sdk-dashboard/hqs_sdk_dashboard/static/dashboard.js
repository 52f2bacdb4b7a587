// Live updates and copy buttons. The pages work without this file.
// One request per page per second, for the executions on it that have not finished.
"use strict";
(function () {
  var base = document.body.getAttribute("data-base") || "/";
  var timer = null;
  var busy = false;

  function live() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live][data-id]"));
  }

  function setText(scope, field, text) {
    var el = scope.querySelector('[data-field="' + field + '"]');
    if (el && text !== undefined && el.textContent !== text) { el.textContent = text; }
  }

  function apply(el, row) {
    var badge = el.querySelector('[data-field="state"]');
    if (badge && badge.textContent !== row.state) {
      badge.textContent = row.state;
      badge.className = "state state-" + row.state;
    }
    el.setAttribute("data-state", row.state);
    var bar = el.querySelector('[data-field="progress"] progress');
    if (bar && typeof row.progress === "number") { bar.value = row.progress; }
    setText(el, "progress_message", row.progress_message);
    setText(el, "started", row.started);
    setText(el, "finished", row.finished);
    setText(el, "duration", row.duration);
    if (row.finished_state) {
      el.removeAttribute("data-live");
      var progress = el.querySelector('[data-field="progress"]');
      if (progress) { progress.hidden = true; }
    }
  }

  // Replace the page's content with a fresh copy of the same URL (filters, cursor and scroll
  // position stay: only the elements' content changes).
  function refreshContent() {
    return fetch(window.location.href, {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) { throw new Error(r.status); }
      return r.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.querySelector("main");
      var main = document.querySelector("main");
      if (fresh && main) {
        var x = window.scrollX, y = window.scrollY;
        main.innerHTML = fresh.innerHTML;
        window.scrollTo(x, y);
        setupCopy();
      }
    });
  }

  function poll() {
    var els = live();
    if (!els.length) { stop(); return; }
    if (busy) { return; }
    busy = true;
    var query = els.map(function (el) {
      return "id=" + encodeURIComponent(el.getAttribute("data-id"));
    }).join("&");
    fetch(base + "api/rows?" + query, {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) { throw new Error(r.status); }
      return r.json();
    }).then(function (data) {
      var finished = false;
      data.rows.forEach(function (row) {
        els.forEach(function (el) {
          if (el.getAttribute("data-id") === row.id) {
            var was = el.getAttribute("data-state");
            apply(el, row);
            if (row.finished_state && was !== row.state) { finished = true; }
          }
        });
      });
      if (finished) { return refreshContent(); }
    }).catch(function () {
      stop();
    }).then(function () {
      busy = false;
      if (!live().length) { stop(); }
    });
  }

  function start() {
    if (!timer && live().length) { timer = window.setInterval(poll, 1000); }
  }

  function stop() {
    if (timer) { window.clearInterval(timer); timer = null; }
  }

  function setupCopy() {
    Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (b) {
      b.hidden = !(navigator.clipboard && navigator.clipboard.writeText);
      b.addEventListener("click", function () {
        var source = document.getElementById(b.getAttribute("data-copy"));
        if (!source) { return; }
        navigator.clipboard.writeText(source.textContent).then(function () {
          b.textContent = "Copied";
        }, function () { b.textContent = "Select and copy by hand"; });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupCopy();
    start();
  });
})();
