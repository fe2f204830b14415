// WebAdmin: confirmation of destructive forms, live counters on Monitors.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function lookup(data, path) {
  return path.split(".").reduce(function (obj, key) {
    return obj === undefined || obj === null ? undefined : obj[key];
  }, data);
}

function poll(box) {
  fetch(box.getAttribute("data-poll"), { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (response) { return response.ok ? response.json() : null; })
    .then(function (data) {
      if (!data) { return; }
      document.querySelectorAll("[data-counter]").forEach(function (el) {
        var value = lookup(data, el.getAttribute("data-counter"));
        if (value !== undefined) { el.textContent = String(value); }
      });
    })
    .catch(function () {});
}

document.addEventListener("DOMContentLoaded", function () {
  var box = document.querySelector("[data-poll]");
  if (box) { setInterval(function () { poll(box); }, 2000); }
});
