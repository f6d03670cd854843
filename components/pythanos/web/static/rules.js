// The rules and alerts pages: GET /api/v1/rules -> one table per rule group; GET /api/v1/alerts ->
// the active alerts, grouped by alerting rule. The ruler writes {"Alerts": [...]}, the querier
// {"alerts": [...]}: both are read.
"use strict";

const STATE_ORDER = {firing: 0, pending: 1, inactive: 2, unknown: 3};
const STATE_CLASS = {firing: "bad", pending: "warn", inactive: "ok", unknown: ""};

function chips(obj) {
  const keys = Object.keys(obj || {}).sort();
  if (!keys.length) return h("span", {class: "muted"}, "none");
  return h("div", {class: "labelset"}, keys.map((k) => h("span", {class: "chip"}, `${k}="${obj[k]}"`)));
}

function stateBadge(state) {
  return h("span", {class: "badge " + (STATE_CLASS[state] || "")}, (state || "unknown").toUpperCase());
}

function healthBadge(health) {
  return h("span", {class: "badge " + (health === "ok" ? "ok" : health === "err" ? "bad" : "")},
           (health || "unknown").toUpperCase());
}

function evaluated(ts) {
  const t = Date.parse(ts);
  return isNaN(t) || t <= 0 ? "never" : ago(t);
}

function graphLink(expr) {
  // the ruler links to --alert.query-url (a querier), the querier to its own graph page
  const base = typeof window.QUERY_URL === "string" ? window.QUERY_URL : PREFIX;
  return h("a", {class: "series", href: `${base}/graph?g0.expr=${encodeURIComponent(expr)}&g0.tab=1`}, expr);
}

function ruleRow(r) {
  const kind = r.type === "alerting" ? "alert" : "record";
  const details = [h("div", {}, h("strong", {}, `${kind}: `), r.name)];
  details.push(h("div", {}, "expr: ", graphLink(r.query)));
  if (r.type === "alerting") {
    if (r.duration) details.push(h("div", {}, `for: ${formatDuration(r.duration * 1000)}`));
    if (r.keepFiringFor) details.push(h("div", {}, `keep_firing_for: ${formatDuration(r.keepFiringFor * 1000)}`));
  }
  details.push(h("div", {}, "labels: ", chips(r.labels)));
  if (r.type === "alerting" && Object.keys(r.annotations || {}).length)
    details.push(h("div", {}, "annotations: ", chips(r.annotations)));
  return h("tr", {"data-rule": r.name},
    h("td", {}, details),
    h("td", {}, r.type === "alerting" ? stateBadge(r.state) : ""),
    h("td", {}, healthBadge(r.health)),
    h("td", {class: "lasterror"}, r.lastError || ""),
    h("td", {class: "time", title: r.lastEvaluation || ""}, evaluated(r.lastEvaluation)),
    h("td", {class: "num"}, `${(r.evaluationTime * 1000).toFixed(3)} ms`));
}

function groupSection(g) {
  return h("section", {class: "rule-group", "data-group": g.name},
    h("h2", {}, g.name, h("span", {class: "count"},
      `${g.file} · every ${formatDuration(g.interval * 1000)} · ${g.partialResponseStrategy || ""} · ` +
      `last ${evaluated(g.lastEvaluation)} (${(g.evaluationTime * 1000).toFixed(3)} ms)`)),
    h("table", {class: "data rules"},
      h("thead", {}, h("tr", {}, ["Rule", "State", "Health", "Error", "Last evaluation", "Evaluation time"]
        .map((c) => h("th", {}, c)))),
      h("tbody", {}, (g.rules || []).map(ruleRow))));
}

function alertRow(a) {
  const at = Date.parse(a.activeAt);
  return h("tr", {class: a.state},
    h("td", {}, chips(a.labels)),
    h("td", {}, stateBadge(a.state)),
    h("td", {class: "time", title: a.activeAt || ""}, isNaN(at) ? "-" : formatTime(at)),
    h("td", {class: "num"}, a.value),
    h("td", {}, chips(a.annotations)));
}

async function loadRules(box) {
  const body = await api("rules");
  const groups = (body.data && body.data.groups) || [];
  box.replaceChildren(...(groups.length ? groups.map(groupSection) : [h("p", {class: "muted"}, "No rules loaded.")]));
}

async function loadAlerts(box) {
  const [rulesBody, alertsBody] = await Promise.all([api("rules", {type: "alert"}), api("alerts")]);
  const active = (alertsBody.data && (alertsBody.data.Alerts || alertsBody.data.alerts)) || [];
  const rules = ((rulesBody.data && rulesBody.data.groups) || []).flatMap((g) => g.rules || []);
  rules.sort((a, b) => (STATE_ORDER[a.state] - STATE_ORDER[b.state]) || a.name.localeCompare(b.name));
  const counts = {firing: 0, pending: 0, inactive: 0};
  for (const r of rules) counts[r.state] = (counts[r.state] || 0) + 1;
  const summary = h("p", {class: "summary"}, `${counts.firing} firing, ${counts.pending} pending, ` +
    `${counts.inactive} inactive alerting rules; ${active.length} active alerts.`);
  const sections = rules.map((r) => {
    const mine = active.filter((a) => a.labels && a.labels.alertname === r.name);
    return h("section", {class: "alert-rule " + r.state, "data-rule": r.name},
      h("h2", {}, r.name, " ", stateBadge(r.state), h("span", {class: "count"}, `${mine.length} active`)),
      h("div", {}, "expr: ", graphLink(r.query)),
      mine.length ? h("table", {class: "data alerts"},
        h("thead", {}, h("tr", {}, ["Labels", "State", "Active since (UTC)", "Value", "Annotations"]
          .map((c) => h("th", {}, c)))),
        h("tbody", {}, mine.map(alertRow))) : "");
  });
  box.replaceChildren(summary, ...(sections.length ? sections : [h("p", {class: "muted"}, "No alerting rules.")]));
}

async function load() {
  const box = document.querySelector("[data-page]");
  const errBox = document.getElementById("error");
  try {
    await (box.dataset.page === "rules" ? loadRules(box) : loadAlerts(box));
    showAlert(errBox, []);
  } catch (e) {
    showAlert(errBox, `Error loading ${box.dataset.page}: ${e.message}`);
    box.replaceChildren();
  }
}

document.getElementById("refresh").addEventListener("click", load);
load();
