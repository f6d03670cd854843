// The block viewer: GET /api/v1/blocks -> one row per external-label set, blocks as spans on one time axis.
//
// Within a row, blocks are stacked in lanes by resolution (raw, 5m, 1h) and compaction level; blocks of one
// lane never overlap (an overlapping block opens a new lane). URL state: find-overlapping, filter-compaction,
// compaction-level, ulid (search), min-time / max-time (the time window, also asked of the server).
"use strict";

const CONFIG = window.BLOCKS_CONFIG || {view: "global", views: ["global"], adminDisabled: false, label: ""};
const RESOLUTIONS = {0: "raw", 300000: "5m", 3600000: "1h"};
const TICK_STEPS = [60e3, 5 * 60e3, 15 * 60e3, 30 * 60e3, 3600e3, 2 * 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3,
  86400e3, 2 * 86400e3, 7 * 86400e3, 14 * 86400e3, 30 * 86400e3, 91 * 86400e3, 182 * 86400e3, 365 * 86400e3];
const TICK_PX = 110;  // room for one axis label

const state = {
  data: null,            // the API's data object
  byUlid: new Map(),
  overlapping: new Set(), // ULIDs of blocks overlapping another block of their group
  selected: null,        // ULID
  search: "",
  findOverlapping: false,
  filterCompaction: false,
  level: 0,
  minTime: NaN,          // the window asked for in the URL (ms), NaN when none
  maxTime: NaN,
  downloadURL: null,
  markAction: "",
};

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------- URL state

function truthy(v) {
  return v === "1" || v === "true";
}

function readURL() {
  const q = new URLSearchParams(location.search);
  state.findOverlapping = truthy(q.get("find-overlapping"));
  state.filterCompaction = truthy(q.get("filter-compaction"));
  const level = parseInt(q.get("compaction-level") || "0", 10);
  state.level = isNaN(level) || level < 0 ? 0 : level;
  state.search = (q.get("ulid") || "").trim();
  state.minTime = parseInt(q.get("min-time") || "", 10);
  state.maxTime = parseInt(q.get("max-time") || "", 10);
}

function writeURL() {
  const q = new URLSearchParams(location.search);
  const set = (k, v) => (v === null ? q.delete(k) : q.set(k, v));
  set("find-overlapping", state.findOverlapping ? "1" : null);
  set("filter-compaction", state.filterCompaction ? "1" : null);
  set("compaction-level", state.filterCompaction ? String(state.level) : null);
  set("ulid", state.search || null);
  const qs = q.toString();
  history.replaceState(null, "", location.pathname + (qs ? "?" + qs : ""));
}

// ----------------------------------------------------------------------------------- formatting

function resolutionName(ms) {
  return RESOLUTIONS[ms] || formatDuration(ms);
}

function humanizeBytes(n) {
  if (typeof n !== "number" || !isFinite(n)) return "unknown";
  if (n === 0) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  const i = Math.min(Math.floor(Math.log(n) / Math.log(1024)), units.length - 1);
  return (i === 0 ? String(Math.round(n)) : (n / Math.pow(1024, i)).toFixed(2)) + " " + units[i];
}

function labelText(labels) {
  const keys = Object.keys(labels || {}).sort();
  return "{" + keys.map((k) => `${k}=${JSON.stringify(labels[k])}`).join(", ") + "}";
}

function timeText(ms) {
  return formatTime(ms) + " UTC";
}

// Sizes from thanos.files: index, chunks/*, total (null when the meta lists no files).
function sizes(b) {
  const files = (b.thanos && b.thanos.files) || [];
  if (!files.length) return null;
  let index = 0, chunks = 0, total = 0;
  for (const f of files) {
    const n = f.size_bytes || 0;
    total += n;
    if (f.rel_path === "index") index += n;
    else if (f.rel_path.startsWith("chunks/")) chunks += n;
  }
  return {index, chunks, total};
}

const level = (b) => (b.compaction && b.compaction.level) || 0;
const resolution = (b) => (b.thanos && b.thanos.downsample && b.thanos.downsample.resolution) || 0;
const labelsOf = (b) => (b.thanos && b.thanos.labels) || {};

// --------------------------------------------------------------------------------------- layout

// The row ("pool") a block belongs to: the value of the configured label, else its whole label set.
function poolTitle(b) {
  const labels = labelsOf(b);
  if (CONFIG.label && labels[CONFIG.label] !== undefined && labels[CONFIG.label] !== "") return labels[CONFIG.label];
  return labelText(labels);
}

// Blocks overlapping another block of their compaction group (same labels and resolution), except a block
// and the blocks it was compacted from (its sources hold theirs): those are expected until they are deleted.
function findOverlaps(blocks) {
  const groups = new Map();
  for (const b of blocks) {
    const key = labelText(labelsOf(b)) + "@" + resolution(b);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(b);
  }
  const out = new Set();
  const sourcesOf = new Map();
  const sources = (b) => {
    if (!sourcesOf.has(b.ulid)) sourcesOf.set(b.ulid, new Set((b.compaction && b.compaction.sources) || [b.ulid]));
    return sourcesOf.get(b.ulid);
  };
  const within = (a, b) => [...sources(a)].every((s) => sources(b).has(s));
  for (const group of groups.values()) {
    group.sort((a, b) => a.minTime - b.minTime);
    let active = [];
    for (const b of group) {
      active = active.filter((a) => a.maxTime > b.minTime);
      for (const a of active) {
        if (within(a, b) || within(b, a)) continue;
        out.add(a.ulid);
        out.add(b.ulid);
      }
      active.push(b);
    }
  }
  return out;
}

// Lanes of one pool: by resolution, then level; greedy first fit so that a lane's blocks do not overlap.
function lanes(blocks) {
  const byKey = new Map();
  for (const b of [...blocks].sort((a, b) => resolution(a) - resolution(b) || level(a) - level(b) ||
                                              a.minTime - b.minTime || (a.ulid < b.ulid ? -1 : 1))) {
    const key = resolution(b) + "/" + level(b);
    if (!byKey.has(key)) byKey.set(key, {res: resolution(b), level: level(b), rows: []});
    const group = byKey.get(key);
    let row = group.rows.find((r) => r[r.length - 1].maxTime <= b.minTime);
    if (!row) group.rows.push(row = []);
    row.push(b);
  }
  return [...byKey.values()];
}

function visible(b) {
  if (state.filterCompaction && state.level > 0 && level(b) !== state.level) return false;
  if (state.search && !b.ulid.toUpperCase().includes(state.search.toUpperCase())) return false;
  return true;
}

function gridRange(blocks) {
  if (isFinite(state.minTime) && isFinite(state.maxTime) && state.maxTime > state.minTime) {
    return [state.minTime, state.maxTime];
  }
  let lo = Infinity, hi = -Infinity;
  for (const b of blocks) {
    lo = Math.min(lo, b.minTime);
    hi = Math.max(hi, b.maxTime);
  }
  if (!isFinite(lo)) return [0, 1];
  return hi > lo ? [lo, hi] : [lo, lo + 1];
}

// ----------------------------------------------------------------------------------------- draw

function drawAxis(lo, hi) {
  const axis = $("axis");
  const track = h("div", {class: "bv-axis-track"});
  axis.replaceChildren(h("div", {class: "bv-axis-pad"}, "UTC"), track);
  const span = hi - lo;
  const maxTicks = Math.max(2, Math.floor((track.clientWidth || 600) / TICK_PX));
  const step = TICK_STEPS.find((s) => span / s <= maxTicks) || Math.ceil(span / maxTicks);
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) {
    const left = ((t - lo) / span) * 100;
    // a day's first tick shows the date, the others the time of day
    const text = step >= 86400e3 || t % 86400e3 === 0 ? formatTime(t, false).slice(0, 10) : formatTime(t, false).slice(11);
    const shift = left < 6 ? "0" : left > 94 ? "-100%" : "-50%";
    track.append(h("span", {class: "bv-tick", style: `left:${left.toFixed(4)}%;transform:translateX(${shift})`}, text));
  }
}

function blockButton(b, lo, span) {
  const left = ((b.minTime - lo) / span) * 100;
  const width = ((b.maxTime - b.minTime) / span) * 100;
  const cls = ["block", "res-" + resolution(b), "level-" + Math.min(Math.max(level(b), 1), 6)];
  if (state.overlapping.has(b.ulid)) cls.push("overlap");
  if (state.selected === b.ulid) cls.push("selected");
  return h("button", {
    class: cls.join(" "), type: "button", "data-ulid": b.ulid,
    style: `left:${left.toFixed(4)}%;width:${width.toFixed(4)}%`,
    title: `${b.ulid}\n${timeText(b.minTime)} – ${timeText(b.maxTime)}\n` +
           `${resolutionName(resolution(b))}, level ${level(b)}`,
  });
}

function draw() {
  const pools = $("pools");
  const data = state.data;
  if (!data) return;
  const all = data.blocks || [];
  const [lo, hi] = gridRange(all);
  const span = hi - lo;
  drawAxis(lo, hi);
  $("grid").classList.toggle("find-overlapping", state.findOverlapping);

  const byPool = new Map();
  for (const b of all) {
    if (!visible(b)) continue;
    const t = poolTitle(b);
    if (!byPool.has(t)) byPool.set(t, []);
    byPool.get(t).push(b);
  }
  const frag = document.createDocumentFragment();
  let shown = 0, bytes = 0;
  for (const title of [...byPool.keys()].sort()) {
    const blocks = byPool.get(title);
    let poolBytes = 0;
    for (const b of blocks) poolBytes += (sizes(b) || {total: 0}).total;
    bytes += poolBytes;
    shown += blocks.length;
    const laneEls = [];
    for (const group of lanes(blocks)) {
      group.rows.forEach((row, i) => {
        laneEls.push(h("div", {class: "bv-lane", "data-key": `${group.res}/${group.level}`},
          h("span", {class: "bv-lane-tag"}, i === 0 ? `${resolutionName(group.res)} · L${group.level}` : ""),
          h("div", {class: "bv-track"}, row.map((b) => blockButton(b, lo, span)))));
      });
    }
    frag.append(h("div", {class: "bv-pool", "data-title": title},
      h("div", {class: "bv-pool-title", title},
        h("span", {class: "bv-pool-name"}, title),
        h("span", {class: "muted"}, `${blocks.length} block${blocks.length === 1 ? "" : "s"}` +
                                    (poolBytes ? " · " + humanizeBytes(poolBytes) : ""))),
      h("div", {class: "bv-lanes"}, laneEls)));
  }
  pools.replaceChildren();
  if (!all.length) {
    pools.append(h("div", {class: "alert warning"}, "No blocks found."));
  } else if (!shown) {
    pools.append(h("div", {class: "alert warning"}, "No blocks match the search and filters."));
  } else {
    pools.append(frag);
  }
  const overl = [...state.overlapping].filter((u) => state.byUlid.has(u) && visible(state.byUlid.get(u))).length;
  $("summary").textContent = `${shown} of ${all.length} blocks · ${byPool.size} label set` +
    `${byPool.size === 1 ? "" : "s"}` + (bytes ? " · " + humanizeBytes(bytes) : "") +
    (state.findOverlapping ? ` · ${overl} overlapping` : "");
  drawLegend(all);
}

function drawLegend(blocks) {
  const present = [...new Set(blocks.map(resolution))].sort((a, b) => a - b);
  const legend = $("legend");
  legend.replaceChildren();
  for (const r of present) {
    legend.append(h("span", {class: "bv-legend-item"},
      [1, 2, 3, 4].map((l) => h("span", {class: `bv-swatch res-${r} level-${l}`})), resolutionName(r)));
  }
  if (present.length) legend.append(h("span", {class: "muted"}, "darker: higher compaction level"));
}

// -------------------------------------------------------------------------------------- details

function row(field, name, ...value) {
  return h("div", {class: "bv-field", "data-field": field}, h("b", {}, name + ":"), " ", h("span", {}, ...value));
}

function showDetails(ulid) {
  const panel = $("details");
  const b = ulid && state.byUlid.get(ulid);
  state.selected = b ? ulid : null;
  for (const el of document.querySelectorAll(".block.selected")) el.classList.remove("selected");
  if (state.downloadURL) {
    URL.revokeObjectURL(state.downloadURL);
    state.downloadURL = null;
  }
  if (!b) {
    panel.hidden = true;
    panel.replaceChildren();
    return;
  }
  const el = document.querySelector(`.block[data-ulid="${b.ulid}"]`);
  if (el) el.classList.add("selected");
  const sz = sizes(b);
  const dur = b.maxTime - b.minTime;
  const pct = (n) => (sz.total ? ` (${((n / sz.total) * 100).toFixed(2)}%)` : "");
  const labels = labelsOf(b);
  const srcs = (b.compaction && b.compaction.sources) || [];
  state.downloadURL = URL.createObjectURL(new Blob([JSON.stringify(b, null, 2)], {type: "application/json"}));

  const parts = [
    h("div", {class: "bv-details-head"},
      h("span", {id: "detail-ulid", class: "bv-ulid"}, b.ulid),
      h("button", {id: "details-close", class: "bv-close", type: "button", title: "Close", onclick: () => showDetails(null)},
        "×")),
    h("hr"),
    row("start-time", "Start time", timeText(b.minTime)),
    row("end-time", "End time", timeText(b.maxTime)),
    row("duration", "Duration", formatDuration(dur)),
    h("hr"),
    row("series", "Series", String((b.stats && b.stats.numSeries) || 0)),
    row("samples", "Samples", String((b.stats && b.stats.numSamples) || 0)),
    row("chunks", "Chunks", String((b.stats && b.stats.numChunks) || 0)),
    h("hr"),
    sz ? [
      row("total-size", "Total size", h("span", {title: sz.total + " bytes"}, humanizeBytes(sz.total))),
      row("chunk-size", "Chunks", h("span", {title: sz.chunks + " bytes"}, humanizeBytes(sz.chunks) + pct(sz.chunks))),
      row("index-size", "Index", h("span", {title: sz.index + " bytes"}, humanizeBytes(sz.index) + pct(sz.index))),
      row("daily-size", "Daily", dur > 0 ? humanizeBytes(sz.total / (dur / 86400e3)) + " / day" : "-"),
    ] : row("total-size", "Total size", h("span", {class: "muted"}, "unknown (no thanos.files in meta.json)")),
    h("hr"),
    row("resolution", "Resolution", `${resolutionName(resolution(b))} (${resolution(b)} ms)`),
    row("level", "Level", String(level(b))),
    row("source", "Source", (b.thanos && b.thanos.source) || "-"),
    h("hr"),
    h("div", {class: "bv-field", "data-field": "labels"}, h("b", {}, "Labels:"),
      Object.keys(labels).length
        ? h("div", {class: "labelset"}, Object.keys(labels).sort().map((k) => h("span", {class: "chip"},
            `${k}="${labels[k]}"`)))
        : h("span", {class: "muted"}, " none")),
    h("div", {class: "bv-field", "data-field": "sources"}, h("b", {}, `Source blocks (${srcs.length}):`),
      h("ul", {class: "bv-sources"}, srcs.map((s) => h("li", {},
        state.byUlid.has(s) && s !== b.ulid
          ? h("a", {href: "#", "data-ulid": s, onclick: (e) => { e.preventDefault(); showDetails(s); }}, s)
          : h("span", {class: s === b.ulid ? "" : "muted"}, s))))),
    h("hr"),
    h("div", {class: "bv-actions"},
      h("a", {id: "download", class: "btn bv-btn", href: state.downloadURL, download: "meta.json"}, "Download meta.json"),
      CONFIG.adminDisabled ? null : [
        h("button", {id: "mark-deletion", class: "btn", type: "button", onclick: () => openMark("DELETION")},
          "Mark Deletion"),
        h("button", {id: "mark-no-compaction", class: "btn", type: "button", onclick: () => openMark("NO_COMPACTION")},
          "Mark No Compaction"),
      ]),
    h("div", {id: "mark-result", class: "alert", hidden: true}),
  ];
  panel.replaceChildren(...parts.flat().filter(Boolean));
  panel.hidden = false;
}

function openMark(action) {
  state.markAction = action;
  $("mark-title").textContent = action === "DELETION" ? "Mark Deletion" : "Mark No Compaction";
  $("mark-block").textContent = state.selected;
  $("mark-detail").value = "";
  $("mark-dialog").showModal();
  $("mark-detail").focus();
}

async function submitMark() {
  const ulid = state.selected, action = state.markAction;
  const detail = $("mark-detail").value;
  $("mark-dialog").close();
  const result = $("mark-result");
  const body = new URLSearchParams({id: ulid, action});
  if (detail) body.set("detail", detail);
  let message, ok = false;
  try {
    const resp = await fetch(PREFIX + "/api/v1/blocks/mark", {method: "POST", body});
    ok = resp.ok;  // 204, no body
    const json = ok ? null : await resp.json().catch(() => null);
    message = ok ? `${ulid} marked ${action === "DELETION" ? "for deletion" : "for no compaction"}.`
                 : `${(json && json.errorType) || "HTTP " + resp.status}: ${(json && json.error) || resp.statusText}`;
  } catch (e) {
    message = "cannot reach the server: " + e.message;
  }
  if (result && state.selected === ulid) {
    result.className = "alert " + (ok ? "success" : "error");
    result.textContent = message;
    result.hidden = false;
  }
}

// ----------------------------------------------------------------------------------------- load

let inflight = null;

async function load() {
  if (inflight) inflight.abort();
  inflight = new AbortController();
  const params = {};
  if (CONFIG.view === "loaded") params.view = "loaded";
  if (isFinite(state.minTime)) params.minTime = state.minTime;
  if (isFinite(state.maxTime)) params.maxTime = state.maxTime;
  document.body.classList.add("loading");
  try {
    const body = await api("blocks", params, inflight.signal);
    const data = body.data || {};
    data.blocks = data.blocks || [];
    state.data = data;
    state.byUlid = new Map(data.blocks.map((b) => [b.ulid, b]));
    state.overlapping = findOverlaps(data.blocks);
    showAlert($("error"), data.err ? [`The last refresh of the block list failed (showing the previous one): ` +
                                      String(data.err)] : []);
    const at = Date.parse(data.refreshedAt);
    $("refreshed").textContent = !data.refreshedAt || data.refreshedAt.startsWith("0001-")
      ? "not refreshed yet" : "refreshed " + ago(at);
    $("refreshed").title = data.refreshedAt || "";
    draw();
    if (state.selected) showDetails(state.byUlid.has(state.selected) ? state.selected : null);
  } catch (e) {
    if (e.name === "AbortError") return;
    showAlert($("error"), [(e.errorType ? e.errorType + ": " : "") + e.message]);
    if (!state.data) $("pools").replaceChildren();
  } finally {
    document.body.classList.remove("loading");
  }
}

// ----------------------------------------------------------------------------------------- wire

function init() {
  readURL();
  const loadedNav = $("nav-loaded");
  loadedNav.hidden = !CONFIG.views.includes("loaded");
  if (!loadedNav.hidden) $("nav-global").textContent = "Global Blocks";
  (CONFIG.view === "loaded" ? loadedNav : $("nav-global")).classList.add("active");
  $("title").textContent = CONFIG.view === "loaded" ? "Loaded blocks" : "Blocks";

  $("find-overlapping").checked = state.findOverlapping;
  $("filter-compaction").checked = state.filterCompaction;
  $("compaction-level").value = String(state.level);
  $("search").value = state.search;

  $("find-overlapping").addEventListener("change", (e) => {
    state.findOverlapping = e.target.checked;
    writeURL();
    draw();
  });
  $("filter-compaction").addEventListener("change", (e) => {
    state.filterCompaction = e.target.checked;
    const n = parseInt($("compaction-level").value, 10);
    state.level = isNaN(n) || n < 0 ? 0 : n;
    writeURL();
    draw();
  });
  $("compaction-level").addEventListener("input", (e) => {
    const n = parseInt(e.target.value, 10);
    state.level = isNaN(n) || n < 0 ? 0 : n;
    if (state.filterCompaction) {
      writeURL();
      draw();
    }
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.search = $("search").value.trim();
    writeURL();
    draw();
  });
  $("search").addEventListener("search", () => {  // the field's clear button
    if ($("search").value === "" && state.search) {
      state.search = "";
      writeURL();
      draw();
    }
  });
  $("pools").addEventListener("click", (e) => {
    const btn = e.target.closest(".block");
    if (btn) showDetails(btn.dataset.ulid);
  });
  $("reload").addEventListener("click", load);
  $("mark-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitMark();
  });
  $("mark-cancel").addEventListener("click", () => $("mark-dialog").close());
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("mark-dialog").open && state.selected) showDetails(null);
  });
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending || !state.data) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  });
  load();
}

init();
