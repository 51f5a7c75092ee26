"""The status page's documents: HTML with inline CSS and JS, nothing loaded from elsewhere.

The page holds no data: its script polls ``status/data`` once a second and renders the
answer with DOM calls (``textContent``, SVG elements), never as markup, so nothing an
environment or flag-set name contains can run. The Content-Security-Policy pins the
inline style and script by their SHA-256 and allows connections to this origin only.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

STYLE = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5d6677; --line: #dfe3ea;
  --card: #ffffff; --bg: #f4f6f9; --ok: #1b7f4b; --warn: #a86400; --bad: #b3261e;
  --accent: #2f5fd0; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 12px;
  padding: 14px 24px; background: #18202f; color: #fff; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header .meta { color: #b8c1d3; font-size: 13px; }
header form { margin-left: auto; }
button { font: inherit; border: 1px solid var(--line); border-radius: 6px;
  padding: 5px 12px; background: #fff; color: var(--ink); cursor: pointer; }
main { padding: 18px 24px 32px; max-width: 1280px; }
.badge { font-size: 12px; font-weight: 700; text-transform: uppercase; padding: 3px 9px;
  border-radius: 999px; background: #59616f; color: #fff; letter-spacing: .04em; }
.badge.ready { background: var(--ok); }
.badge.degraded { background: var(--warn); }
.badge.not-ready { background: var(--bad); }
.banner { margin: 0 0 14px; padding: 10px 14px; border-radius: 8px;
  background: #fdecea; color: var(--bad); border: 1px solid #f3c7c3; }
.banner.warn { background: #fff4e0; color: var(--warn); border-color: #f1d7a6; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr));
  gap: 12px; margin-bottom: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .05em; }
.card .value { font-size: 24px; font-weight: 650; margin: 2px 0; white-space: nowrap; }
.card .sub { color: var(--muted); font-size: 12px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 16px 14px; margin-bottom: 16px; }
section h2 { font-size: 15px; margin: 0 0 8px; }
section .note { color: var(--muted); font-size: 12px; margin: 0 0 8px; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
@media (max-width: 900px) { .charts { grid-template-columns: 1fr; } }
svg { width: 100%; height: 150px; display: block; }
svg .axis { stroke: var(--line); }
svg text { fill: var(--muted); font-size: 11px; }
svg .bar { fill: var(--accent); }
svg .bar.slow { fill: var(--warn); }
svg .line { fill: none; stroke: var(--accent); stroke-width: 2; }
svg .line.errors { stroke: var(--bad); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.empty { color: var(--muted); }
footer { color: var(--muted); font-size: 12px; }
.login { max-width: 420px; margin: 80px auto; background: var(--card); padding: 24px;
  border: 1px solid var(--line); border-radius: 10px; }
.login input { width: 100%; font: inherit; padding: 8px; margin: 8px 0 12px;
  border: 1px solid var(--line); border-radius: 6px; }
.login .error { color: var(--bad); }
"""

SCRIPT = """
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var body = document.body;
  var refreshes = 0;

  function fig(name) { return document.querySelector('[data-figure="' + name + '"]'); }
  function set(name, text, value) {
    var el = fig(name);
    if (!el) { return; }
    el.textContent = text;
    if (value !== undefined) { el.setAttribute("data-value", String(value)); }
  }
  function fixed(n, digits) { return Number(n).toFixed(digits); }
  function count(n) {
    return String(Math.round(n)).replace(/\\B(?=(\\d{3})+(?!\\d))/g, ",");
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "\\u2014"; }
    if (seconds < 1) { return fixed(seconds * 1000, seconds < 0.01 ? 1 : 0) + " ms"; }
    if (seconds < 120) { return fixed(seconds, 1) + " s"; }
    if (seconds < 7200) { return fixed(seconds / 60, 0) + " min"; }
    if (seconds < 172800) { return fixed(seconds / 3600, 1) + " h"; }
    return fixed(seconds / 86400, 1) + " d";
  }
  function clock(epoch) {
    if (!epoch) { return "\\u2014"; }
    return new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function banner(text, warn) {
    var b = document.getElementById("banner");
    b.hidden = !text;
    b.className = warn ? "banner warn" : "banner";
    b.textContent = text || "";
  }

  function lagChart(points) {
    var chart = document.getElementById("lag-chart");
    chart.textContent = "";
    var W = 600, H = 150, L = 46, B = 22, T = 10;
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    chart.setAttribute("data-points", String(points.length));
    chart.appendChild(svg("line", {x1: L, y1: H - B, x2: W, y2: H - B, "class": "axis"}));
    if (!points.length) {
      chart.appendChild(svg("text", {x: L + 8, y: H / 2}, "no change seen yet"));
      return;
    }
    var top = 0.01;
    points.forEach(function (p) { top = Math.max(top, p.seconds); });
    var scale = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600];
    for (var i = 0; i < scale.length; i++) { if (scale[i] >= top) { top = scale[i]; break; } }
    chart.appendChild(svg("text", {x: 2, y: T + 8}, duration(top)));
    chart.appendChild(svg("text", {x: 2, y: H - B}, "0"));
    chart.appendChild(svg("line", {x1: L, y1: T, x2: W, y2: T, "class": "axis"}));
    var slot = (W - L) / Math.max(points.length, 10);
    points.forEach(function (p, n) {
      var h = Math.max(1, (H - B - T) * Math.min(p.seconds, top) / top);
      var bar = svg("rect", {
        x: L + n * slot + slot * 0.15, y: H - B - h, width: slot * 0.7, height: h,
        "class": p.seconds > 1 ? "bar slow" : "bar", "data-seconds": p.seconds,
        "data-version": p.version
      });
      bar.appendChild(svg("title", {}, p.environment + " v" + p.version + ": "
        + duration(p.seconds)));
      chart.appendChild(bar);
    });
    var last = points[points.length - 1];
    chart.appendChild(svg("text", {x: W - 4, y: H - 6, "text-anchor": "end"},
      "latest: v" + last.version + " in " + duration(last.seconds)));
  }

  function rateChart(series) {
    var chart = document.getElementById("rate-chart");
    chart.textContent = "";
    var W = 600, H = 150, L = 46, B = 22, T = 10;
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    chart.appendChild(svg("line", {x1: L, y1: H - B, x2: W, y2: H - B, "class": "axis"}));
    if (series.length < 2) {
      chart.appendChild(svg("text", {x: L + 8, y: H / 2}, "collecting samples\\u2026"));
      return;
    }
    var top = 1;
    series.forEach(function (s) { top = Math.max(top, s[1], s[2]); });
    var t0 = series[0][0], span = Math.max(1, series[series.length - 1][0] - t0);
    function line(index, cls) {
      var pts = series.map(function (s) {
        var x = L + (W - L) * (s[0] - t0) / span;
        var y = H - B - (H - B - T) * s[index] / top;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      chart.appendChild(svg("polyline", {points: pts.join(" "), "class": cls}));
    }
    line(1, "line");
    line(2, "line errors");
    chart.appendChild(svg("text", {x: 2, y: T + 8}, fixed(top, top < 10 ? 1 : 0) + "/s"));
    chart.appendChild(svg("text", {x: 2, y: H - B}, "0"));
    chart.appendChild(svg("text", {x: L, y: H - 6}, duration(span) + " ago"));
    chart.appendChild(svg("text", {x: W - 4, y: H - 6, "text-anchor": "end"}, "now"));
  }

  function table(id, rows, empty) {
    var tbody = document.querySelector("#" + id + " tbody");
    tbody.textContent = "";
    if (!rows.length) {
      var tr = el("tr");
      var td = el("td", empty, "empty");
      td.colSpan = 9;
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (c) {
        var td = el("td", c.text, c.num ? "num" : "");
        if (c.code) { td.textContent = ""; td.appendChild(el("code", c.text)); }
        if (c.value !== undefined) { td.setAttribute("data-value", String(c.value)); }
        if (c.key) { td.setAttribute("data-key", c.key); }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  function render(d) {
    var state = fig("state");
    state.textContent = d.state;
    state.className = "badge " + d.state.replace(" ", "-");
    set("edge", d.edge);
    set("pid", String(d.pid), d.pid);
    set("uptime", duration(d.uptimeSeconds));
    set("updated", clock(d.generatedAt), d.generatedAt);
    if (d.problems.length) { banner(d.problems.join("; "), true); } else { banner(""); }

    set("environments", count(d.environments.length), d.environments.length);
    set("keys", count(d.keys) + " keys", d.keys);
    set("streams", count(d.streams), d.streams);
    set("streams-sdk", count(d.streamsByKind.sdk), d.streamsByKind.sdk);
    set("streams-ofrep", count(d.streamsByKind.ofrep), d.streamsByKind.ofrep);

    var t = d.traffic;
    set("rps", fixed(t.perSecond.requests, 1), t.perSecond.requests);
    set("eps", fixed(t.perSecond.clientErrors + t.perSecond.serverErrors, 1),
      t.perSecond.clientErrors + t.perSecond.serverErrors);
    set("requests", count(t.requests), t.requests);
    set("client-errors", count(t.clientErrors), t.clientErrors);
    set("server-errors", count(t.serverErrors), t.serverErrors);
    set("rate-window", fixed(t.perSecond.seconds, 0) + " s", t.perSecond.seconds);

    var s = d.syncd;
    set("snapshot-age", duration(s.snapshotAgeSeconds), s.snapshotAgeSeconds);
    set("reconciled", s.reconciledAt ? clock(s.reconciledAt).slice(11) : "never",
      s.reconciledAt);
    set("syncd-heartbeat", s.heartbeat ? "alive" : "silent", s.heartbeat);
    set("complete-sync", s.completeSync ? "complete sync in Redis" : "no complete sync yet",
      s.completeSync);
    set("redis", "redis " + d.redis, d.redis);

    var p = d.propagation;
    var last = p.recent.length ? p.recent[p.recent.length - 1].seconds : null;
    set("propagation-last", duration(last), last === null ? "" : last);
    set("propagation-mean", duration(p.meanSeconds), p.meanSeconds === null ? "" : p.meanSeconds);
    set("propagation-count", count(p.count), p.count);

    lagChart(p.recent);
    rateChart(t.series);
    table("routes", t.routes.map(function (r) {
      return [
        {text: r.route, code: true, key: r.route},
        {text: count(r.requests), num: true, value: r.requests},
        {text: count(r.clientErrors), num: true, value: r.clientErrors},
        {text: count(r.serverErrors), num: true, value: r.serverErrors}
      ];
    }), "no client requests yet");
    table("environments", d.environments.map(function (e) {
      return [
        {text: e.id, code: true, key: e.id},
        {text: e.flagSetId || "\\u2014"},
        {text: "v" + e.version, num: true, value: e.version},
        {text: count(e.flags), num: true, value: e.flags},
        {text: duration(e.ageSeconds) + " ago", num: true, value: e.ageSeconds},
        {text: duration(d.generatedAt - e.loadedAt) + " ago", num: true},
        {text: count(e.streams.sdk), num: true, value: e.streams.sdk},
        {text: count(e.streams.ofrep), num: true, value: e.streams.ofrep}
      ];
    }), "no environment loaded");
    refreshes += 1;
    body.setAttribute("data-refreshes", String(refreshes));
    body.setAttribute("data-generated-at", String(d.generatedAt));
  }

  function refresh() {
    return fetch("status/data", {
      cache: "no-store", credentials: "same-origin", headers: {"Accept": "application/json"}
    }).then(function (r) {
      if (r.status === 401) { window.location.reload(); return null; }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    }).then(function (d) {
      if (d) { render(d); }
    }).catch(function (e) {
      banner("No answer from this proxy (" + e.message + "); retrying every second.");
    });
  }
  function loop() { refresh().then(function () { window.setTimeout(loop, 1000); }); }
  loop();
})();
"""

_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{style}</style>
</head>
"""

_BODY = """<body>
<header>
  <h1>Crivline Edge &middot; <span data-figure="edge">&hellip;</span></h1>
  <span class="badge" data-figure="state">loading</span>
  <span class="meta">pid <span data-figure="pid">&hellip;</span> &middot;
    up <span data-figure="uptime">&hellip;</span> &middot;
    <span data-figure="redis">redis &hellip;</span> &middot;
    updated <span data-figure="updated">&hellip;</span></span>
  <form method="post"><button name="logout" value="1">Sign out</button></form>
</header>
<main>
<div id="banner" class="banner" hidden></div>
<div class="cards">
  <div class="card"><div class="label">Environments</div>
    <div class="value" data-figure="environments">&hellip;</div>
    <div class="sub" data-figure="keys"></div></div>
  <div class="card"><div class="label">Open streams</div>
    <div class="value" data-figure="streams">&hellip;</div>
    <div class="sub">sdk <span data-figure="streams-sdk"></span> &middot;
      ofrep <span data-figure="streams-ofrep"></span></div></div>
  <div class="card"><div class="label">Requests / s</div>
    <div class="value" data-figure="rps">&hellip;</div>
    <div class="sub"><span data-figure="requests"></span> since start</div></div>
  <div class="card"><div class="label">Errors / s</div>
    <div class="value" data-figure="eps">&hellip;</div>
    <div class="sub">4xx <span data-figure="client-errors"></span> &middot;
      5xx <span data-figure="server-errors"></span></div></div>
  <div class="card"><div class="label">Snapshot age</div>
    <div class="value" data-figure="snapshot-age">&hellip;</div>
    <div class="sub">since syncd last found Redis = Postgres</div></div>
  <div class="card"><div class="label">syncd</div>
    <div class="value" data-figure="syncd-heartbeat">&hellip;</div>
    <div class="sub">reconciled at <span data-figure="reconciled"></span>;
      <span data-figure="complete-sync"></span></div></div>
  <div class="card"><div class="label">Propagation</div>
    <div class="value" data-figure="propagation-last">&hellip;</div>
    <div class="sub">latest change; mean <span data-figure="propagation-mean"></span> over
      <span data-figure="propagation-count"></span> changes</div></div>
</div>
<div class="charts">
<section><h2>Change propagation</h2>
  <p class="note">Recent changes, from commit in Postgres to this proxy serving them.</p>
  <svg id="lag-chart" role="img" aria-label="propagation latency per change"></svg>
</section>
<section><h2>Client traffic</h2>
  <p class="note">Requests / s (blue) and errors / s (red), averaged over
    <span data-figure="rate-window"></span> for the cards; operator endpoints excluded.</p>
  <svg id="rate-chart" role="img" aria-label="request and error rate"></svg>
</section>
</div>
<section><h2>Environments</h2>
<table id="environments"><thead><tr><th>environment</th><th>flag set</th>
  <th class="num">version</th><th class="num">flags</th><th class="num">changed</th>
  <th class="num">loaded</th><th class="num">sdk streams</th>
  <th class="num">ofrep streams</th></tr></thead><tbody></tbody></table>
</section>
<section><h2>Requests by route</h2>
<table id="routes"><thead><tr><th>route</th><th class="num">requests</th>
  <th class="num">4xx</th><th class="num">5xx</th></tr></thead><tbody></tbody></table>
</section>
<footer>Figures of this proxy process, refreshed every second from
  <code>status/data</code>; Prometheus has them at <code>/metrics</code>.</footer>
</main>
<script>{script}</script>
</body>
</html>
"""

_LOGIN_BODY = """<body>
<form class="login" method="post">
  <h1>Crivline Edge status</h1>
  <p>This page needs the operator token (<code>CRIVLINE_OPERATOR_TOKEN</code>).</p>
  <p class="error">{message}</p>
  <label for="token">Operator token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" autofocus>
  <button type="submit">Sign in</button>
</form>
</body>
</html>
"""

PAGE_HTML = _HEAD.replace("{title}", "Crivline Edge status").replace("{style}", STYLE) + (
    _BODY.replace("{script}", SCRIPT)
)
LOGIN_HTML = (
    _HEAD.replace("{title}", "Crivline Edge status: sign in").replace("{style}", STYLE)
    + _LOGIN_BODY
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def content_security_policy() -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256(SCRIPT)}",
            f"style-src {_sha256(STYLE)}",
            "connect-src 'self'",
            "img-src data:",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )
