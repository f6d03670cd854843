// The graph page: expression box with autocomplete, graph and table tabs, Thanos' query options.
// URL state as in Thanos' classic UI: ?g0.expr=..&g0.tab=0|1&g0.range_input=1h&g0.end_input=..
// &g0.step_input=..&g0.moment_input=..&g0.dedup=0|1&g0.partial_response=0|1 (tab 0 = graph, 1 = table).
"use strict";

const $ = (id) => document.getElementById(id);

const FUNCTIONS = [
  "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp",
  "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "day_of_month", "day_of_week",
  "days_in_month", "delta", "deriv", "exp", "floor", "group", "histogram_quantile", "holt_winters", "hour",
  "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
  "max", "max_over_time", "min", "min_over_time", "minute", "month", "predict_linear", "present_over_time",
  "quantile", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
  "stddev", "stddev_over_time", "stdvar", "stdvar_over_time", "sum", "sum_over_time", "time", "timestamp",
  "topk", "vector", "year",
];
const COLORS = ["#1f77b4", "#e6550d", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#ad494a", "#3182bd", "#756bb1"];
const RANGE_STEPS = ["1m", "5m", "15m", "30m", "1h", "2h", "6h", "12h", "1d", "2d", "1w", "2w", "4w", "8w",
                     "1y"].map(parseDuration);
const MAX_TABLE_ROWS = 10000;

// ---------------------------------------------------------------------------------------- state

const state = {expr: "", tab: 0, range: "1h", end: "", step: "", moment: "", dedup: true, partial: false};

function readURL() {
  const q = new URLSearchParams(location.search);
  const get = (k) => q.get("g0." + k);
  if (get("expr") !== null) state.expr = get("expr");
  if (get("tab") !== null) state.tab = get("tab") === "1" ? 1 : 0;
  if (get("range_input")) state.range = get("range_input");
  if (get("end_input")) state.end = get("end_input");
  if (get("step_input")) state.step = get("step_input");
  if (get("moment_input")) state.moment = get("moment_input");
  if (get("dedup") !== null) state.dedup = get("dedup") !== "0" && get("dedup") !== "false";
  if (get("partial_response") !== null) {
    state.partial = get("partial_response") === "1" || get("partial_response") === "true";
  }
}

function writeURL() {
  const q = new URLSearchParams();
  q.set("g0.expr", state.expr);
  q.set("g0.tab", String(state.tab));
  q.set("g0.range_input", state.range);
  if (state.end) q.set("g0.end_input", state.end);
  if (state.step) q.set("g0.step_input", state.step);
  if (state.moment) q.set("g0.moment_input", state.moment);
  q.set("g0.dedup", state.dedup ? "1" : "0");
  q.set("g0.partial_response", state.partial ? "1" : "0");
  history.replaceState(null, "", location.pathname + "?" + q);
}

function readControls() {
  state.expr = $("expr").value.trim();
  state.range = $("range").value.trim() || "1h";
  state.end = $("end").value.trim();
  state.step = $("step").value.trim();
  state.moment = $("time").value.trim();
  state.dedup = $("dedup").checked;
  state.partial = $("partial").checked;
}

function fillControls() {
  $("expr").value = state.expr;
  $("range").value = state.range;
  $("end").value = state.end;
  $("step").value = state.step;
  $("time").value = state.moment;
  $("dedup").checked = state.dedup;
  $("partial").checked = state.partial;
  autoGrow();
  showTab();
}

function showTab() {
  $("tab-graph").classList.toggle("active", state.tab === 0);
  $("tab-table").classList.toggle("active", state.tab === 1);
  $("tab-graph").setAttribute("aria-selected", String(state.tab === 0));
  $("tab-table").setAttribute("aria-selected", String(state.tab === 1));
  $("pane-graph").hidden = state.tab !== 0;
  $("pane-table").hidden = state.tab !== 1;
  if (state.tab === 0) plot.draw();
}

// -------------------------------------------------------------------------------------- queries

let inflight = null;

async function execute() {
  readControls();
  writeURL();
  suggest.close();
  if (inflight) inflight.abort();
  showAlert($("error"), []);
  showAlert($("warnings"), []);
  if (!state.expr) {
    $("stats").textContent = "";
    return;
  }
  const controller = new AbortController();
  inflight = controller;
  const common = {query: state.expr, dedup: String(state.dedup), partial_response: String(state.partial)};
  const started = performance.now();
  document.body.classList.add("loading");
  $("execute").disabled = true;
  try {
    let body;
    if (state.tab === 0) {
      const range = parseDuration(state.range);
      if (isNaN(range) || range <= 0) throw new APIError(`invalid range "${state.range}"`, "bad_input");
      const end = state.end ? parseTime(state.end) : Date.now();
      if (isNaN(end)) throw new APIError(`invalid end time "${state.end}"`, "bad_input");
      const step = state.step ? parseFloat(state.step) : Math.max(Math.floor(range / 1000 / 250), 1);
      if (!(step > 0)) throw new APIError(`invalid resolution "${state.step}"`, "bad_input");
      const start = end - range;
      body = await api("query_range", {...common, start: start / 1000, end: end / 1000, step}, controller.signal);
      renderGraph(body.data, start, end, step * 1000);
    } else {
      const time = state.moment ? parseTime(state.moment) : Date.now();
      if (isNaN(time)) throw new APIError(`invalid evaluation time "${state.moment}"`, "bad_input");
      body = await api("query", {...common, time: time / 1000}, controller.signal);
      renderTable(body.data);
    }
    showAlert($("warnings"), (body.warnings || []).map((w) => "Warning: " + w));
    const scalarish = body.data.resultType === "scalar" || body.data.resultType === "string";
    const n = scalarish ? 1 : (body.data.result || []).length;
    $("stats").textContent = `Load time: ${Math.round(performance.now() - started)}ms · Result series: ${n}`;
  } catch (e) {
    if (e.name === "AbortError") return;
    showAlert($("error"), `Error executing query: ${e.errorType ? e.errorType + ": " : ""}${e.message}`);
    $("stats").textContent = "";
    if (state.tab === 0) renderGraph({resultType: "matrix", result: []}, 0, 0, 0);
    else renderTable({resultType: "vector", result: []}, true);
  } finally {
    if (inflight === controller) {
      inflight = null;
      document.body.classList.remove("loading");
      $("execute").disabled = false;
    }
  }
}

// ---------------------------------------------------------------------------------------- table

function renderTable(data, quiet) {
  const tbody = $("table").tBodies[0];
  tbody.replaceChildren();
  const rows = [];
  switch (data.resultType) {
    case "vector":
      for (const s of data.result || []) rows.push([seriesName(s.metric), s.value[1]]);
      break;
    case "matrix":
      for (const s of data.result || []) {
        rows.push([seriesName(s.metric), (s.values || []).map(([t, v]) => `${v} @${t}`)]);
      }
      break;
    case "scalar":
      rows.push(["scalar", data.result[1]]);
      break;
    case "string":
      rows.push(["string", data.result[1]]);
      break;
  }
  if (!rows.length) {
    if (!quiet) tbody.append(h("tr", {}, h("td", {colspan: 2, class: "muted"}, "Empty query result")));
    return;
  }
  for (const [name, value] of rows.slice(0, MAX_TABLE_ROWS)) {
    const cell = Array.isArray(value) ? value.flatMap((v, i) => (i ? [h("br"), v] : [v])) : [value];
    tbody.append(h("tr", {}, h("td", {class: "series"}, name), h("td", {class: "num"}, cell)));
  }
  if (rows.length > MAX_TABLE_ROWS) {
    tbody.append(h("tr", {}, h("td", {colspan: 2, class: "muted"},
      `Showing the first ${MAX_TABLE_ROWS} of ${rows.length} series`)));
  }
}

// ---------------------------------------------------------------------------------------- graph

function renderGraph(data, start, end, stepMs) {
  let series = [];
  if (data.resultType === "matrix") {
    series = (data.result || []).map((s, i) => ({
      name: seriesName(s.metric),
      color: COLORS[i % COLORS.length],
      visible: true,
      points: (s.values || []).map(([t, v]) => [t * 1000, parseFloat(v)]),
    }));
  } else if (data.resultType === "scalar") {
    series = [{name: "scalar", color: COLORS[0], visible: true, points: [[data.result[0] * 1000, +data.result[1]]]}];
  }
  plot.set(series, start, end, stepMs);
  const legend = $("legend");
  legend.replaceChildren();
  for (const s of series) {
    const item = h("li", {title: "Click to hide/show this series"},
      h("span", {class: "swatch", style: `background:${s.color}`}), s.name);
    item.addEventListener("click", () => {
      s.visible = !s.visible;
      item.classList.toggle("off", !s.visible);
      plot.draw();
    });
    legend.append(item);
  }
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                    172800, 604800, 1209600, 2592000, 7776000, 31536000].map((s) => s * 1000);

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

class Plot {
  constructor(box, canvas, tooltip) {
    this.box = box;
    this.canvas = canvas;
    this.tooltip = tooltip;
    this.series = [];
    this.start = this.end = this.stepMs = 0;
    this.hover = null;
    canvas.addEventListener("mousemove", (e) => this.onMove(e));
    canvas.addEventListener("mouseleave", () => { this.hover = null; this.tooltip.hidden = true; this.draw(); });
    new ResizeObserver(() => this.draw()).observe(box);
  }

  set(series, start, end, stepMs) {
    Object.assign(this, {series, start, end, stepMs, hover: null});
    this.tooltip.hidden = true;
    this.draw();
  }

  // Pixel geometry and scales for the current data; null when there is nothing to draw.
  layout(ctx, width, height) {
    const visible = this.series.filter((s) => s.visible);
    let lo = Infinity, hi = -Infinity;
    for (const s of visible) for (const [, v] of s.points) if (isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo === Infinity) { lo = 0; hi = 1; }
    if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
    const yStep = niceStep(hi - lo, Math.max(2, Math.floor(height / 50)));
    lo = Math.floor(lo / yStep) * yStep;
    hi = Math.ceil(hi / yStep) * yStep;
    const yTicks = [];
    for (let v = lo; v <= hi + yStep / 2; v += yStep) yTicks.push(Math.abs(v) < yStep / 1e6 ? 0 : v);
    ctx.font = "12px system-ui, sans-serif";
    const labelW = Math.max(...yTicks.map((v) => ctx.measureText(formatValue(v)).width));
    const m = {left: Math.ceil(labelW) + 14, right: 16, top: 12, bottom: 26};
    const w = width - m.left - m.right, hgt = height - m.top - m.bottom;
    const x = (t) => m.left + ((t - this.start) / (this.end - this.start || 1)) * w;
    const y = (v) => m.top + (1 - (v - lo) / (hi - lo)) * hgt;
    return {m, w, hgt, x, y, yTicks, visible};
  }

  draw() {
    const rect = this.box.getBoundingClientRect();
    if (!rect.width) return;
    const dpr = window.devicePixelRatio || 1;
    const width = rect.width, height = 360;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    this.canvas.style.width = width + "px";
    this.canvas.style.height = height + "px";
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const L = this.geo = this.layout(ctx, width, height);
    const {m, w, hgt, x, y} = L;

    // grid and value axis
    ctx.strokeStyle = "#e5e7eb";
    ctx.fillStyle = "#4b5563";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of L.yTicks) {
      const py = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(m.left, py); ctx.lineTo(m.left + w, py); ctx.stroke();
      ctx.fillText(formatValue(v), m.left - 6, py);
    }
    // time axis (UTC)
    if (this.end > this.start) {
      const span = this.end - this.start;
      const tStep = TIME_STEPS.find((s) => span / s <= w / 110) || TIME_STEPS[TIME_STEPS.length - 1];
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (let t = Math.ceil(this.start / tStep) * tStep; t <= this.end; t += tStep) {
        const px = Math.round(x(t)) + 0.5;
        ctx.beginPath(); ctx.moveTo(px, m.top); ctx.lineTo(px, m.top + hgt); ctx.stroke();
        const full = formatTime(t);
        const label = tStep >= 86400e3 ? full.slice(5, 10) : span > 86400e3 ? full.slice(5, 16)
          : tStep < 60e3 ? full.slice(11, 19) : full.slice(11, 16);
        ctx.fillText(label, px, m.top + hgt + 6);
      }
    }
    ctx.strokeStyle = "#9ca3af";
    ctx.strokeRect(m.left + 0.5, m.top + 0.5, w, hgt);

    if (!this.series.length) {
      ctx.fillStyle = "#6b7280";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.font = "14px system-ui, sans-serif";
      ctx.fillText(this.end > this.start ? "No datapoints found." : "No data queried yet.", m.left + w / 2, m.top + hgt / 2);
      return;
    }

    // one line per series; a gap in the samples breaks the line
    ctx.save();
    ctx.beginPath(); ctx.rect(m.left, m.top, w, hgt); ctx.clip();
    const gap = this.stepMs * 1.5;
    for (const s of L.visible) {
      const highlighted = this.hover && this.hover.series === s;
      ctx.strokeStyle = ctx.fillStyle = s.color;
      ctx.lineWidth = highlighted ? 2.5 : 1.5;
      ctx.beginPath();
      let prev = null;
      for (let i = 0; i < s.points.length; i++) {
        const [t, v] = s.points[i];
        if (!isFinite(v)) { prev = null; continue; }
        const connected = prev !== null && t - prev <= gap;
        if (connected) ctx.lineTo(x(t), y(v)); else ctx.moveTo(x(t), y(v));
        const next = s.points[i + 1];
        if (!connected && !(next && isFinite(next[1]) && next[0] - t <= gap)) {
          ctx.fillRect(x(t) - 1.5, y(v) - 1.5, 3, 3);  // an isolated sample: a dot
        }
        prev = t;
      }
      ctx.stroke();
    }
    // hover: crosshair and the nearest sample
    if (this.hover) {
      const {t, v, series} = this.hover;
      ctx.strokeStyle = "rgba(55,65,81,.5)";
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(Math.round(x(t)) + 0.5, m.top); ctx.lineTo(Math.round(x(t)) + 0.5, m.top + hgt); ctx.stroke();
      ctx.fillStyle = series.color;
      ctx.beginPath(); ctx.arc(x(t), y(v), 4, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.restore();
  }

  onMove(e) {
    const L = this.geo;
    if (!L || !this.series.length || this.end <= this.start) return;
    const r = this.canvas.getBoundingClientRect();
    const mx = e.clientX - r.left, my = e.clientY - r.top;
    const t = this.start + ((mx - L.m.left) / L.w) * (this.end - this.start);
    let best = null;
    for (const s of L.visible) {
      const p = nearest(s.points, t);
      if (!p || !isFinite(p[1]) || Math.abs(p[0] - t) > Math.max(this.stepMs, 1)) continue;
      const d = Math.abs(L.y(p[1]) - my);
      if (!best || d < best.d) best = {d, t: p[0], v: p[1], series: s};
    }
    this.hover = best;
    this.draw();
    if (!best) { this.tooltip.hidden = true; return; }
    this.tooltip.replaceChildren(
      h("div", {class: "tt-time"}, formatTime(best.t) + " UTC"),
      h("div", {class: "tt-series"}, h("span", {class: "swatch", style: `background:${best.series.color}`}),
        best.series.name),
      h("div", {class: "tt-value"}, "Value: ", h("strong", {}, String(best.v))));
    this.tooltip.hidden = false;
    const tw = this.tooltip.offsetWidth;
    const px = L.x(best.t), py = L.y(best.v);
    this.tooltip.style.left = (px + 14 + tw > r.width ? Math.max(0, px - 14 - tw) : px + 14) + "px";
    this.tooltip.style.top = Math.max(0, py - 10) + "px";
  }
}

// The point of a time-sorted series nearest to t (binary search).
function nearest(points, t) {
  let lo = 0, hi = points.length - 1;
  if (hi < 0) return null;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < t) lo = mid + 1; else hi = mid;
  }
  if (lo > 0 && Math.abs(points[lo - 1][0] - t) <= Math.abs(points[lo][0] - t)) lo -= 1;
  return points[lo];
}

// ---------------------------------------------------------------------------------- autocomplete

class Suggest {
  constructor(input, list) {
    this.input = input;
    this.list = list;
    this.metrics = [];
    this.labels = [];
    this.items = [];
    this.selected = 0;
    input.addEventListener("input", () => this.update());
    input.addEventListener("click", () => this.update());
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
    input.addEventListener("keydown", (e) => this.onKey(e));
  }

  async load() {
    const [names, labels] = await Promise.allSettled([api("label/__name__/values"), api("labels")]);
    if (names.status === "fulfilled") this.metrics = names.value.data || [];
    if (labels.status === "fulfilled") this.labels = (labels.value.data || []).filter((l) => l !== "__name__");
    if (document.activeElement === this.input) this.update();
  }

  get open() { return !this.list.hidden; }

  close() {
    this.list.hidden = true;
    this.items = [];
  }

  // The word under the cursor and what may complete it there.
  context() {
    const text = this.input.value, pos = this.input.selectionStart;
    const before = text.slice(0, pos);
    const word = before.match(/[a-zA-Z_:][a-zA-Z0-9_:]*$/);
    if (!word) return null;
    const after = text.slice(pos).match(/^[a-zA-Z0-9_:]*/)[0];
    const head = before.slice(0, before.length - word[0].length).replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""');
    const count = (s, c) => s.split(c).length - 1;
    if (count(head, "[") > count(head, "]")) return null;  // inside a range selector
    let kinds;
    if (count(head, "{") > count(head, "}")) {
      // in a selector: only label names, right after "{" or ","
      if (!/[{,]\s*$/.test(head)) return null;
      kinds = ["label"];
    } else if (/\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*$/.test(head)) {
      kinds = ["label"];
    } else {
      kinds = ["metric", "function"];
    }
    return {word: word[0], from: pos - word[0].length, to: pos + after.length, kinds};
  }

  update() {
    const ctx = this.context();
    if (!ctx) return this.close();
    const w = ctx.word.toLowerCase();
    const pools = {metric: this.metrics, function: FUNCTIONS, label: this.labels};
    const prefix = [], infix = [];
    for (const kind of ctx.kinds) {
      for (const name of pools[kind]) {
        const i = name.toLowerCase().indexOf(w);
        if (i === 0) prefix.push({name, kind}); else if (i > 0) infix.push({name, kind});
      }
    }
    const items = prefix.concat(infix).slice(0, 12);
    if (!items.length || (items.length === 1 && items[0].name === ctx.word)) return this.close();
    this.ctx = ctx;
    this.items = items;
    this.selected = 0;
    this.render();
  }

  render() {
    const w = this.ctx.word;
    this.list.replaceChildren(...this.items.map((it, i) => {
      const at = it.name.toLowerCase().indexOf(w.toLowerCase());
      const li = h("li", {role: "option", class: i === this.selected ? "selected" : "", "data-value": it.name,
                          "aria-selected": String(i === this.selected)},
        h("span", {class: "name"}, it.name.slice(0, at), h("b", {}, it.name.slice(at, at + w.length)),
          it.name.slice(at + w.length)),
        h("span", {class: "kind"}, it.kind));
      li.addEventListener("mousedown", (e) => { e.preventDefault(); this.accept(i); });
      return li;
    }));
    this.list.hidden = false;
    const sel = this.list.children[this.selected];
    if (sel) sel.scrollIntoView({block: "nearest"});
  }

  accept(i) {
    const it = this.items[i];
    if (!it) return;
    const {from, to} = this.ctx;
    const insert = it.name + (it.kind === "function" ? "(" : "");
    const v = this.input.value;
    this.input.value = v.slice(0, from) + insert + v.slice(to);
    const pos = from + insert.length;
    this.input.setSelectionRange(pos, pos);
    this.input.focus();
    this.close();
    autoGrow();
  }

  onKey(e) {
    if (this.open) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const n = this.items.length;
        this.selected = (this.selected + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
        this.render();
        return;
      }
      if (e.key === "Enter" || e.key === "Tab") {
        e.preventDefault();
        this.accept(this.selected);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        this.close();
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      execute();
    }
  }
}

// ---------------------------------------------------------------------------------------- wiring

function autoGrow() {
  const el = $("expr");
  el.rows = Math.min(Math.max(el.value.split("\n").length, 1), 10);
}

function stepRange(direction) {
  const current = parseDuration($("range").value) || parseDuration("1h");
  let next;
  if (direction > 0) next = RANGE_STEPS.find((r) => r > current) || RANGE_STEPS[RANGE_STEPS.length - 1];
  else next = [...RANGE_STEPS].reverse().find((r) => r < current) || RANGE_STEPS[0];
  $("range").value = formatDuration(next);
  execute();
}

const plot = new Plot($("graph"), $("canvas"), $("tooltip"));
const suggest = new Suggest($("expr"), $("suggest"));

$("execute").addEventListener("click", execute);
$("expr").addEventListener("input", autoGrow);
for (const id of ["tab-graph", "tab-table"]) {
  $(id).addEventListener("click", (e) => {
    state.tab = +e.currentTarget.dataset.tab;
    showTab();
    execute();
  });
}
for (const id of ["dedup", "partial"]) $(id).addEventListener("change", execute);
for (const id of ["range", "end", "step", "time"]) {
  $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") execute(); });
  $(id).addEventListener("change", execute);
}
$("range-less").addEventListener("click", () => stepRange(-1));
$("range-more").addEventListener("click", () => stepRange(+1));

readURL();
fillControls();
suggest.load();
if (state.expr) execute(); else plot.draw();
