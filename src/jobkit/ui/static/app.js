// jobkit ui: live logs. Each <pre class="log" data-live> follows its stream
// through server-sent events from the offset the page was rendered at.
"use strict";
document.querySelectorAll("pre.log[data-live]").forEach(function (pre) {
  var url = "/jobs/" + encodeURIComponent(pre.dataset.job) + "/logs/" + pre.dataset.stream +
    "/events?offset=" + encodeURIComponent(pre.dataset.offset || "0");
  var source = new EventSource(url);
  source.addEventListener("text", function (event) {
    pre.appendChild(document.createTextNode(JSON.parse(event.data)));
    pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("end", function (event) {
    source.close();
    pre.removeAttribute("data-live");
    var state = JSON.parse(event.data);
    pre.dataset.ended = state;
    var badge = document.querySelector("#job-state .state");
    if (badge && /^[A-Z]+$/.test(state)) {  // the job's final state, without a reload
      badge.textContent = state;
      badge.className = "state state-" + state.toLowerCase();
    }
  });
});
