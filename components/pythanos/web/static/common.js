// Helpers shared by the graph and stores pages: DOM building, the API client, formatting.
"use strict";

const PREFIX = window.PATH_PREFIX || "";

// h("div", {class: "x", onclick: f}, "text", child, ...) -> element. Text is always textContent.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class APIError extends Error {
  constructor(message, errorType) {
    super(message);
    this.errorType = errorType || "";
  }
}

// GET {prefix}/api/v1/{path}?params; resolves to the whole JSON body ({status, data, warnings}),
// rejects with an APIError carrying Prometheus' errorType/error.
async function api(path, params, signal) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) qs.append(k, String(one));
  }
  const url = PREFIX + "/api/v1/" + path + (qs.toString() ? "?" + qs : "");
  let resp;
  try {
    resp = await fetch(url, {headers: {Accept: "application/json"}, signal});
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new APIError("cannot reach the querier: " + e.message, "connection");
  }
  let body = null;
  const text = await resp.text();
  try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
  if (!body || typeof body !== "object") {
    throw new APIError(`HTTP ${resp.status} ${resp.statusText}: ${text.slice(0, 300)}`, "http");
  }
  if (body.status !== "success") {
    throw new APIError(body.error || `HTTP ${resp.status}`, body.errorType || "error");
  }
  return body;
}

function showAlert(el, lines) {
  el.replaceChildren();
  const list = (Array.isArray(lines) ? lines : [lines]).filter(Boolean);
  for (const line of list) el.append(h("div", {}, line));
  el.hidden = list.length === 0;
}

// `name{a="b", c="d"}`; `{}` when there is nothing at all.
function seriesName(metric) {
  metric = metric || {};
  const name = metric.__name__ || "";
  const labels = Object.keys(metric).filter((k) => k !== "__name__").sort()
    .map((k) => `${k}=${JSON.stringify(metric[k])}`);
  if (!labels.length) return name || "{}";
  return `${name}{${labels.join(", ")}}`;
}

const pad2 = (n) => String(n).padStart(2, "0");

// Unix milliseconds -> "2024-05-01 12:34:56" (UTC).
function formatTime(ms, withSeconds = true) {
  const d = new Date(ms);
  if (isNaN(d.getTime())) return String(ms);
  const s = `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ` +
            `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
  return withSeconds ? `${s}:${pad2(d.getUTCSeconds())}` : s;
}

// "YYYY-MM-DD HH:MM[:SS]" (UTC), RFC3339 or unix seconds -> unix milliseconds; NaN when unparseable.
function parseTime(text) {
  text = (text || "").trim();
  if (!text) return NaN;
  if (/^\d+(\.\d+)?$/.test(text)) return parseFloat(text) * 1000;
  const m = text.match(/^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d))?)?$/);
  if (m) return Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
  return Date.parse(text);
}

const DURATION_UNITS = {ms: 1, s: 1000, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3, y: 365 * 86400e3};

// Prometheus duration ("1h30m", "15s", "2d") -> milliseconds; NaN when invalid.
function parseDuration(text) {
  text = (text || "").trim();
  if (!/^(\d+(ms|s|m|h|d|w|y))+$/.test(text)) return NaN;
  let total = 0;
  for (const [, n, unit] of text.matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)) total += +n * DURATION_UNITS[unit];
  return total;
}

// Milliseconds -> the shortest Prometheus duration ("90m" -> "1h30m").
function formatDuration(ms) {
  if (!ms) return "0s";
  let out = "";
  for (const unit of ["y", "w", "d", "h", "m", "s"]) {
    const n = Math.floor(ms / DURATION_UNITS[unit]);
    if (n > 0) { out += n + unit; ms -= n * DURATION_UNITS[unit]; }
  }
  return out || "0s";
}

// 3700000 -> "1h1m ago"-style text for how long ago a timestamp was.
function ago(ms) {
  const secs = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return secs < 1 ? "just now" : formatDuration(secs * 1000) + " ago";
}

// A sample value for axes and tooltips: few digits, SI suffix for big numbers.
function formatValue(v) {
  if (!isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a === 0) return "0";
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [f, s] of units) if (a >= f) return trimNum(v / f) + s;
  if (a < 1e-3) return v.toExponential(2);
  return trimNum(v);
}

function trimNum(v) {
  return String(parseFloat(v.toPrecision(4)));
}
