// A plain browser EventSource on the proxy's OFREP event stream: the URL (with its signed
// ticket) comes from a bulk evaluation this page makes itself, as a browser SDK would.
// Everything that happens is logged in window.esPage for the Python test to read.

"use strict";
(function () {
  var page = {
    loadId: Date.now() + "-" + Math.random().toString(36).slice(2),
    log: [],
    opens: 0,
    errors: 0,
    source: null,
  };
  window.esPage = page;

  page.streamUrl = function (baseUrl, clientKey) {
    return fetch(baseUrl + "/ofrep/v1/evaluate/flags", {
      method: "POST",
      headers: { "Authorization": "Bearer " + clientKey, "Content-Type": "application/json" },
      body: JSON.stringify({ context: { targetingKey: "eventsource-page" } }),
    }).then(function (response) {
      return response.json().then(function (body) {
        var streams = body.eventStreams || [];
        return {
          status: response.status,
          version: body.metadata ? body.metadata.version : null,
          streams: streams,
        };
      });
    });
  };

  page.connect = function (url) {
    var source = new EventSource(url);
    page.source = source;
    source.onopen = function () {
      page.opens += 1;
      page.log.push({ kind: "open", at: Date.now(), readyState: source.readyState });
    };
    source.onerror = function () {
      page.errors += 1;
      page.log.push({ kind: "error", at: Date.now(), readyState: source.readyState });
    };
    source.onmessage = function (event) {
      var data = null;
      try { data = JSON.parse(event.data); } catch (e) { data = { unparsed: event.data }; }
      page.log.push({
        kind: "message", at: Date.now(), id: event.lastEventId, event: event.type, data: data,
      });
    };
    return source.readyState;
  };

  page.messages = function () {
    return page.log.filter(function (e) { return e.kind === "message"; });
  };
})();
