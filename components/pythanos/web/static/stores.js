// The stores page: GET /api/v1/stores -> one table per component type (sidecar, store, query, ...).
"use strict";

// Thanos reports "no bound" as math.MinInt64 / math.MaxInt64 milliseconds.
function formatBound(ms) {
  if (typeof ms !== "number" || !isFinite(ms)) return "-";
  if (ms <= -9e15) return "-∞";
  if (ms >= 9e15) return "+∞";
  return formatTime(ms);
}

function labelSets(sets) {
  if (!sets || !sets.length) return h("span", {class: "muted"}, "none");
  return h("div", {class: "labelsets"}, sets.map((set) =>
    h("div", {class: "labelset"}, Object.keys(set).sort().map((k) =>
      h("span", {class: "chip"}, `${k}="${set[k]}"`)))));
}

function storeRow(s) {
  const up = !s.lastError;
  const checked = Date.parse(s.lastCheck);
  return h("tr", {class: up ? "up" : "down", "data-name": s.name},
    h("td", {class: "endpoint"}, s.name),
    h("td", {}, h("span", {class: "badge " + (up ? "ok" : "bad")}, up ? "UP" : "DOWN")),
    h("td", {}, labelSets(s.labelSets)),
    h("td", {class: "time"}, formatBound(s.minTime)),
    h("td", {class: "time"}, formatBound(s.maxTime)),
    h("td", {class: "time", title: s.lastCheck || ""}, isNaN(checked) ? "-" : ago(checked)),
    h("td", {class: "lasterror"}, s.lastError || ""));
}

async function load() {
  const box = document.getElementById("stores");
  try {
    const body = await api("stores");
    showAlert(document.getElementById("error"), []);
    const groups = Object.entries(body.data || {}).filter(([, list]) => list && list.length)
      .sort(([a], [b]) => a.localeCompare(b));
    if (!groups.length) {
      box.replaceChildren(h("p", {class: "muted"}, "No stores configured."));
      return;
    }
    box.replaceChildren(...groups.map(([type, list]) => {
      const sorted = [...list].sort((a, b) => a.name.localeCompare(b.name));
      const healthy = sorted.filter((s) => !s.lastError).length;
      return h("section", {class: "store-group", "data-type": type},
        h("h2", {}, type, h("span", {class: "count"}, `${healthy}/${sorted.length} up`)),
        h("table", {class: "data stores"},
          h("thead", {}, h("tr", {}, ["Endpoint", "Status", "Announced label sets", "Min time (UTC)",
                                      "Max time (UTC)", "Last check", "Last error"].map((c) => h("th", {}, c)))),
          h("tbody", {}, sorted.map(storeRow))));
    }));
  } catch (e) {
    showAlert(document.getElementById("error"), `Error loading stores: ${e.message}`);
    box.replaceChildren();
  }
}

document.getElementById("refresh").addEventListener("click", load);
load();
