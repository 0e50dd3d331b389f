/*
 * Touchstream website snippet: page views and clicks to the collector's /v1/events.
 * No build step, no dependencies. Include it with a publishable web key
 * (TOUCHSTREAM_COLLECTOR_WEB_KEYS), which may send only web page views and clicks:
 *
 *   <script src="https://collector.example.com/v1/touchstream.js"
 *           data-key="PUBLISHABLE_KEY" async></script>
 *
 * Optional attributes: data-endpoint (defaults to the script's own origin),
 * data-customer-id (a known customer), data-clicks="off" (no automatic clicks).
 *
 * Page API (window.touchstream): identify(customerId), page(), click(label),
 * flush(). Until identify() is called the visitor is an anonymous id kept in
 * localStorage. Clicks are recorded on links, buttons and any element with
 * data-touchstream-click="label"; only the element's label, id and the link's path
 * are sent (no query strings, no page text). Events are sent in small batches, and
 * with keepalive when the page is hidden, so the last clicks are not lost; batches
 * that fail on the network or with a 5xx are retried.
 */
(function () {
  "use strict";
  if (window.touchstream && window.touchstream.version) return;

  var script = document.currentScript;
  var data = (script && script.dataset) || {};
  var endpoint = (data.endpoint || (script ? new URL(script.src).origin : "")) + "/v1/events";
  var key = data.key || "";
  var STORE = "touchstream.anonymous_id";
  var MAX_QUEUE = 500;
  var BATCH = 20;
  var queue = [];
  var timer = null;
  var backoff = 1000;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }

  function anonymousId() {
    try {
      var id = localStorage.getItem(STORE);
      if (!id) {
        id = "anon-" + uuid();
        localStorage.setItem(STORE, id);
      }
      return id;
    } catch (e) {
      return "anon-" + uuid(); // storage blocked: one id per page load
    }
  }

  var customerId = data.customerId || anonymousId();

  function clip(value) {
    return String(value == null ? "" : value).slice(0, 256);
  }

  function record(kind, attributes) {
    var now = new Date().toISOString();
    queue.push({
      event_id: "web:" + uuid(),
      occurred_at: now,
      received_at: now,
      customer_id: customerId,
      channel: "web",
      kind: kind,
      direction: "inbound",
      actor: "customer",
      attributes: attributes
    });
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    schedule(queue.length >= BATCH ? 0 : 1000);
  }

  function schedule(delay) {
    if (timer !== null) return;
    timer = setTimeout(function () {
      timer = null;
      send(false);
    }, delay);
  }

  function send(leaving) {
    if (!queue.length || !key) return;
    var batch = queue.splice(0, BATCH);
    fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + key },
      body: JSON.stringify(batch),
      keepalive: leaving,
      mode: "cors",
      credentials: "omit"
    }).then(function (response) {
      if (response.status >= 500) throw new Error("collector answered " + response.status);
      backoff = 1000;
      if (response.status >= 400) {
        response.json().then(function (answer) {
          console.warn("touchstream: events rejected:", answer.error || answer.errors);
        }, function () {});
      }
      if (queue.length) schedule(0);
    }).catch(function () {
      queue = batch.concat(queue).slice(0, MAX_QUEUE); // kept for the next attempt
      schedule(backoff);
      backoff = Math.min(backoff * 2, 30000);
    });
    if (leaving && queue.length) send(true);
  }

  function page() {
    record("page_view", {
      path: clip(location.pathname),
      title: clip(document.title),
      referrer_host: clip(document.referrer ? new URL(document.referrer).host : "")
    });
  }

  function click(label, element) {
    var attributes = { label: clip(label) };
    if (element && element.id) attributes.element_id = clip(element.id);
    if (element && element.href) {
      try {
        var target = new URL(element.href, location.href);
        attributes.target = clip(target.host === location.host ? target.pathname : target.host + target.pathname);
      } catch (e) { /* not a URL: no target */ }
    }
    attributes.path = clip(location.pathname);
    record("click", attributes);
  }

  if (data.clicks !== "off") {
    document.addEventListener("click", function (event) {
      var element = event.target && event.target.closest
        ? event.target.closest("[data-touchstream-click], a[href], button")
        : null;
      if (!element) return;
      var label = element.getAttribute("data-touchstream-click") ||
        element.getAttribute("aria-label") || element.id || element.tagName.toLowerCase();
      click(label, element);
    }, true);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") send(true);
  });
  window.addEventListener("pagehide", function () { send(true); });

  window.touchstream = {
    version: "1",
    identify: function (id) { if (id) customerId = String(id); },
    page: page,
    click: function (label) { click(label, null); },
    flush: function () { send(false); }
  };

  page();
})();
