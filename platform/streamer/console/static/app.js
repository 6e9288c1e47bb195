/* streamer console: one page, four views chosen by the URL fragment.
 *
 *   #/executions[?filters]          the executions list (server-paged; first page live over SSE)
 *   #/executions/<id>[?user=U]      one execution: graph, state inspector, request, history, timeline (live)
 *   #/connections                   current connections per user
 *   #/overview                      counts, requests per minute, p50/p99 per workflow and per step
 *
 * Everything shown is what the JSON API (streamer.observe) returns; nothing is computed from a private
 * record. Text from the server is only ever inserted as text (esc() / textContent), never as markup.
 */
"use strict";

const STATUS_COLOURS = {
  not_reached: { fill: "#eef0f4", line: "#b8bfcc", ink: "#6b7385" },
  running: { fill: "#dce8fd", line: "#2f6fdb", ink: "#1d2330" },
  succeeded: { fill: "#dff3e7", line: "#1f9d55", ink: "#1d2330" },
  failed: { fill: "#fbe1e1", line: "#d64545", ink: "#1d2330" },
  caught: { fill: "#fcecd6", line: "#e08a1e", ink: "#1d2330" },
  cancelled: { fill: "#ebe5f8", line: "#7a5cc7", ink: "#1d2330" },
};
const STATE_STATUSES = Object.keys(STATUS_COLOURS);
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "CANCELLED"]);
const LIST_STATUSES = ["RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "ABORTED", "PENDING"];
const PAGE_SIZE = 25;

const main = document.getElementById("main");
let teardown = [];

// -- helpers -------------------------------------------------------------------------------------------

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}
function fmtDur(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m} min ${Math.round((ms % 60000) / 1000)} s`;
}
function json(v) {
  if (v === null || v === undefined) return '<span class="muted">—</span>';
  return `<pre>${esc(typeof v === "string" ? v : JSON.stringify(v, null, 2))}</pre>`;
}
function statusPill(s) {
  return `<span class="status ${esc(s)}">${esc(String(s ?? "").replace("_", " "))}</span>`;
}
function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/executions";
  const [path, qs] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(qs || "") };
}
function showProblem(msg) {
  const el = document.getElementById("problem");
  el.hidden = !msg;
  el.textContent = msg || "";
}
function setLive(on) {
  document.getElementById("live").classList.toggle("on", !!on);
}
async function api(path, opts = {}) {
  const resp = await fetch("api/" + path, {
    credentials: "same-origin",
    ...opts,
    headers: { Accept: "application/json", ...(opts.method === "POST" ? { "X-Streamer-Console": "1" } : {}) },
  });
  let body = null;
  try {
    body = await resp.json();
  } catch (e) {
    body = { message: resp.statusText };
  }
  if (!resp.ok) {
    const err = new Error((body && body.message) || `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}
/** An EventSource that calls onData(doc) for each document, stops on "end", and is closed on navigation. */
function live(path, onData, onEnd) {
  const es = new EventSource("api/live/" + path, { withCredentials: true });
  es.onopen = () => setLive(true);
  es.onmessage = (m) => {
    setLive(true);
    showProblem(null);
    onData(JSON.parse(m.data));
  };
  es.addEventListener("problem", (m) => {
    try {
      showProblem(JSON.parse(m.data).message);
    } catch (e) {
      showProblem("live updates: problem reading the sources");
    }
  });
  es.addEventListener("end", () => {
    es.close();
    setLive(false);
    if (onEnd) onEnd();
  });
  es.onerror = () => setLive(false); // the browser reconnects by itself
  teardown.push(() => {
    es.close();
    setLive(false);
  });
  return es;
}
function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") p.set(k, v);
  const s = p.toString();
  return s ? "?" + s : "";
}
function execHref(item) {
  return `#/executions/${encodeURIComponent(item.request_id || item.id)}${qs({ user: item.user_id })}`;
}

// -- router --------------------------------------------------------------------------------------------

function route() {
  for (const f of teardown) f();
  teardown = [];
  showProblem(null);
  const { parts, params } = parseHash();
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === parts[0]));
  const view = parts[0] || "executions";
  const run = view === "executions" && parts[1] ? () => executionView(parts.slice(1).join("/"), params)
    : view === "connections" ? connectionsView
    : view === "overview" ? overviewView
    : () => executionsView(params);
  Promise.resolve(run()).catch((e) => showProblem(e.message));
}
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// -- executions list -----------------------------------------------------------------------------------

function executionsView(params) {
  const f = Object.fromEntries(params.entries());
  const cursors = (f.cursors || "").split(",").filter(Boolean); // cursors of the pages before this one
  main.innerHTML = `
    <h1>Executions</h1>
    <div class="panel">
      <form class="filters" id="filters">
        <label>request id<input name="q" value="${esc(f.q)}" placeholder="search by request id" size="22"></label>
        <label>workflow<input name="workflow" value="${esc(f.workflow)}" list="workflows" size="12"><datalist id="workflows"></datalist></label>
        <label>status<select name="status"><option value="">any</option>${LIST_STATUSES.map((s) => `<option ${f.status === s ? "selected" : ""}>${s}</option>`).join("")}</select></label>
        <label>user<input name="user" value="${esc(f.user)}" size="14"></label>
        <label>since<select name="since">${[["", "any time"], ["15m", "15 min"], ["1h", "1 hour"], ["24h", "24 hours"], ["7d", "7 days"]].map(([v, l]) => `<option value="${v}" ${f.since === v ? "selected" : ""}>${l}</option>`).join("")}<option value="custom" ${f.from ? "selected" : ""}>custom…</option></select></label>
        <label>from<input type="datetime-local" name="from" value="${esc(f.from)}"></label>
        <label>to<input type="datetime-local" name="to" value="${esc(f.to)}"></label>
        ${f.limit ? `<input type="hidden" name="limit" value="${esc(f.limit)}">` : ""}
        <button class="primary" type="submit">Apply</button>
        <button type="button" id="clear">Clear</button>
      </form>
    </div>
    <div class="panel">
      <table id="list"><thead><tr><th>request id</th><th>workflow</th><th>status</th><th>user</th><th>started</th><th>duration</th><th></th></tr></thead><tbody></tbody></table>
      <div class="pager"><button id="prev" ${cursors.length ? "" : "disabled"}>← newer</button><button id="next" disabled>older →</button><span id="count"></span></div>
    </div>`;
  const form = document.getElementById("filters");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    if (data.since === "custom") data.since = "";
    location.hash = "#/executions" + qs(data);
  });
  document.getElementById("clear").onclick = () => (location.hash = "#/executions");
  const apiParams = {
    q: f.q, workflow: f.workflow, status: f.status, user: f.user, limit: Number(f.limit) || PAGE_SIZE,
    since: f.from ? new Date(f.from).toISOString() : f.since, until: f.to ? new Date(f.to).toISOString() : "",
  };
  const here = cursors.length ? cursors[cursors.length - 1] : "";
  let seen = null;
  const render = (page) => {
    const tbody = document.querySelector("#list tbody");
    const prevStatus = seen || {};
    const now = {};
    tbody.innerHTML = page.items.length ? "" : `<tr><td colspan="7" class="empty">No executions match.</td></tr>`;
    for (const it of page.items) {
      now[it.id] = it.status;
      const tr = document.createElement("tr");
      tr.className = "row";
      tr.dataset.id = it.id;
      tr.dataset.requestId = it.request_id;
      if (seen && prevStatus[it.id] !== it.status) tr.classList.add("fresh");
      tr.innerHTML = `<td class="mono"><a href="${execHref(it)}">${esc(it.request_id)}</a></td><td>${esc(it.workflow)}</td>
        <td>${statusPill(it.status)}</td><td>${esc(it.user_id)}</td><td>${esc(fmtTime(it.started_at || it.created_at))}</td>
        <td>${esc(fmtDur(it.duration_ms))}</td><td>${it.console_url ? `<a href="${esc(it.console_url)}" target="_blank" rel="noopener">AWS</a>` : ""}</td>`;
      tr.onclick = (ev) => { if (ev.target.tagName !== "A") location.hash = execHref(it); };
      tbody.appendChild(tr);
    }
    seen = now;
    const dl = document.getElementById("workflows");
    const names = new Set([...dl.options].map((o) => o.value));
    for (const it of page.items) if (!names.has(it.workflow)) { names.add(it.workflow); dl.insertAdjacentHTML("beforeend", `<option value="${esc(it.workflow)}">`); }
    const next = document.getElementById("next");
    next.disabled = !page.next_cursor;
    next.onclick = () => (location.hash = "#/executions" + qs({ ...f, cursors: [...cursors, page.next_cursor].join(",") }));
    document.getElementById("count").textContent = `${page.items.length} shown${page.next_cursor ? ", more older" : ""}`;
  };
  document.getElementById("prev").onclick = () => (location.hash = "#/executions" + qs({ ...f, cursors: cursors.slice(0, -1).join(",") }));
  if (here) return api("executions" + qs({ ...apiParams, cursor: here })).then(render);
  // The first page is live: new executions and status changes arrive without a reload.
  live("executions" + qs(apiParams), render);
}

// -- one execution -------------------------------------------------------------------------------------

function definitionStates(def) {
  return (def && def.States) || {};
}
function processorOf(state) {
  return state.ItemProcessor || state.Iterator || null;
}

/** Cytoscape elements for an ASL definition; Map and Parallel become compound nodes holding their states. */
function graphElements(def) {
  const els = [];
  const addScope = (states, startAt, prefix, parent, top) => {
    const id = (name) => prefix + name;
    if (top) {
      els.push({ data: { id: "__start", label: "start", type: "Start" }, classes: "terminal-dot" });
      els.push({ data: { id: "__end", label: "end", type: "End" }, classes: "terminal-dot" });
      els.push({ data: { id: "__start->" + startAt, source: "__start", target: id(startAt), label: "" } });
    }
    for (const [name, st] of Object.entries(states)) {
      const nid = id(name);
      els.push({ data: { id: nid, name, label: name, type: st.Type, parent }, classes: `state ${st.Type}` });
      const edge = (to, cls, label) => els.push({ data: { id: `${nid}->${to}:${cls || ""}:${label || ""}`, source: nid, target: id(to), label: label || "" }, classes: cls || "" });
      if (st.Next) edge(st.Next);
      if (st.Default) edge(st.Default, "default", "default");
      (st.Choices || []).forEach((c, i) => c.Next && edge(c.Next, "choice", `rule ${i + 1}`));
      (st.Catch || []).forEach((c) => c.Next && edge(c.Next, "catch", "catch"));
      if (top && (st.End || st.Type === "Succeed" || st.Type === "Fail")) els.push({ data: { id: nid + "->__end", source: nid, target: "__end", label: "" } });
      const proc = processorOf(st);
      if (st.Type === "Map" && proc) addScope(proc.States || {}, proc.StartAt, nid + "/", nid, false);
      if (st.Type === "Parallel") {
        (st.Branches || []).forEach((b, i) => {
          const bid = `${nid}/branch${i + 1}`;
          els.push({ data: { id: bid, label: `branch ${i + 1}`, type: "Branch", parent: nid }, classes: "branch" });
          addScope(b.States || {}, b.StartAt, bid + "/", bid, false);
        });
      }
    }
  };
  addScope(definitionStates(def), def.StartAt, "", undefined, true);
  return els;
}

/** The StateRun (or an aggregate of them) behind each graph node id. */
function runsByNode(def, states) {
  const out = {};
  const index = (runs, scopeDef, prefix) => {
    for (const run of runs || []) {
      const nid = prefix + run.name;
      out[nid] = run;
      const st = scopeDef[run.name] || {};
      const proc = processorOf(st);
      if (run.iterations && proc) {
        // Iterator states: one node for all iterations; its status aggregates theirs.
        const byName = {};
        for (const item of run.iterations.items || []) {
          for (const s of item.states || []) (byName[s.name] = byName[s.name] || []).push({ ...s, index: item.index });
        }
        for (const [name, list] of Object.entries(byName)) out[nid + "/" + name] = aggregate(name, list);
      }
      (run.branches || []).forEach((b, i) => {
        const bStates = Array.isArray(b) ? b : b.states || [];
        const bDef = (st.Branches || [])[i] || {};
        index(bStates, bDef.States || {}, `${nid}/branch${i + 1}/`);
      });
    }
  };
  index(states, definitionStates(def), "");
  return out;
}
function aggregate(name, list) {
  const count = (s) => list.filter((r) => r.status === s).length;
  const status = count("running") ? "running" : count("failed") ? "failed" : count("cancelled") ? "cancelled"
    : count("caught") ? "caught" : list.every((r) => r.status === "succeeded") ? "succeeded" : "not_reached";
  const durations = list.map((r) => r.duration_ms).filter((d) => d !== null && d !== undefined);
  return {
    name, type: list[0].type, status, aggregate: true, runs: list,
    attempts: list.reduce((a, r) => a + (r.attempts || 0), 0),
    duration_ms: durations.length ? Math.max(...durations) : null,
    counts: Object.fromEntries(STATE_STATUSES.map((s) => [s, count(s)])),
  };
}
function nodeLabel(node, run) {
  const type = node.data("type");
  let label = node.data("name") || node.data("label");
  let sub = type;
  if (run && run.iterations) {
    const it = run.iterations;
    sub = `Map · ${it.succeeded}/${it.total} done` + (it.failed ? ` · ${it.failed} failed` : "") + (it.running ? ` · ${it.running} running` : "");
  } else if (run && run.aggregate) {
    sub = `${type} ×${run.runs.length}` + (run.counts.failed ? ` · ${run.counts.failed} failed` : "");
  } else if (run && run.attempts > 1) {
    sub = `${type} · ${run.attempts} attempts`;
  }
  // Containers (Map, Parallel) carry their label inside the top of the box, on one line.
  return node.isParent() ? `${label} · ${sub}` : `${label}\n${sub}`;
}

function graphStyle() {
  const s = [
    { selector: "node", style: {
      label: "data(label)", "text-wrap": "wrap", "text-valign": "center", "text-halign": "center", "font-size": 12,
      "font-family": "system-ui, sans-serif", color: "#1d2330", "background-color": "#eef0f4", "border-width": 2,
      "border-color": "#b8bfcc", shape: "round-rectangle", width: (n) => Math.max(100, 7.5 * Math.max(...String(n.data("label")).split("\n").map((l) => l.length)) + 24), height: 42,
    } },
    { selector: "node.Choice", style: { shape: "diamond", width: 130, height: 62 } },
    { selector: "node.Pass", style: { shape: "rectangle", "border-style": "dashed" } },
    { selector: "node.Wait", style: { shape: "hexagon" } },
    { selector: "node.Succeed", style: { shape: "ellipse", "border-width": 4, "border-style": "double", width: 110, height: 44 } },
    { selector: "node.Fail", style: { shape: "octagon", width: 110, height: 44 } },
    { selector: "node.terminal-dot", style: { shape: "ellipse", width: 22, height: 22, "background-color": "#1d2330", "border-width": 0, label: "data(label)", "text-valign": "bottom", "text-margin-y": 4, color: "#6b7385" } },
    { selector: ":parent", style: {
      "text-valign": "top", "text-halign": "center", "text-margin-y": -2, "background-opacity": 0.35, padding: 16, shape: "round-rectangle", "font-weight": 600,
      "compound-sizing-wrt-labels": "include",
    } },
    { selector: ":parent.Map", style: { "border-style": "dashed", "border-width": 3 } },
    { selector: ":parent.Parallel", style: { "border-style": "double", "border-width": 5, shape: "rectangle" } },
    { selector: ":parent.branch", style: { "border-style": "dotted", "border-width": 1, "background-opacity": 0.15 } },
    { selector: "edge", style: {
      width: 1.5, "line-color": "#8e97a8", "target-arrow-color": "#8e97a8", "target-arrow-shape": "triangle", "curve-style": "bezier",
      label: "data(label)", "font-size": 9, color: "#6b7385", "text-background-color": "#fbfcfe", "text-background-opacity": 1,
    } },
    { selector: "edge.catch", style: { "line-style": "dashed", "line-color": "#e0a35e", "target-arrow-color": "#e0a35e" } },
    { selector: "node:selected", style: { "overlay-color": "#2f6fdb", "overlay-opacity": 0.12, "overlay-padding": 6 } },
  ];
  for (const [st, c] of Object.entries(STATUS_COLOURS)) {
    s.push({ selector: `node.st-${st}`, style: { "background-color": c.fill, "border-color": c.line, color: c.ink } });
  }
  s.push({ selector: "node.st-running", style: { "border-width": 4, "transition-property": "border-opacity", "transition-duration": "0.6s" } });
  s.push({ selector: "node.st-running.pulse", style: { "border-opacity": 0.35 } });
  s.push({ selector: ":parent.st-running", style: { "border-width": 4 } });
  return s;
}

function executionView(id, params) {
  const user = params.get("user") || "";
  const q = qs({ user });
  main.innerHTML = `
    <div class="exec-head"><h1 class="mono" id="title">${esc(id)}</h1><span id="exec-status"></span><span id="exec-meta" class="muted"></span>
      <div class="actions"><a id="aws" target="_blank" rel="noopener" hidden>AWS console</a>
      <button id="cancel" class="danger" disabled>Cancel</button><button id="rerun" disabled>Run again</button></div></div>
    <div class="exec-grid">
      <div>
        <div class="panel"><div id="graph"></div>
          <div class="legend">${STATE_STATUSES.map((s) => `<span><i style="background:${STATUS_COLOURS[s].line}"></i>${s.replace("_", " ")}</span>`).join("")}</div></div>
        <div class="panel"><h2>Timeline</h2><div id="timeline" class="timeline"></div></div>
      </div>
      <div>
        <div class="panel inspector" id="inspector"><div class="muted">Click a state in the graph to see its input, output, error and attempts.</div></div>
        <div class="panel">
          <div class="tabs"><button data-tab="request" class="active">Request</button><button data-tab="history">Event history</button></div>
          <div id="tab-request"></div><div id="tab-history" hidden></div>
        </div>
      </div>
    </div>`;
  let cy = null;
  let detail = null;
  let runs = {};
  let selected = null;
  let historyCount = -1;
  let tab = "request";
  document.querySelectorAll(".tabs button").forEach((b) => (b.onclick = () => {
    tab = b.dataset.tab;
    document.querySelectorAll(".tabs button").forEach((x) => x.classList.toggle("active", x === b));
    document.getElementById("tab-request").hidden = tab !== "request";
    document.getElementById("tab-history").hidden = tab !== "history";
    if (tab === "history") loadHistory(true);
  }));
  const loadHistory = (force) => {
    if (!detail || (!force && historyCount === detail.history_count)) return;
    historyCount = detail.history_count;
    api(`executions/${encodeURIComponent(id)}/history${q}`).then(renderHistory).catch((e) => showProblem(e.message));
  };
  const draw = (d) => {
    const container = document.getElementById("graph");
    if (!d.definition || !d.definition.States || !d.definition.States[d.definition.StartAt]) {
      // No state machine to draw: the request never started an execution (e.g. its workflow is not deployed).
      container.innerHTML = `<div class="empty graph-empty">No state machine definition for workflow ${esc((d.summary || {}).workflow)}: the request has no execution.</div>`;
      container.dataset.drawn = "1";
      return;
    }
    cy = cytoscape({
      container, elements: graphElements(d.definition), style: graphStyle(),
      boxSelectionEnabled: false, autoungrabify: true, maxZoom: 1.3,
    });
    window.streamerConsole = { cy }; // the browser tests and the benchmark read node statuses from here
    cy.on("tap", "node.state", (ev) => {
      selected = ev.target.id();
      renderInspector();
    });
    const layout = cy.layout({
      name: "elk", nodeDimensionsIncludeLabels: true, fit: true, padding: 16, animate: false,
      elk: {
        algorithm: "layered", "elk.direction": "DOWN", "elk.hierarchyHandling": "INCLUDE_CHILDREN",
        "elk.layered.spacing.nodeNodeBetweenLayers": 44, "elk.spacing.nodeNode": 28,
        "elk.edgeRouting": "ORTHOGONAL",
      },
      // A container's box in cytoscape is its children's box + 16 px padding + its label on top: tell ELK so.
      nodeLayoutOptions: (n) => (n.isParent() ? { "elk.padding": "[top=40,left=18,bottom=18,right=18]" } : {}),
    });
    layout.one("layoutstop", () => {
      container.dataset.drawn = "1"; // tests and the benchmark wait for this
      container.dispatchEvent(new Event("drawn"));
    });
    layout.run();
  };
  const paint = () => {
    if (!cy) return;
    cy.batch(() => {
      cy.nodes("node.state").forEach((n) => {
        const run = runs[n.id()];
        const status = run ? run.status : "not_reached";
        STATE_STATUSES.forEach((s) => n.removeClass("st-" + s));
        n.addClass("st-" + status);
        n.data("status", status);
        n.data("label", nodeLabel(n, run));
      });
      // A Parallel branch takes the status of its states.
      cy.nodes("node.branch").forEach((b) => {
        const kids = b.children().map((k) => k.data("status"));
        const status = kids.includes("running") ? "running" : kids.includes("failed") ? "failed" : kids.every((k) => k === "not_reached") ? "not_reached" : kids.every((k) => k === "succeeded" || k === "not_reached") ? "succeeded" : "caught";
        STATE_STATUSES.forEach((s) => b.removeClass("st-" + s));
        b.addClass("st-" + status);
      });
    });
  };
  const renderHead = (d) => {
    const sum = d.summary || {};
    const req = d.request || {};
    const status = req.status || sum.status;
    document.getElementById("title").textContent = sum.request_id || id;
    document.getElementById("exec-status").innerHTML = statusPill(status);
    const ex = d.execution || {};
    const started = ex.started_at || sum.started_at || sum.created_at;
    const took = ex.duration_ms ?? sum.duration_ms;
    document.getElementById("exec-meta").textContent = `${sum.workflow || ""} · ${sum.user_id || ""} · started ${fmtTime(started)}${took != null ? " · took " + fmtDur(took) : ""}`;
    const aws = document.getElementById("aws");
    aws.hidden = !sum.console_url;
    if (sum.console_url) aws.href = sum.console_url;
    const terminal = TERMINAL.has(String(status).toUpperCase());
    const cancel = document.getElementById("cancel");
    cancel.disabled = terminal;
    cancel.onclick = () => {
      cancel.disabled = true;
      api(`executions/${encodeURIComponent(sum.request_id || id)}/cancel${qs({ user: sum.user_id || user })}`, { method: "POST" })
        .then((r) => showProblem(r.cancelled ? null : "The request had already ended."))
        .catch((e) => { cancel.disabled = false; showProblem(e.message); });
    };
    const rerun = document.getElementById("rerun");
    rerun.disabled = !terminal;
    rerun.onclick = () => {
      rerun.disabled = true;
      api(`executions/${encodeURIComponent(sum.request_id || id)}/rerun${qs({ user: sum.user_id || user })}`, { method: "POST" })
        .then((r) => (location.hash = `#/executions/${encodeURIComponent(r.request_id)}${qs({ user: sum.user_id || user })}`))
        .catch((e) => { rerun.disabled = false; showProblem(e.message); });
    };
  };
  const renderInspector = () => {
    const el = document.getElementById("inspector");
    if (!selected || !cy) return;
    const node = cy.getElementById(selected);
    const run = runs[selected];
    const head = `<h2>${esc(node.data("name"))} ${statusPill(run ? run.status : "not_reached")} <span class="muted">${esc(node.data("type"))}</span></h2>`;
    if (!run) {
      el.innerHTML = head + `<div class="muted">Not reached in this execution.</div>`;
      return;
    }
    if (run.aggregate) {
      el.innerHTML = head + `<div class="muted">${run.runs.length} iterations: ${STATE_STATUSES.filter((s) => run.counts[s]).map((s) => `${run.counts[s]} ${s.replace("_", " ")}`).join(", ")}</div>
        <div class="sub">iteration</div><select id="iter">${run.runs.map((r, i) => `<option value="${i}">#${esc(r.index)} — ${esc(r.status)}</option>`).join("")}</select><div id="iter-body"></div>`;
      const sel = document.getElementById("iter");
      const first = run.runs.findIndex((r) => r.status === "failed" || r.status === "running");
      sel.value = String(first >= 0 ? first : 0);
      const show = () => (document.getElementById("iter-body").innerHTML = stateDetails(run.runs[Number(sel.value)]));
      sel.onchange = show;
      show();
      return;
    }
    el.innerHTML = head + stateDetails(run);
  };
  const renderRequest = (d) => {
    const req = d.request || {};
    const sum = d.summary || {};
    const events = (d.events || []).map((e) => ({ seq: e.seq, type: e.type, ...(e.body || {}) }));
    const terminal = req.terminal_event || null;
    document.getElementById("tab-request").innerHTML = `
      <dl class="kv"><dt>request id</dt><dd class="mono">${esc(sum.request_id || req.request_id)}</dd>
        <dt>user</dt><dd>${esc(req.user_id || sum.user_id)}</dd><dt>workflow</dt><dd>${esc(req.workflow || sum.workflow)}</dd>
        <dt>status</dt><dd>${statusPill(req.status || sum.status)}</dd>
        <dt>created</dt><dd>${esc(fmtTime(req.created_at))}</dd>
        <dt>execution</dt><dd class="mono">${esc((d.execution || {}).arn || sum.execution_arn || "—")} ${d.execution ? statusPill(d.execution.status) : ""}</dd>
        ${req.error_code ? `<dt>error</dt><dd>${esc(req.error_code)}: ${esc(req.error_message)}</dd>` : ""}</dl>
      <div class="sub">payload</div>${json(req.payload)}
      <div class="sub">events the client received (${events.length})</div>
      <table id="events"><thead><tr><th>seq</th><th>type</th><th>step</th><th>%</th><th>message / detail</th></tr></thead><tbody>
      ${events.map((e) => `<tr><td>${esc(e.seq)}</td><td>${esc(e.type)}</td><td>${esc(e.step)}</td><td>${esc(e.percent)}</td><td>${esc(e.message || e.code || (e.output ? JSON.stringify(e.output) : ""))}</td></tr>`).join("")}
      </tbody></table>
      <div class="sub">terminal event</div>${json(terminal)}`;
  };
  const renderHistory = (events) => {
    document.getElementById("tab-history").innerHTML = `<table id="history"><thead><tr><th>#</th><th>time</th><th>type</th><th>state / detail</th></tr></thead><tbody>
      ${events.map((e) => {
        const detailKey = Object.keys(e).find((k) => k.endsWith("EventDetails"));
        const det = detailKey ? e[detailKey] : {};
        const what = det.name || det.error || det.resourceType || "";
        return `<tr><td>${esc(e.id)}</td><td>${esc(fmtTime(e.timestamp))}</td><td>${esc(e.type)}</td><td title="${esc(JSON.stringify(det))}">${esc(what)}${det.cause ? " — " + esc(String(det.cause).slice(0, 120)) : ""}</td></tr>`;
      }).join("")}</tbody></table>`;
  };
  const update = (d) => {
    const first = !detail;
    detail = d;
    runs = runsByNode(d.definition || {}, d.states || []);
    if (first) draw(d);
    paint();
    renderHead(d);
    renderRequest(d);
    renderTimeline(d);
    renderInspector();
    if (tab === "history") loadHistory(false);
  };
  live(`executions/${encodeURIComponent(id)}${q}`, update, () => { if (tab === "history") loadHistory(true); });
  // Running states breathe, so they stand out from the other blue-less states at a glance.
  const pulse = setInterval(() => cy && cy.nodes(".st-running").toggleClass("pulse"), 700);
  teardown.push(() => clearInterval(pulse));
  teardown.push(() => cy && cy.destroy());
}

/** A Lambda error's cause is a JSON document (errorType, errorMessage, stackTrace): its message first, the
 * whole document (stack trace included) one click away. Any other cause is shown as it is. */
function causeOf(cause) {
  let doc = null;
  try {
    doc = typeof cause === "string" ? JSON.parse(cause) : null;
  } catch (e) {
    doc = null;
  }
  if (!doc || typeof doc !== "object" || !doc.errorMessage) return json(cause);
  return `<div class="cause-message">${esc(doc.errorType ? doc.errorType + ": " : "")}${esc(doc.errorMessage)}</div>
    <details><summary class="muted">full cause${doc.stackTrace ? " with stack trace" : ""}</summary>${json(doc)}</details>`;
}

function stateDetails(run) {
  const retries = run.retries || [];
  return `<dl class="kv"><dt>status</dt><dd>${statusPill(run.status)}</dd><dt>attempts</dt><dd>${esc(run.attempts ?? "")}</dd>
      <dt>started</dt><dd>${esc(fmtTime(run.started_at))}</dd><dt>ended</dt><dd>${esc(fmtTime(run.stopped_at))}</dd>
      <dt>duration</dt><dd>${esc(fmtDur(run.duration_ms))}</dd></dl>
    ${run.error || run.cause ? `<div class="sub">error</div><div class="state-error"><b>${esc(run.error)}</b></div><div class="sub">cause</div>${causeOf(run.cause)}` : ""}
    ${retries.length ? `<div class="sub">retries</div><table class="retries"><thead><tr><th>attempt</th><th>error</th><th>delay</th><th>started</th></tr></thead><tbody>
      ${retries.map((r) => `<tr><td>${esc(r.attempt)}</td><td>${esc(r.error)}${r.cause ? `<div class="muted">${esc(String(r.cause).slice(0, 200))}</div>` : ""}</td><td>${esc(fmtDur(r.delay_ms))}</td><td>${esc(fmtTime(r.started_at))}</td></tr>`).join("")}</tbody></table>` : ""}
    <div class="sub">input</div><div class="state-input">${json(run.input)}</div>
    <div class="sub">output</div><div class="state-output">${json(run.output)}</div>`;
}

function renderTimeline(d) {
  const el = document.getElementById("timeline");
  const rows = [];
  for (const run of d.states || []) {
    rows.push({ name: run.name, run, indent: false });
    for (const item of (run.iterations && run.iterations.items) || []) {
      const sts = item.states || [];
      const starts = sts.map((s) => s.started_at).filter(Boolean).sort();
      const stops = sts.map((s) => s.stopped_at).filter(Boolean).sort();
      rows.push({ name: `#${item.index}`, run: { status: item.status, started_at: starts[0], stopped_at: item.status === "running" ? null : stops[stops.length - 1] }, indent: true });
    }
  }
  const t = (iso) => (iso ? new Date(iso).getTime() : null);
  const starts = rows.map((r) => t(r.run.started_at)).filter((x) => x !== null);
  if (!starts.length) {
    el.innerHTML = `<div class="empty">No state has started yet.</div>`;
    return;
  }
  const t0 = Math.min(...starts);
  const running = !TERMINAL.has(String((d.execution || {}).status || "").toUpperCase());
  const ends = rows.map((r) => t(r.run.stopped_at)).filter((x) => x !== null);
  const t1 = Math.max(running ? Date.now() : 0, ...ends, t0 + 1);
  const span = t1 - t0;
  el.innerHTML = rows.map((r) => {
    const s = t(r.run.started_at);
    if (s === null) return `<div class="tl-row"><div class="name ${r.indent ? "indent" : ""}">${esc(r.name)}</div><div class="tl-track"></div></div>`;
    const e = t(r.run.stopped_at) ?? t1;
    const colour = (STATUS_COLOURS[r.run.status] || STATUS_COLOURS.not_reached).line;
    const title = `${r.name}: ${fmtDur(e - s)} (${r.run.status})`;
    return `<div class="tl-row" title="${esc(title)}"><div class="name ${r.indent ? "indent" : ""}">${esc(r.name)}</div><div class="tl-track"><div class="tl-bar" style="left:${((s - t0) / span) * 100}%;width:${Math.max(0.4, ((e - s) / span) * 100)}%;background:${colour}"></div></div></div>`;
  }).join("") + `<div class="tl-axis"><div></div><div><span>0</span><span>${esc(fmtDur(span / 2))}</span><span>${esc(fmtDur(span))}</span></div></div>`;
}

// -- connections ---------------------------------------------------------------------------------------

async function connectionsView() {
  main.innerHTML = `<h1>Connections</h1><div class="panel" id="conns"><div class="empty">Loading…</div></div>`;
  const load = async () => {
    const users = await api("connections");
    const total = users.reduce((a, u) => a + (u.connections || []).length, 0);
    document.getElementById("conns").innerHTML = users.length ? `<div class="muted">${total} connections, ${users.length} users</div>
      <table id="connections"><thead><tr><th>user</th><th>connection id</th><th>connected at</th><th>expires at</th><th>messages</th></tr></thead><tbody>
      ${users.map((u) => (u.connections || []).map((c, i) => `<tr><td>${i === 0 ? esc(u.user_id) : ""}</td><td class="mono">${esc(c.connection_id)}</td><td>${esc(fmtTime(c.connected_at))}</td><td>${esc(fmtTime(c.expires_at))}</td><td>${esc(c.messages)}</td></tr>`).join("")).join("")}
      </tbody></table>` : `<div class="empty">No connections.</div>`;
  };
  await load();
  const timer = setInterval(() => load().catch((e) => showProblem(e.message)), 3000);
  teardown.push(() => clearInterval(timer));
}

// -- overview ------------------------------------------------------------------------------------------

function origin(note) {
  return note ? `<div class="muted origin">from ${esc(note)}</div>` : "";
}
function barChart(title, rows, opts = {}) {
  // rows: [{label, values: [{v, colour, name}]}] drawn as horizontal grouped bars; opts.note: where they come from
  const cls = opts.wide ? "panel wide" : "panel";
  if (!rows.length) return `<div class="${cls}"><h2>${esc(title)}</h2>${origin(opts.note)}<div class="empty">No data in this window.</div></div>`;
  const w = opts.wide ? 1040 : 520, lh = 18, gap = 8, left = 150, right = 70;
  const max = Math.max(1, ...rows.flatMap((r) => r.values.map((x) => x.v || 0)));
  const per = rows[0].values.length;
  const h = rows.length * (per * lh + gap) + 24;
  let y = 4;
  let out = "";
  for (const r of rows) {
    out += `<text x="${left - 6}" y="${y + (per * lh) / 2 + 4}" text-anchor="end" class="bar-label">${esc(r.label)}</text>`;
    for (const x of r.values) {
      const bw = ((x.v || 0) / max) * (w - left - right);
      out += `<rect x="${left}" y="${y + 2}" width="${Math.max(1, bw)}" height="${lh - 4}" fill="${x.colour}" rx="2"><title>${esc(x.name)}: ${esc(opts.fmt ? opts.fmt(x.v) : x.v)}</title></rect>`;
      out += `<text x="${left + bw + 4}" y="${y + lh - 5}">${esc(opts.fmt ? opts.fmt(x.v) : x.v)}${per > 1 ? " " + esc(x.name) : ""}</text>`;
      y += lh;
    }
    y += gap;
  }
  return `<div class="${cls}"><h2>${esc(title)}</h2>${origin(opts.note)}<svg viewBox="0 0 ${w} ${h}" width="100%" role="img" aria-label="${esc(title)}">${out}</svg></div>`;
}
function lineChart(title, points, note) {
  if (!points.length) return `<div class="panel"><h2>${esc(title)}</h2>${origin(note)}<div class="empty">No data in this window.</div></div>`;
  const w = 520, h = 180, l = 36, b = 22, t = 8, r = 8;
  const max = Math.max(1, ...points.map((p) => p.v));
  const xs = (i) => l + (i / Math.max(1, points.length - 1)) * (w - l - r);
  const ys = (v) => t + (1 - v / max) * (h - t - b);
  const path = points.map((p, i) => `${i ? "L" : "M"}${xs(i).toFixed(1)},${ys(p.v).toFixed(1)}`).join(" ");
  const area = `${path} L${xs(points.length - 1).toFixed(1)},${h - b} L${l},${h - b} Z`;
  const ticks = [0, Math.floor((points.length - 1) / 2), points.length - 1].filter((v, i, a) => a.indexOf(v) === i);
  return `<div class="panel"><h2>${esc(title)}</h2>${origin(note)}<svg viewBox="0 0 ${w} ${h}" width="100%" role="img" aria-label="${esc(title)}">
    <line x1="${l}" y1="${h - b}" x2="${w - r}" y2="${h - b}" stroke="#dde1e8"/><text x="${l - 4}" y="${t + 8}" text-anchor="end">${max}</text><text x="${l - 4}" y="${h - b}" text-anchor="end">0</text>
    <path d="${area}" fill="#2f6fdb" opacity="0.12"/><path d="${path}" fill="none" stroke="#2f6fdb" stroke-width="2"/>
    ${points.map((p, i) => `<circle cx="${xs(i).toFixed(1)}" cy="${ys(p.v).toFixed(1)}" r="2.5" fill="#2f6fdb"><title>${esc(p.label)}: ${p.v}</title></circle>`).join("")}
    ${ticks.map((i) => `<text x="${xs(i).toFixed(1)}" y="${h - 6}" text-anchor="${i === 0 ? "start" : i === points.length - 1 ? "end" : "middle"}">${esc(points[i].label)}</text>`).join("")}</svg></div>`;
}
async function overviewView() {
  main.innerHTML = `<h1>Overview <span class="muted" style="font-size:14px;font-weight:400">last hour</span></h1><div id="ov"><div class="empty">Loading…</div></div>`;
  const load = async () => {
    const o = await api("overview?window=3600");
    const byStatus = Object.entries(o.by_status || {});
    const byWorkflow = Object.entries(o.by_workflow || {});
    const total = o.total;
    const rpm = (o.per_minute || []).map((p) => ({ label: fmtTime(p.minute).slice(11, 16), v: p.count }));
    const pct = (list) => list.map((x) => ({ label: x.step ? (x.workflow ? `${x.workflow} · ${x.step}` : x.step) : x.workflow, values: [{ v: x.p50_ms, colour: "#6ea0ef", name: "p50" }, { v: x.p99_ms, colour: "#2f55a4", name: "p99" }] }));
    const durations = o.durations || [];
    const from = o.origins || {};
    const metricsOnly = o.source === "metrics" ? [
      ["connects refused", Object.values(o.connects_refused || {}).reduce((a, b) => a + b, 0)],
      ["rate-limited", o.rate_limited], ["pushes to gone", o.pushes_to_gone_connections], ["records retried", o.stream_records_retried],
    ] : [];
    const source = o.source === "metrics"
      ? `Every figure from the EMF metrics the handlers wrote — what CloudWatch shows for a deployed stack (${esc(from.file || "")}).`
      : `From the requests table and execution histories (a deployed stack's CloudWatch metrics are not read here).`;
    const colourOf = (s) => (getComputedStyle(document.documentElement).getPropertyValue("--" + String(s).toLowerCase()).trim() || "#9aa3b5");
    document.getElementById("ov").innerHTML = `
      <div class="muted" id="ov-source" data-source="${esc(o.source)}">${source}</div>
      <div class="cards"><div class="card"><div class="n">${esc(total)}</div><div class="l">requests</div></div>
        ${byStatus.map(([s, v]) => `<div class="card" style="border-top:3px solid ${colourOf(s)}"><div class="n">${esc(v)}</div><div class="l">${esc(s)}</div></div>`).join("")}
        ${metricsOnly.map(([l, v]) => `<div class="card"><div class="n">${esc(v)}</div><div class="l">${esc(l)}</div></div>`).join("")}</div>
      ${origin(from.by_status)}
      <div class="charts">
        ${lineChart("Requests per minute", rpm, from.per_minute)}
        ${barChart("Requests by workflow", byWorkflow.map(([w, v]) => ({ label: w, values: [{ v, colour: "#6ea0ef", name: "requests" }] })), { note: from.by_workflow })}
        ${barChart("Duration per workflow (p50, p99)", pct(durations.filter((x) => !x.step)), { fmt: fmtDur, note: from.workflow_durations })}
        ${barChart("Duration per step (p50, p99)", pct(durations.filter((x) => x.step)), { fmt: fmtDur, wide: true, note: from.step_durations })}
      </div>`;
  };
  await load();
  const timer = setInterval(() => load().catch((e) => showProblem(e.message)), 5000);
  teardown.push(() => clearInterval(timer));
}
