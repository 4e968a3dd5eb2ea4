// Arbiter dashboard: loads history from the JSON endpoints, then follows the server's event
// stream (/api/events) to stay live. No framework: small DOM helpers and SVG drawn here.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const WINDOW_MS = 5 * 60 * 1000;
const MAX_DECISIONS = 200;
const MAX_FEED = 60;

const state = {
  status: null, series: [], decisions: [], selectedDecision: null,
  chains: {}, runs: [], selectedRun: null, letters: [], connected: false, brokers: [],
};

// -- helpers --------------------------------------------------------------------------------------

function withToken(path) {
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path, options) {
  const response = await fetch(withToken(path), options);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok && !("ok" in data)) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) if (value !== null && value !== undefined) el.setAttribute(key, value);
  for (const child of children.flat()) if (child !== null && child !== undefined) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function $(id) { return document.getElementById(id); }
function fmt(n, digits = 1) { return n === null || n === undefined || Number.isNaN(n) ? "–" : Number(n).toFixed(digits); }
function ms(n) { return n === null || n === undefined ? "–" : n >= 60000 ? `${Math.round(n / 60000)} min` : n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Number(n).toFixed(n < 10 ? 2 : 0)} ms`; }
function clock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso).slice(11, 19) : d.toLocaleTimeString([], { hour12: false });
}
function pill(text) { return text ? h("span", { class: `pill ${text}` }, text) : null; }

// -- tabs -----------------------------------------------------------------------------------------

function showTab() {
  const name = (location.hash || "#overview").slice(1).split("/")[0] || "overview";
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== `tab-${name}`;
  for (const link of document.querySelectorAll(".tabs a")) link.classList.toggle("active", link.dataset.tab === name);
  if (name === "overview") drawCharts();
}

// -- status: header, services, circuits, snapshot -------------------------------------------------

function setLink(connected, error) {
  state.connected = connected;
  $("link").className = "link " + (connected ? "up" : "down");
  $("link-text").textContent = connected ? "live" : `broker unreachable${error ? ": " + error.slice(0, 80) : ""}`;
}

function renderStatus() {
  const st = state.status;
  if (!st) return;
  const up = st.uptimeSeconds !== undefined ? `up ${Math.round(st.uptimeSeconds)}s` : "";
  $("broker").textContent = `broker pid ${st.pid} · ${up} · ${(st.endpoints || {}).frontend || ""}`;
  $("kpi-workers").textContent = st.workers ?? "–";
  const circuits = st.circuits || {};
  const tbody = $("services").tBodies[0];
  const rows = Object.entries(st.services || {}).sort(([a], [b]) => (a.startsWith("arbiter.") - b.startsWith("arbiter.")) || a.localeCompare(b));
  tbody.replaceChildren(...rows.map(([name, svc]) => {
    const circuit = circuits[name];
    return h("tr", { class: name.startsWith("arbiter.") ? "internal" : null, "data-service": name },
      h("td", {}, name), h("td", { class: "num" }, svc.workers), h("td", { class: "num" }, svc.queued),
      h("td", { class: "num" }, svc.inflight),
      h("td", {}, circuit ? h("span", { class: `badge ${circuit.state}` }, circuit.state) : ""));
  }));
  if (!rows.length) tbody.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "no services yet")));
  $("circuits").replaceChildren(...Object.entries(circuits).sort().map(([name, c]) => {
    const extra = c.state === "open" && c.retryInSeconds !== undefined ? ` · retry in ${Math.round(c.retryInSeconds)}s` : "";
    return h("span", { class: `badge ${c.state}`, "data-plugin": name, "data-state": c.state,
      title: `${c.recentFailures} recent failure(s) of ${c.threshold}` }, `${name}: ${c.state}${extra}`);
  }));
  renderSnapshot(st.snapshot || {}, st.counters || {});
}

function renderSnapshot(snap, counters) {
  const pairs = [
    ["fingerprint", String(snap.fingerprint || "").slice(0, 12)], ["loaded", clock(snap.loadedAt)],
    ["plugins", snap.plugins], ["rules", snap.rules], ["reloads", counters.reloads || 0],
  ];
  $("snapshot").replaceChildren(...pairs.flatMap(([k, v]) => [h("span", { class: "k" }, k), h("span", { class: "mono" }, v ?? "–")]));
  const banner = $("reload");
  const error = snap.lastError;
  if (!error && !counters.reloads) { banner.hidden = true; return; }
  banner.hidden = false;
  if (snap.lastReloadOk === false) {
    banner.className = "banner bad";
    banner.replaceChildren(h("strong", {}, `Last reload refused at ${clock(error.at)}`), " — still serving the snapshot below.",
      h("ul", {}, (error.errors || []).map((e) => h("li", {}, e))));
  } else {
    banner.className = "banner ok";
    banner.replaceChildren(h("strong", {}, "Last reload ok"), ` — snapshot ${String(snap.fingerprint || "").slice(0, 12)} loaded ${clock(snap.loadedAt)}`,
      error ? h("div", { class: "small muted" }, `an earlier reload was refused at ${clock(error.at)}`) : null);
  }
}

// Several brokers: a row each (shown from two on), whether it answers, its snapshot, its load.
function renderBrokers() {
  const rows = state.brokers || [];
  $("brokers-card").hidden = rows.length < 2;
  $("brokers").tBodies[0].replaceChildren(...rows.map((b) => {
    const word = b.up === null || b.up === undefined ? "connecting" : b.up ? "up" : "down";
    return h("tr", { "data-broker": b.name, "data-up": String(Boolean(b.up)), title: b.error || b.frontend },
      h("td", {}, b.name), h("td", {}, h("span", { class: `badge ${b.up ? "closed" : b.up === false ? "open" : ""}` }, word)),
      h("td", { class: "num" }, b.up ? b.pid ?? "–" : "–"), h("td", { class: "mono" }, b.up ? String(b.fingerprint || "").slice(0, 12) : "–"),
      h("td", { class: "num" }, b.up ? b.workers ?? "–" : "–"), h("td", { class: "num" }, b.up ? b.pending ?? "–" : "–"));
  }));
}

// -- charts ---------------------------------------------------------------------------------------

function addPoint(point) {
  if (!point) return;
  state.series.push(point);
  const since = Date.now() - WINDOW_MS;
  while (state.series.length && state.series[0].t < since) state.series.shift();
  const last = point;
  $("kpi-rate").textContent = fmt(last.requests);
  $("kpi-errors").textContent = fmt(last.errors);
  $("kpi-p99").textContent = last.p99 === undefined ? "–" : ms(last.p99);
}

function lineChart(container, keys, colors, opts = {}) {
  const width = Math.max(container.clientWidth || 300, 200), height = opts.height || (window.innerWidth <= 640 ? 120 : 150);
  const pad = { l: 38, r: 8, t: 8, b: 18 };
  // the last five minutes, or less while there is less history (never under one minute)
  const now = Date.now();
  const first = state.series.length ? state.series[0].t : now;
  const span = Math.min(WINDOW_MS, Math.max(60000, now - first));
  const from = now - span;
  const points = state.series.filter((p) => p.t >= from);
  const values = points.flatMap((p) => keys.map((k) => p[k]).filter((v) => typeof v === "number"));
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  const x = (t) => pad.l + ((t - from) / span) * (width - pad.l - pad.r);
  const top = Math.max(1e-9, ...values) * 1.15 || 1;
  const y = (v) => height - pad.b - (v / top) * (height - pad.t - pad.b);
  svg.append(s("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: height - pad.b, y2: height - pad.b }));
  for (const frac of [0.5, 1]) {
    const v = (top / 1.15) * frac;
    svg.append(s("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), "stroke-dasharray": "3 3" }));
    svg.append(s("text", { x: pad.l - 4, y: y(v) + 3, "text-anchor": "end" }, v >= 100 ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2)));
  }
  const step = span > 120000 ? 60000 : span > 60000 ? 30000 : 15000;
  for (let ago = Math.floor(span / step) * step; ago >= 0; ago -= step) {
    const label = ago === 0 ? "now" : ago % 60000 === 0 ? `-${ago / 60000}m` : `-${ago / 1000}s`;
    svg.append(s("text", { x: x(now - ago), y: height - 4, "text-anchor": ago === 0 ? "end" : ago >= span - 1 ? "start" : "middle" }, label));
  }
  if (!values.length) {
    svg.append(s("text", { class: "none", x: width / 2, y: height / 2, "text-anchor": "middle" }, opts.empty || "waiting for data"));
  }
  keys.forEach((key, i) => {
    let d = "";
    let pen = false;
    for (const p of points) {
      if (typeof p[key] !== "number") { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`;
      pen = true;
    }
    if (d) svg.append(s("path", { d, fill: "none", stroke: colors[i], "stroke-width": 1.8, "vector-effect": "non-scaling-stroke" }));
  });
  container.replaceChildren(svg);
}

function drawCharts() {
  if ($("tab-overview").hidden) return;
  const css = getComputedStyle(document.documentElement);
  const c = (name) => css.getPropertyValue(name).trim();
  lineChart($("chart-rate"), ["requests", "replies"], [c("--c1"), c("--c2")]);
  const hasLatency = state.series.some((p) => "p50" in p);
  lineChart($("chart-latency"), ["p50", "p90", "p99"], [c("--c1"), c("--c2"), c("--c3")],
    { empty: hasLatency ? "no requests in the window" : "the broker reports no latency yet" });
  lineChart($("chart-errors"), ["errors"], [c("--c4")]);
}

// -- the event feed -------------------------------------------------------------------------------

function feedLine(kind, data) {
  switch (kind) {
    case "circuit": return `circuit ${data.plugin}: ${data.previous || "?"} → ${data.state}${data.reason ? " (" + data.reason + ")" : ""}`;
    case "dead-letter": return `dead letter: ${data.service} (${data.reason})`;
    case "reload": return data.ok ? `reload ok ${String(data.fingerprint || "").slice(0, 12)}` : `reload refused: ${(data.errors || []).length} error(s)`;
    case "chain": return `chain ${data.chain || ""} ${data.event || "ended"}${data.step ? " " + data.step : ""}: ${data.stepStatus || data.status || ""}`;
    case "system": return `${data.event || data.topic}${data.service ? " " + data.service : ""}`;
    default: return null;
  }
}

function addFeed(kind, data) {
  const line = feedLine(kind, data);
  if (!line) return;
  const text = data.broker ? `[${data.broker}] ${line}` : line;
  const list = $("feed");
  list.prepend(h("li", { "data-kind": kind, "data-broker": data.broker || null }, h("time", {}, clock(data.at) || clock(new Date().toISOString())), h("span", {}, text)));
  while (list.children.length > MAX_FEED) list.lastChild.remove();
}

// -- decisions ------------------------------------------------------------------------------------

function decisionItem(d) {
  return h("li", { "data-request-id": d.requestId, "data-broker": d.broker || null,
    class: d.requestId === state.selectedDecision ? "selected" : null, onclick: () => selectDecision(d.requestId) },
    h("span", { class: "text" }, d.userInput || "(no text)"),
    h("span", {}, pill(d.primaryPlugin || "no route")),
    h("span", { class: "meta" }, h("span", { class: "mono" }, clock(d.at)), h("span", { class: "mono" }, d.requestId),
      d.status ? pill(d.status) : null, d.cached ? h("span", {}, "cached") : null, d.broker ? h("span", {}, `via ${d.broker}`) : null,
      d.durationMs ? h("span", {}, ms(d.durationMs)) : null));
}

function renderDecisions() {
  const list = $("decisions");
  list.replaceChildren(...state.decisions.map(decisionItem));
  if (!state.decisions.length) list.append(h("li", { class: "muted" }, "no decisions yet: route a request through the broker"));
}

function addDecision(d) {
  state.decisions = [d, ...state.decisions.filter((x) => x.requestId !== d.requestId)].slice(0, MAX_DECISIONS);
  const list = $("decisions");
  if (list.firstChild && !list.firstChild.dataset.requestId) list.firstChild.remove();
  list.querySelector(`li[data-request-id="${CSS.escape(d.requestId)}"]`)?.remove();
  const item = decisionItem(d);
  item.classList.add("fresh");
  list.prepend(item);
  while (list.children.length > MAX_DECISIONS) list.lastChild.remove();
}

async function selectDecision(requestId, tries = 4) {
  state.selectedDecision = requestId;
  for (const li of $("decisions").children) li.classList.toggle("selected", li.dataset.requestId === requestId);
  if (location.hash !== `#decisions/${requestId}`) history.replaceState(null, "", withHash(`#decisions/${requestId}`));
  const panel = $("decision-detail");
  panel.replaceChildren(h("p", { class: "muted" }, "loading…"));
  try {
    const data = await api(`/api/decisions/${encodeURIComponent(requestId)}`);
    if (state.selectedDecision === requestId) panel.replaceChildren(...renderExplanation(data));
  } catch (err) {
    // a decision just announced may not be stored yet: the recorder writes in batches
    if (tries > 0 && state.selectedDecision === requestId) { setTimeout(() => selectDecision(requestId, tries - 1), 700); return; }
    panel.replaceChildren(h("p", { class: "error" }, err.message));
  }
}

function withHash(hash) { return location.pathname + location.search + hash; }

// A typed rule action of the explain JSON ({action, plugin, weight, ...}) as the .arb text asking for it.
function actionText(a) {
  if (typeof a === "string") return a;
  if (a.action === "prefer") return `${a.weight < 0 ? "avoid" : "prefer"} ${a.plugin} by ${Math.abs(a.weight)}`;
  if (a.action === "collaborate") return `collaborate ${a.plugin}${a.domain ? " on " + a.domain : ""}${(a.after || []).length ? " after " + a.after.join(", ") : ""}${a.parallel ? " parallel" : ""}`;
  if (a.action === "strategy") return `strategy ${a.strategy}`;
  if (a.action === "assert" || a.action === "retract") return `${a.action} ${a.fact}`;
  return `${a.action} ${a.plugin || ""}`.trim();
}

function renderExplanation({ recorded: d, explained: now, explainError }) {
  const cls = d.classification || {};
  const evidence = cls.evidence || {};
  const out = [h("h3", {}, `“${d.userInput || ""}”`),
    h("div", { class: "muted small" }, `${d.requestId} · ${d.origin || "?"} · ${d.createdAt}`)];
  const facts = [];
  for (const [domain, info] of Object.entries(evidence.domains || {})) facts.push(["domain", `${domain} ${fmt(info.score, 2)} — from: ${(info.evidence || []).join(", ")}`]);
  for (const [context, words] of Object.entries(evidence.contexts || {})) facts.push(["context", `${context} — from: ${(words || []).join(", ")}`]);
  for (const [pattern, words] of Object.entries(evidence.patterns || {})) facts.push(["pattern", `${pattern} — from: ${[].concat(words || []).join(", ")}`]);
  facts.push(["complexity", `${cls.complexity || "?"}${evidence.complexity ? " (" + evidence.complexity + ")" : ""}`]);
  if (cls.urgency !== undefined) facts.push(["urgency", `${cls.urgency}/10`]);
  out.push(h("div", { class: "section" }, h("h2", {}, "Facts"), h("div", { class: "facts" }, facts.flatMap(([k, v]) => [h("span", { class: "k" }, k), h("span", {}, v)]))));

  const rules = (now && now.trace && now.trace.rulesFired) || [];
  const rulesBox = h("div", { class: "section", id: "rules-fired" }, h("h2", {}, "Rules fired ", h("span", { class: "small muted" }, "(the rules as they are now)")));
  if (explainError) rulesBox.append(h("p", { class: "error" }, `arbiter.explain: ${explainError}`));
  else if (!rules.length) rulesBox.append(h("p", { class: "muted" }, "no rule fired"));
  rules.forEach((r, i) => rulesBox.append(h("div", { class: "rule" },
    h("div", {}, h("strong", {}, `${i + 1}. ${r.rule}`), h("span", { class: "muted small" }, `  priority ${r.priority}`)),
    h("div", { class: "src" }, r.source), r.reason ? h("div", {}, `because: ${r.reason}`) : null,
    (r.actions || []).length ? h("div", { class: "mono small" }, "→ " + r.actions.map(actionText).join(", ")) : null)));
  out.push(rulesBox);

  const scores = d.capabilityScores || [];
  const best = Math.max(1, ...scores.map((x) => x.score || 0));
  out.push(h("div", { class: "section" }, h("h2", {}, "Scores"), h("div", { class: "scroll" }, h("table", { class: "table scores" },
    h("tbody", {}, scores.map((x) => h("tr", {},
      h("td", {}, x.plugin), h("td", { class: "num" }, fmt(x.score, 1)),
      h("td", {}, x.eligible === false ? h("span", { class: "error small" }, `not eligible: ${x.reason || ""}`)
        : h("div", { class: "bar", style: `width:${Math.round(((x.score || 0) / best) * 100)}%` })))))))));

  const plan = d.collaborationPlan;
  const decision = [["primary", d.primaryPlugin || "no route"], ["fallbacks", (d.fallbackPlugins || []).join(", ") || "(none)"],
    ["strategy", d.executionStrategy || "–"], ["estimate", `${d.estimatedDuration ? ms(d.estimatedDuration) : "–"}, cost ${d.estimatedCost ?? "–"}`]];
  const planBox = h("div", { class: "section" }, h("h2", {}, "Decision and plan"),
    h("div", { class: "facts" }, decision.flatMap(([k, v]) => [h("span", { class: "k" }, k), h("span", {}, v)])));
  if (plan && plan.phases) planBox.append(h("ol", { class: "steps" }, plan.phases.map((p) => h("li", {}, `${p.plugin} ${p.command || ""}`))));
  const team = d.agentTeam || {};
  if ((team.specialists || []).length) planBox.append(h("div", { class: "small muted" }, "agents: " + team.specialists.map((a) => a.id).join(", ")));
  out.push(planBox);

  const outcome = d.outcome || {};
  if (outcome.steps) {
    out.push(h("div", { class: "section" }, h("h2", {}, "Dispatch ", pill(outcome.status)),
      h("ol", { class: "steps" }, outcome.steps.map((st) => h("li", {}, `${st.plugin} ${st.command || ""}: `, pill(st.outcome), st.ms !== undefined ? ` ${ms(st.ms)}` : "", st.detail ? h("div", { class: "small muted" }, st.detail) : null)))));
  }
  return out;
}

// -- chains ---------------------------------------------------------------------------------------

function runItem(run) {
  const done = run.steps.filter((st) => st.what !== "compensation" && ["completed", "skipped"].includes(st.status)).length;
  const planned = state.chains[run.chain]?.nodes.filter((n) => n.kind === "step").length ?? 0;
  const total = Math.max(run.steps.filter((st) => st.what !== "compensation").length, run.what === "plan" ? 0 : planned);
  return h("li", { "data-run-id": run.runId, class: run.runId === state.selectedRun ? "selected" : null, onclick: () => selectRun(run.runId) },
    h("span", { class: "text" }, run.chain || "?"), h("span", {}, pill(run.status)),
    h("span", { class: "meta" }, h("span", { class: "mono" }, clock(run.at)), h("span", { class: "mono" }, run.runId), h("span", {}, `${done}/${total} steps`)));
}

function renderRuns() {
  const list = $("runs");
  list.replaceChildren(...state.runs.map(runItem));
  if (!state.runs.length) list.append(h("li", { class: "muted" }, "no chain runs yet: arbiter chain run NAME"));
  renderRunDetail();
}

function onChainEvent(e) {
  const runId = e.runId || e.taskId;
  if (!runId) return;
  let run = state.runs.find((r) => r.runId === runId);
  if (!run) {
    run = { runId, chain: e.chain, status: "running", at: e.at, steps: [] };
    state.runs.unshift(run);
    if (!state.selectedRun) state.selectedRun = runId;
  }
  if (e.status) run.status = e.status;
  if (e.step) {
    const what = e.what || "step";
    let step = run.steps.find((st) => st.name === e.step && (st.what || "step") === what);
    if (!step) { step = { name: e.step, what }; run.steps.push(step); }
    step.status = e.stepStatus || step.status;
    step.plugin = e.plugin || step.plugin;
    step.error = e.error || null;
  } else if (e.error) run.error = e.error;
  renderRuns();
}

function selectRun(runId) {
  state.selectedRun = runId;
  history.replaceState(null, "", withHash(`#chains/${runId}`));
  renderRuns();
}

function renderRunDetail() {
  const panel = $("run-detail");
  const run = state.runs.find((r) => r.runId === state.selectedRun);
  if (!run) return;
  const graph = state.chains[run.chain];
  const parts = [h("h3", {}, `${run.chain} `, pill(run.status)), h("div", { class: "muted small" }, `${run.runId} · started ${clock(run.at)}${graph ? " · " + graph.kind + " · " + graph.source : ""}`)];
  if (run.error) parts.push(h("p", { class: "error" }, typeof run.error === "string" ? run.error : JSON.stringify(run.error)));
  if (graph) parts.push(h("div", { class: "graph section", id: "run-graph" }, drawGraph(graph, run)));
  else parts.push(h("p", { class: "muted section" }, run.what === "plan" || run.chain === "collaboration" ? "a routed request's collaboration plan: its phases below" : "this chain is not in the project's rules any more"));
  parts.push(h("div", { class: "section" }, h("h2", {}, "Steps"), h("div", { class: "scroll" }, h("table", { class: "table", id: "run-steps" },
    h("tbody", {}, run.steps.map((st) => h("tr", { "data-step": st.name },
      h("td", {}, st.what === "compensation" ? `undo ${st.name}` : st.name), h("td", {}, st.plugin || ""), h("td", {}, pill(st.status)),
      h("td", { class: "small error" }, st.error ? (typeof st.error === "string" ? st.error : st.error.message || JSON.stringify(st.error)) : ""))))))));
  panel.replaceChildren(...parts);
}

function drawGraph(graph, run) {
  const status = {};
  for (const st of run.steps) if (st.what !== "compensation") status[st.name] = st.status;
  const W = 168, H = 46, GX = 26, GY = 34;
  const levels = Math.max(...graph.nodes.map((n) => n.level)) + 1;
  const perLevel = {};
  for (const n of graph.nodes) perLevel[n.level] = (perLevel[n.level] || 0) + 1;
  const widest = Math.max(...Object.values(perLevel));
  const width = widest * (W + GX) + GX, height = levels * (H + GY) + GY;
  const pos = {};
  for (const n of graph.nodes) {
    const row = perLevel[n.level];
    const x0 = (width - (row * W + (row - 1) * GX)) / 2;
    pos[n.id] = { x: x0 + n.column * (W + GX), y: GY / 2 + n.level * (H + GY) };
  }
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0L10,5L0,10z", fill: "#adb5bd" }))));
  for (const e of graph.edges) {
    const a = pos[e.from], b = pos[e.to];
    const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
    const my = (y1 + y2) / 2;
    svg.append(s("path", { class: "edge", d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
    if (e.label) svg.append(s("text", { class: "elabel", x: (x1 + x2) / 2 + 4, y: my }, e.label));
  }
  for (const n of graph.nodes) {
    const p = pos[n.id];
    const st = n.kind === "step" ? status[n.step] || "pending" : "";
    const title = n.kind === "step" ? `${n.plugin} ${n.command}` : n.kind === "branch" ? "" : n.kind;
    const g = s("g", { class: `node ${n.kind} ${st}`, "data-step": n.step, "data-status": st || null, transform: `translate(${p.x},${p.y})` },
      s("title", {}, [n.label, n.source, n.when ? "when " + n.when : null, n.compensate ? "undo: " + n.compensate : null].filter(Boolean).join("\n")),
      s("rect", { width: W, height: H, rx: 6 }),
      s("text", { x: 10, y: 19 }, clip(n.label, 24)),
      s("text", { class: "sub", x: 10, y: 35 }, clip(st ? `${st} · ${title}` : title, 28)));
    svg.append(g);
  }
  return svg;
}

function clip(text, n) { text = String(text || ""); return text.length > n ? text.slice(0, n - 1) + "…" : text; }

// -- dead letters ---------------------------------------------------------------------------------

let pendingReplay = null;

function renderLetters() {
  const tbody = $("letters").tBodies[0];
  const waiting = state.letters.filter((l) => !l.replayedAt).length;
  $("dlq-count").textContent = waiting ? String(waiting) : "";
  tbody.replaceChildren(...state.letters.map((l) => h("tr", { "data-letter-id": l.id },
    h("td", { class: "mono" }, l.id.slice(0, 12)), h("td", {}, l.service), h("td", {}, pill(l.reason)),
    h("td", { class: "num" }, l.count), h("td", { class: "mono" }, String(l.lastAt || "").slice(0, 19).replace("T", " ")),
    h("td", {}, l.replayedAt ? h("span", { class: "muted small" }, "replayed ") : null,
      h("button", { class: "replay", onclick: () => askReplay(l) }, "Replay")))));
  if (!state.letters.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "no dead letters")));
}

function askReplay(letter) {
  pendingReplay = letter;
  $("confirm-text").textContent = `${letter.id.slice(0, 12)} → ${letter.service} (${letter.reason}${letter.detail ? ": " + letter.detail : ""})`;
  $("confirm").showModal();
}

async function replay(letter) {
  const box = $("replay-result");
  box.hidden = false;
  box.className = "result";
  box.textContent = `replaying ${letter.id.slice(0, 12)}…`;
  try {
    const outcome = await api(`/api/dead-letters/${encodeURIComponent(letter.id)}/replay`, { method: "POST" });
    box.className = "result " + (outcome.ok ? "ok" : "bad");
    box.textContent = (outcome.ok ? `replayed ${letter.id.slice(0, 12)} (${outcome.attempts} attempt(s))\n` : `replay failed: ${outcome.error || "error reply"}\n`)
      + (outcome.reply ? JSON.stringify(outcome.reply.payload || outcome.reply, null, 2) : "");
  } catch (err) {
    box.className = "result bad";
    box.textContent = `replay failed: ${err.message}`;
  }
  loadLetters();
}

// -- loading and the live stream ------------------------------------------------------------------

async function loadDecisions() {
  try { state.decisions = await api("/api/decisions?last=50"); } catch (err) { state.decisions = []; $("decisions").replaceChildren(h("li", { class: "error" }, err.message)); return; }
  renderDecisions();
}

async function loadChains() {
  try {
    const [graphs, runs] = await Promise.all([api("/api/chains"), api("/api/runs?last=20")]);
    state.chains = Object.fromEntries(graphs.map((g) => [g.name, g]));
    const live = new Map(state.runs.map((r) => [r.runId, r]));
    state.runs = runs.map((r) => live.get(r.runId) && r.status !== live.get(r.runId).status && !FINISHED.includes(r.status) ? live.get(r.runId) : r);
    for (const r of live.values()) if (!state.runs.some((x) => x.runId === r.runId)) state.runs.unshift(r);
    if (!state.selectedRun && state.runs.length) state.selectedRun = state.runs[0].runId;
  } catch (err) { $("runs").replaceChildren(h("li", { class: "error" }, err.message)); return; }
  renderRuns();
}
const FINISHED = ["completed", "failed", "cancelled", "timed-out", "compensated", "compensation-failed"];

let lettersTimer = null;
async function loadLetters() {
  try { state.letters = await api("/api/dead-letters?last=100"); } catch (err) { $("letters").tBodies[0].replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "error" }, err.message))); return; }
  renderLetters();
}
function loadLettersSoon() { clearTimeout(lettersTimer); lettersTimer = setTimeout(loadLetters, 800); }

function onHello(data) {
  setLink(data.connected, data.error);
  state.status = data.status;
  state.brokers = data.brokers || [];
  renderBrokers();
  state.series = data.series || [];
  if (state.series.length) addPoint(state.series.pop());
  renderStatus();
  $("feed").replaceChildren();
  for (const m of data.events || []) addFeed(m.kind, m.data);
  drawCharts();
}

function connect() {
  const source = new EventSource(withToken("/api/events"));
  source.addEventListener("hello", (e) => onHello(JSON.parse(e.data)));
  source.addEventListener("status", (e) => {
    const data = JSON.parse(e.data);
    if (!state.connected) setLink(true);
    state.status = data.status;
    addPoint(data.point);
    renderStatus();
    drawCharts();
  });
  source.addEventListener("link", (e) => { const d = JSON.parse(e.data); setLink(d.connected, d.error); });
  source.addEventListener("brokers", (e) => { state.brokers = JSON.parse(e.data).brokers || []; renderBrokers(); });
  source.addEventListener("decision", (e) => addDecision(JSON.parse(e.data)));
  source.addEventListener("chain", (e) => { const d = JSON.parse(e.data); onChainEvent(d); addFeed("chain", d); });
  source.addEventListener("circuit", (e) => { const d = JSON.parse(e.data); addFeed("circuit", d); });
  source.addEventListener("dead-letter", (e) => { addFeed("dead-letter", JSON.parse(e.data)); loadLettersSoon(); });
  source.addEventListener("reload", (e) => addFeed("reload", JSON.parse(e.data)));
  source.addEventListener("system", (e) => addFeed("system", JSON.parse(e.data)));
  source.addEventListener("resync", () => { loadDecisions(); loadChains(); loadLetters(); });
  source.onerror = () => setLink(false, "dashboard server unreachable, retrying");
}

function init() {
  window.addEventListener("hashchange", showTab);
  window.addEventListener("resize", () => drawCharts());
  $("confirm").addEventListener("close", () => {
    if ($("confirm").returnValue === "replay" && pendingReplay) replay(pendingReplay);
    pendingReplay = null;
  });
  showTab();
  connect();
  loadDecisions().then(() => {
    const [tab, id] = (location.hash || "").slice(1).split("/");
    if (tab === "decisions" && id) selectDecision(id);
  });
  loadChains().then(() => {
    const [tab, id] = (location.hash || "").slice(1).split("/");
    if (tab === "chains" && id) selectRun(id);
  });
  loadLetters();
}

init();
