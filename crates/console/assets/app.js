// The Testbed web console. Plain ES modules, no build step: Preact renders
// (keyed updates keep focus and scroll while live data changes), htm gives
// it JSX-like templates without a compiler. Everything shown comes from the
// public HTTP API; the session is the HttpOnly `testbed_session` cookie, and
// every change carries `X-Testbed-Csrf: 1`.
import { h, render, Component } from "preact";
import { useState, useEffect, useRef, useCallback } from "preact/hooks";
import htm from "htm";

const html = htm.bind(h);
const BASE = document.body.dataset.base;

// ---------------------------------------------------------------- API ----

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.details = (body && body.details) || [];
  }
}

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: { "X-Testbed-Csrf": "1" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (res.status === 401 && path !== "/api/auth/session") {
    // Expired or revoked session: sign in again, then come back here.
    session.user = null;
    toLogin();
    throw new ApiError(401, data);
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

const session = { user: null };
const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
const can = (role) => session.user && ROLE_RANK[session.user.role] >= ROLE_RANK[role];

function toLogin() {
  const here = location.pathname + location.search;
  if (location.pathname !== "/login") navigate(`/login?next=${encodeURIComponent(here)}`, true);
}

// ------------------------------------------------------------- router ----

const listeners = new Set();
function navigate(url, replace = false) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  listeners.forEach((f) => f());
  window.scrollTo(0, 0);
}
window.addEventListener("popstate", () => listeners.forEach((f) => f()));

function useLocation() {
  const [, setTick] = useState(0);
  useEffect(() => {
    const f = () => setTick((t) => t + 1);
    listeners.add(f);
    return () => listeners.delete(f);
  }, []);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

// Same-origin links navigate without a reload; modified clicks (new tab) do not.
document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download") || e.defaultPrevented) return;
  if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
  e.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});

// ---------------------------------------------------------- live data ----

// Calls `load` now and then every `ms` (never under a second) while the
// component is shown and `active` holds; keeps the last good value.
function usePoll(load, deps, ms = 1000, active = true) {
  const [state, setState] = useState({ data: null, error: null });
  useEffect(() => {
    let stop = false;
    let timer = null;
    const tick = async () => {
      try {
        const data = await load();
        if (!stop) setState({ data, error: null });
      } catch (e) {
        if (!stop) setState((s) => ({ data: s.data, error: e }));
      }
      if (!stop && active) timer = setTimeout(tick, Math.max(ms, 1000));
    };
    tick();
    return () => { stop = true; clearTimeout(timer); };
  }, [...deps, active]);
  return state;
}

function wsUrl(path) {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
}

// ------------------------------------------------------------- pieces ----

// Every status has a symbol and a word: colour is never the only signal.
const STATUS = {
  online: ["●", "ok"], offline: ["○", "off"],
  passed: ["✔", "ok"], failed: ["✖", "bad"], error: ["✖", "bad"], lost: ["✖", "bad"],
  running: ["▶", "run"], pending: ["…", "wait"], queued: ["…", "wait"], assigned: ["…", "wait"],
  skipped: ["⊘", "off"], cancelled: ["■", "off"], xfail: ["✔", "warn"], xpass: ["!", "warn"],
  finished: ["✔", "ok"], completed: ["✔", "ok"], stopped: ["■", "off"], paused: ["❚❚", "wait"],
};
function Status({ s, title }) {
  const [icon, cls] = STATUS[s] || ["?", "off"];
  return html`<span class="status ${cls}" title=${title || s}><span aria-hidden="true">${icon}</span> ${s}</span>`;
}

function ErrorBox({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.message || String(error)}</p>`;
}

const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "—");
const fmtBytes = (n) => (n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + " GiB" : (n / (1 << 20)).toFixed(0) + " MiB");
const short = (id) => String(id || "").slice(0, 8);

// -------------------------------------------------------------- pages ----

function Login({ query }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setBusy(true);
    try {
      session.user = await api("POST", "/api/auth/session", {
        username: f.get("username"),
        password: f.get("password"),
      });
      const next = query.get("next");
      navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/agents", true);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login">
    <h1>Sign in to Testbed</h1>
    <form onSubmit=${submit} id="login-form">
      <label>User name <input name="username" id="username" autocomplete="username" required autofocus /></label>
      <label>Password <input name="password" id="password" type="password" autocomplete="current-password" required /></label>
      <${ErrorBox} error=${error} />
      <button type="submit" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}

function Agents() {
  const { data, error } = usePoll(() => api("GET", "/api/agents"), []);
  const agents = data || [];
  return html`<section>
    <h1>Agents</h1>
    <p class="muted">${agents.filter((a) => a.status === "online").length} online of ${agents.length}; updates every second.</p>
    <${ErrorBox} error=${error} />
    <div class="scroll"><table id="agents">
      <thead><tr><th>Name</th><th>Status</th><th>Host</th><th>Plugins</th><th>Labels</th><th>Groups</th><th>Running</th><th>CPU</th><th>Memory</th></tr></thead>
      <tbody>
        ${agents.map((a) => html`<tr key=${a.uuid} data-agent=${a.name} data-status=${a.status}>
          <td><a href=${`/agents/${a.uuid}`}>${a.name}</a></td>
          <td><${Status} s=${a.status} /></td>
          <td>${a.host}</td>
          <td>${a.plugins.map((p) => html`<span class="chip" title=${p.methods.map((m) => m.name).join(", ")}>${p.name}</span>`)}</td>
          <td>${Object.entries(a.labels).map(([k, v]) => html`<span class="chip">${k}=${v}</span>`)}</td>
          <td>${a.groups.map((g) => html`<span class="chip">${g}</span>`)}</td>
          <td>${a.running} / ${a.capacity}</td>
          <td>${a.metrics ? a.metrics.cpu_percent.toFixed(0) + " %" : "—"}</td>
          <td>${a.metrics ? fmtBytes(a.metrics.memory_used_bytes) + " / " + fmtBytes(a.metrics.memory_total_bytes) : "—"}</td>
        </tr>`)}
      </tbody>
    </table></div>
  </section>`;
}

function Agent({ id }) {
  const agent = usePoll(() => api("GET", `/api/agents/${encodeURIComponent(id)}`), [id]);
  const tasks = usePoll(() => api("GET", `/api/tasks?agent=${encodeURIComponent(id)}&page_size=20`), [id], 2000);
  const a = agent.data;
  return html`<section>
    <p><a href="/agents">← Agents</a></p>
    <${ErrorBox} error=${agent.error} />
    ${a && html`<h1>${a.name} <${Status} s=${a.status} /></h1>
      <dl class="facts">
        <dt>Host</dt><dd>${a.host}</dd>
        <dt>Id</dt><dd>${a.id} · ${a.uuid}</dd>
        <dt>Version</dt><dd>${a.version}</dd>
        <dt>Running</dt><dd>${a.running} of ${a.capacity}</dd>
        <dt>Last heartbeat</dt><dd>${fmtTime(a.heartbeat_at || a.last_seen_at)}</dd>
        <dt>CPU / memory</dt><dd>${a.metrics ? `${a.metrics.cpu_percent.toFixed(0)} % · ${fmtBytes(a.metrics.memory_used_bytes)} of ${fmtBytes(a.metrics.memory_total_bytes)}` : "—"}</dd>
        <dt>Labels</dt><dd>${Object.entries(a.labels).map(([k, v]) => html`<span class="chip">${k}=${v}</span>`)}</dd>
        <dt>Groups</dt><dd>${a.groups.map((g) => html`<span class="chip">${g}</span>`)}</dd>
      </dl>
      <h2>Plugins</h2>
      <ul>${a.plugins.map((p) => html`<li><strong>${p.name}</strong>: ${p.methods.map((m) => m.name).join(", ")}</li>`)}</ul>`}
    <h2>Recent tasks</h2>
    <${ErrorBox} error=${tasks.error} />
    <${TaskTable} tasks=${tasks.data ? tasks.data.results || tasks.data : []} />
  </section>`;
}

function TaskTable({ tasks }) {
  if (!tasks || !tasks.length) return html`<p class="muted">None.</p>`;
  return html`<div class="scroll"><table>
    <thead><tr><th>Task</th><th>Status</th><th>Plugin / method</th><th>Created</th></tr></thead>
    <tbody>${tasks.map((t) => html`<tr key=${t.id}>
      <td><a href=${`/tasks/${t.id}`}>${short(t.id)}</a></td>
      <td><${Status} s=${t.status} /></td>
      <td>${t.plugin} / ${t.method}</td>
      <td>${fmtTime(t.created_at)}</td></tr>`)}</tbody>
  </table></div>`;
}

const RUN_STATUSES = ["pending", "running", "passed", "failed", "cancelled", "error"];

// `since`/`until` in a runs URL: a day (YYYY-MM-DD, as the date inputs write
// it: the browser's local day, `until` inclusive) or an RFC 3339 instant (a
// shared link may carry one). The API takes instants, so a day becomes the
// instant its local midnight starts (the next day's for `until`).
const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;
function apiInstant(v, end) {
  const m = DAY.exec(v);
  if (!m) return v; // an instant, or a mistake: the API's 422 says which
  const d = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]) + (end ? 1 : 0));
  return Number.isNaN(d.getTime()) ? v : d.toISOString();
}

function Runs({ query }) {
  const status = query.get("status") || "";
  const plan = query.get("plan_id") || "";
  const since = query.get("since") || "";
  const until = query.get("until") || "";
  const page = Number(query.get("page") || 1);
  const plans = usePoll(() => api("GET", "/api/plans?page_size=1000"), [], 30000);
  const runs = usePoll(() => {
    const q = new URLSearchParams({ page, page_size: 50 });
    if (status) q.set("status", status);
    if (plan) q.set("plan_id", plan);
    if (since) q.set("since", apiInstant(since, false));
    if (until) q.set("until", apiInstant(until, true));
    return api("GET", `/api/runs?${q}`);
  }, [status, plan, since, until, page], 2000);
  const setFilter = (k, v) => {
    const q = new URLSearchParams(location.search);
    if (v) q.set(k, v); else q.delete(k);
    q.delete("page");
    navigate(`/runs${q.toString() ? "?" + q : ""}`);
  };
  const list = runs.data ? runs.data.results : [];
  const planList = plans.data ? plans.data.results || plans.data : [];
  return html`<section>
    <h1>Runs</h1>
    <div class="filters">
      <label>Status <select id="filter-status" value=${status} onChange=${(e) => setFilter("status", e.target.value)}>
        <option value="">any</option>
        ${RUN_STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select></label>
      <label>Plan <select id="filter-plan" value=${plan} onChange=${(e) => setFilter("plan_id", e.target.value)}>
        <option value="">any</option>
        ${planList.map((p) => html`<option value=${p.id}>${p.name}</option>`)}
      </select></label>
      <label>From <input type="date" id="filter-since" value=${DAY.test(since) ? since : ""}
        onChange=${(e) => setFilter("since", e.target.value)} /></label>
      <label>To <input type="date" id="filter-until" value=${DAY.test(until) ? until : ""}
        onChange=${(e) => setFilter("until", e.target.value)} /></label>
      ${[["since", since, "from"], ["until", until, "before"]].filter(([, v]) => v && !DAY.test(v)).map(([k, v, word]) => html`
        <span class="chip" id=${`filter-${k}-instant`}>${word} ${v}
          <button class="link" aria-label=${`clear ${k}`} onClick=${() => setFilter(k, "")}>×</button></span>`)}
      ${can("operator") && html`<a class="button" href="/plans">Start a run…</a>`}
    </div>
    <${ErrorBox} error=${runs.error} />
    <div class="scroll"><table id="runs">
      <thead><tr><th>Run</th><th>Plan</th><th>Status</th><th>By</th><th>Started</th><th>Finished</th></tr></thead>
      <tbody>${list.map((r) => html`<tr key=${r.id}>
        <td><a href=${`/runs/${r.id}`}>${short(r.id)}</a></td>
        <td>${r.plan_name}</td><td><${Status} s=${r.status} /></td><td>${r.created_by}</td>
        <td>${fmtTime(r.created_at)}</td><td>${fmtTime(r.finished_at)}</td></tr>`)}</tbody>
    </table></div>
    ${runs.data && html`<p class="pager">
      ${page > 1 && html`<a href=${pageUrl(page - 1)}>← newer</a>`}
      <span> page ${page} of ${Math.max(1, Math.ceil(runs.data.total / 50))} (${runs.data.total} runs) </span>
      ${page * 50 < runs.data.total && html`<a href=${pageUrl(page + 1)}>older →</a>`}
    </p>`}
  </section>`;
}

function pageUrl(n) {
  const q = new URLSearchParams(location.search);
  q.set("page", n);
  return `${location.pathname}?${q}`;
}

// Steps in layers: a step sits one layer right of its deepest dependency.
function layout(steps) {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const depth = new Map();
  const visit = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const s = byId.get(id);
    const d = s ? Math.max(-1, ...(s.depends_on || []).filter((x) => byId.has(x)).map((x) => visit(x, seen))) + 1 : 0;
    depth.set(id, d);
    return d;
  };
  steps.forEach((s) => visit(s.id));
  const layers = [];
  steps.forEach((s) => (layers[depth.get(s.id)] ||= []).push(s.id));
  const W = 170, H = 56, GX = 60, GY = 18;
  const pos = new Map();
  layers.forEach((ids, x) => ids.forEach((id, y) => pos.set(id, { x: 10 + x * (W + GX), y: 10 + y * (H + GY) })));
  const width = 20 + layers.length * (W + GX) - GX;
  const height = 20 + Math.max(1, ...layers.map((l) => l.length)) * (H + GY) - GY;
  return { pos, W, H, width, height };
}

function Dag({ run, selected }) {
  const steps = run.spec.steps;
  const { pos, W, H, width, height } = layout(steps);
  return html`<svg class="dag" viewBox="0 0 ${width} ${height}" width=${width} height=${height} role="list" aria-label="Plan steps">
    ${steps.flatMap((s) => (s.depends_on || []).filter((d) => pos.has(d)).map((d) => {
      const a = pos.get(d), b = pos.get(s.id);
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      return html`<path key=${d + ">" + s.id} class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" />`;
    }))}
    ${steps.map((s) => {
      const st = run.steps[s.id] || { status: "pending" };
      const status = st.status === "failed" && s.xfail ? "xfail" : st.status;
      const [icon, cls] = STATUS[status] || ["?", "off"];
      const p = pos.get(s.id);
      return html`<a key=${s.id} href=${`/runs/${run.id}?step=${encodeURIComponent(s.id)}`} role="listitem"
          class="node ${cls} ${selected === s.id ? "selected" : ""}" data-step=${s.id} data-status=${status}
          aria-label=${`step ${s.id}: ${status}${st.reason ? " — " + st.reason : ""}`}>
        <title>${st.reason || status}</title>
        <rect x=${p.x} y=${p.y} width=${W} height=${H} rx="6" />
        <text x=${p.x + 10} y=${p.y + 22} class="name">${(s.name || s.id).slice(0, 22)}</text>
        <text x=${p.x + 10} y=${p.y + 43} class="state">${icon} ${status}</text>
      </a>`;
    })}
  </svg>`;
}

const TERMINAL_RUN = ["passed", "failed", "cancelled", "error"];

function RunPage({ id, query }) {
  const [live, setLive] = useState(true);
  const { data: run, error } = usePoll(() => api("GET", `/api/runs/${id}`), [id], 1000, live);
  const [actionError, setActionError] = useState(null);
  // Poll until the run is over and its report is written (a run that has
  // no report stops a minute after it finished).
  useEffect(() => {
    if (!run || !TERMINAL_RUN.includes(run.status)) return;
    const age = Date.now() - Date.parse(run.finished_at || run.created_at);
    if (run.report_id || age > 60000) setLive(false);
  }, [run && run.status, run && run.report_id]);
  if (!run) return html`<section><${ErrorBox} error=${error} /><p>Loading run…</p></section>`;
  const firstBad = run.spec.steps.find((s) => ["failed", "error", "lost"].includes((run.steps[s.id] || {}).status));
  const firstRunning = run.spec.steps.find((s) => (run.steps[s.id] || {}).status === "running");
  const selected = query.get("step") || (firstBad || firstRunning || {}).id;
  const st = selected && run.steps[selected];
  const mayCancel = !TERMINAL_RUN.includes(run.status) &&
    (can("admin") || (can("operator") && run.created_by === session.user.username));
  const cancel = async () => {
    setActionError(null);
    try { await api("POST", `/api/runs/${id}/cancel`); setLive(true); } catch (e) { setActionError(e); }
  };
  const rerun = async () => {
    setActionError(null);
    try {
      const body = run.plan_id ? { plan_id: run.plan_id, params: run.params } : { plan: JSON.stringify(run.spec), params: run.params };
      if (run.environment) body.environment = run.environment;
      const r = await api("POST", "/api/runs", body);
      navigate(`/runs/${r.id}`);
    } catch (e) { setActionError(e); }
  };
  return html`<section>
    <p><a href="/runs">← Runs</a></p>
    <h1>${run.plan_name} <${Status} s=${run.status} /></h1>
    <p class="muted">Run ${run.id} · by ${run.created_by} · started ${fmtTime(run.started_at || run.created_at)}${run.finished_at ? " · finished " + fmtTime(run.finished_at) : ""}${run.reason ? " · " + run.reason : ""}</p>
    <div class="actions">
      ${mayCancel && html`<button id="cancel-run" class="danger" onClick=${cancel}>Cancel run</button>`}
      ${can("operator") && TERMINAL_RUN.includes(run.status) && html`<button id="rerun" onClick=${rerun}>Re-run with the same parameters</button>`}
      ${run.report_id && html`<a class="button" href=${`/reports/${run.report_id}`}>Report</a>`}
    </div>
    <${ErrorBox} error=${error || actionError} />
    <div class="scroll"><${Dag} run=${run} selected=${selected} /></div>
    ${st && html`<${StepPanel} key=${selected} run=${run} id=${selected} st=${st} />`}
  </section>`;
}

function StepPanel({ run, id, st }) {
  const inst = st.instances || [];
  const [which, setWhich] = useState(0);
  const cur = inst[Math.min(which, inst.length - 1)];
  return html`<div class="panel" id="step-panel">
    <h2>Step ${id} <${Status} s=${st.status} /></h2>
    ${st.reason && html`<p class="reason">${st.reason}</p>`}
    ${inst.length > 0 && html`<div class="scroll"><table>
      <thead><tr><th></th><th>Agent</th><th>Attempt</th><th>Status</th><th>Exit</th><th>Task</th></tr></thead>
      <tbody>${inst.map((i, n) => html`<tr key=${n}>
        <td><input type="radio" name="inst" aria-label=${`show the log of ${i.agent_name} attempt ${i.attempt}`} checked=${n === which} onChange=${() => setWhich(n)} /></td>
        <td>${i.agent_name}</td><td>${i.attempt}</td><td><${Status} s=${i.status} /></td>
        <td>${i.exit_code ?? "—"}</td><td>${i.task_id ? html`<a href=${`/tasks/${i.task_id}`}>${short(i.task_id)}</a>` : "—"}</td></tr>`)}</tbody>
    </table></div>`}
    ${Object.keys(st.outputs || {}).length > 0 && html`<h3>Outputs</h3><pre>${JSON.stringify(st.outputs, null, 2)}</pre>`}
    ${cur && cur.task_id && html`<h3>Log</h3><${Log} key=${cur.task_id} task=${cur.task_id} />`}
  </div>`;
}

// A task's log, streamed from `/ws/tasks/{id}/log` (the session cookie opens
// it; same origin). The stream always starts from the beginning, so after a
// reconnect the new copy replaces the old one once it has caught up (the old
// text stays on screen meanwhile): no duplicated lines, no gap, no flicker.
function Log({ task }) {
  const [text, setText] = useState("");
  const [end, setEnd] = useState(null);
  const pre = useRef(null);
  useEffect(() => {
    let closed = false, ws = null, retry = 0, timer = null, shown = "", next = "";
    const open = () => {
      next = "";
      ws = new WebSocket(wsUrl(`/ws/tasks/${task}/log`));
      ws.onmessage = (m) => {
        next += m.data;
        retry = 0;
        if (next.length >= shown.length || !shown.startsWith(next)) { shown = next; setText(shown); }
      };
      ws.onclose = (ev) => {
        if (closed) return;
        if (ev.code === 1000 || ev.code === 1008 || ev.code === 1011) { setEnd(ev.reason || "finished"); return; }
        timer = setTimeout(open, Math.min(10000, 1000 * 2 ** retry++));
      };
    };
    open();
    return () => { closed = true; clearTimeout(timer); ws && ws.close(); };
  }, [task]);
  useEffect(() => { if (pre.current) pre.current.scrollTop = pre.current.scrollHeight; }, [text]);
  return html`<pre class="log" id="log" ref=${pre} tabindex="0" aria-label="task log">${text}</pre>
    <p class="muted">${end ? `End of log (${end}).` : "Streaming…"} <a href=${`/api/tasks/${task}/log`} target="_blank" rel="noopener">raw log</a></p>`;
}

function TaskPage({ id }) {
  const { data: t, error } = usePoll(() => api("GET", `/api/tasks/${id}`), [id], 1000);
  const [actionError, setActionError] = useState(null);
  const done = t && ["passed", "failed", "error", "cancelled", "lost", "finished"].includes(t.status);
  return html`<section>
    <${ErrorBox} error=${error || actionError} />
    ${t && html`<h1>Task ${short(t.id)} <${Status} s=${t.status} /></h1>
      <p class="muted">${t.plugin} / ${t.method} · created ${fmtTime(t.created_at)}</p>
      ${can("operator") && !done && html`<button class="danger" onClick=${async () => {
        try { await api("POST", `/api/tasks/${id}/cancel`); } catch (e) { setActionError(e); }
      }}>Cancel task</button>`}`}
    <h2>Log</h2>
    <${Log} task=${id} />
  </section>`;
}

function Plans() {
  const { data, error } = usePoll(() => api("GET", "/api/plans?page_size=1000"), [], 10000);
  const plans = data ? data.results || data : [];
  return html`<section>
    <h1>Stored plans</h1>
    <${ErrorBox} error=${error} />
    <ul class="plans">${plans.map((p) => html`<li key=${p.id}><a href=${`/plans/${p.id}`}>${p.name}</a>${p.description ? " — " + p.description : ""}</li>`)}</ul>
    ${data && !plans.length && html`<p class="muted">No stored plans: store one with <code>POST /api/plans</code>.</p>`}
  </section>`;
}

function PlanPage({ id }) {
  const { data: plan, error } = usePoll(() => api("GET", `/api/plans/${id}`), [id], 60000);
  const [errors, setErrors] = useState({ top: null, fields: {} });
  if (!plan) return html`<section><${ErrorBox} error=${error} /></section>`;
  const spec = plan.spec || plan;
  const params = Object.entries(spec.parameters || {});
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const values = {}, fields = {};
    for (const [name, p] of params) {
      const raw = f.get(name);
      if (p.type === "boolean") { values[name] = raw === "on"; continue; }
      if (raw === "" || raw === null) continue;
      if (p.type === "integer" || p.type === "number") values[name] = Number(raw);
      else if (p.type === "array" || p.type === "object") {
        try { values[name] = JSON.parse(raw); } catch { fields[name] = "not valid JSON"; }
      } else values[name] = raw;
    }
    if (Object.keys(fields).length) return setErrors({ top: null, fields });
    try {
      const r = await api("POST", "/api/runs", { plan_id: plan.id, params: values });
      navigate(`/runs/${r.id}`);
    } catch (err) {
      const byField = {};
      for (const d of err.details || []) byField[d.field.replace(/^\/?(params\/)?/, "")] = d.message;
      setErrors({ top: err, fields: byField });
    }
  };
  return html`<section>
    <p><a href="/plans">← Plans</a></p>
    <h1>${spec.name}</h1>
    ${spec.description && html`<p>${spec.description}</p>`}
    <p class="muted">${spec.steps.length} steps: ${spec.steps.map((s) => s.id).join(", ")}</p>
    ${can("operator") ? html`<form id="start-run" onSubmit=${submit}>
      ${params.map(([name, p]) => html`<div class="field">
        <label for=${"p-" + name}>${name} <span class="muted">(${p.type}${p.default === undefined ? ", required" : ""})</span></label>
        ${p.type === "boolean"
          ? html`<input type="checkbox" id=${"p-" + name} name=${name} checked=${p.default === true} />`
          : html`<input id=${"p-" + name} name=${name} type=${p.type === "integer" || p.type === "number" ? "number" : "text"}
              step=${p.type === "number" ? "any" : undefined}
              value=${p.default === undefined ? "" : typeof p.default === "object" ? JSON.stringify(p.default) : p.default}
              aria-invalid=${errors.fields[name] ? "true" : undefined} aria-describedby=${"e-" + name} />`}
        ${p.description && html`<small>${p.description}</small>`}
        <span class="field-error" id=${"e-" + name}>${errors.fields[name] || ""}</span>
      </div>`)}
      <${ErrorBox} error=${errors.top} />
      <button type="submit" id="start">Start run</button>
    </form>` : html`<p class="muted">Viewers cannot start runs.</p>`}
  </section>`;
}

// The stored report as the server renders it (crates/report's HTML). It is
// shown same-origin so its log links (`/api/tasks/{id}/log`) open with the
// session cookie; the renderer escapes every test-supplied string.
function Report({ id, other }) {
  const src = other ? `/api/reports/${id}/compare/${other}?format=html` : `/api/reports/${id}?format=html`;
  // The JSON says whether suites ran on platforms (a kit across a fleet):
  // then the tests × platforms matrix is offered.
  const json = usePoll(() => (other ? Promise.resolve(null) : api("GET", `/api/reports/${encodeURIComponent(id)}`)), [id, other], 600000);
  const matrix = json.data && (json.data.suites || []).some((s) => s.platform);
  return html`<section class="report">
    <p><a href="/reports">← Reports</a> · <a href=${src} target="_blank" rel="noopener">open alone</a>
      ${!other && html` · <a href=${`/api/reports/${id}?format=junit`} download>JUnit XML</a>`}
      ${matrix && html` · <a id="matrix-link" href=${`/reports/${id}/matrix`}>Tests × platforms</a>`}</p>
    <iframe id="report-frame" title=${other ? "comparison" : "report"} src=${src}></iframe>
  </section>`;
}

const OUTCOME_WORD = { pass: "passed", fail: "failed", error: "error", skip: "skipped", xfail: "xfail", xpass: "xpass" };

// A kit run's report as tests × platforms: every suite that ran on a
// platform (an agent of an `each:` step) fills a column; a row is one case
// of one suite (script). A cell links to itself (`?test=&platform=`), so a
// selected cell can be shared, and its details show below the matrix.
function KitMatrix({ id, query }) {
  const { data: r, error } = usePoll(() => api("GET", `/api/reports/${encodeURIComponent(id)}`), [id], 600000);
  if (!r) return html`<section><${ErrorBox} error=${error} /><p>Loading report…</p></section>`;
  const suites = (r.suites || []).filter((s) => s.platform);
  const platforms = [...new Set(suites.map((s) => s.platform))].sort();
  const rows = [], seen = new Set(), at = new Map();
  for (const s of suites) {
    // A name used twice in one script (TAP allows it) is told apart by its
    // occurrence, so the cells do not overwrite each other.
    const times = new Map();
    for (const c of s.cases || []) {
      const n = (times.get(c.name) || 0) + 1;
      times.set(c.name, n);
      const key = `${s.name} › ${c.name}${n > 1 ? ` (${n})` : ""}`;
      if (!seen.has(key)) { seen.add(key); rows.push(key); }
      at.set(key + "\u0000" + s.platform, { ...c, suite: s.name });
    }
  }
  const counts = (pf) => {
    const cells = rows.map((k) => at.get(k + "\u0000" + pf)).filter(Boolean);
    return `${cells.filter((c) => ["pass", "xfail", "skip"].includes(c.outcome)).length}/${cells.length} ok`;
  };
  const test = query.get("test"), platform = query.get("platform");
  const sel = test && at.get(test + "\u0000" + platform);
  const cellUrl = (k, pf) => `/reports/${id}/matrix?${new URLSearchParams({ test: k, platform: pf })}`;
  return html`<section>
    <p><a href=${`/reports/${id}`}>← Report</a></p>
    <h1>${r.name}: tests × platforms</h1>
    <p class="muted">${fmtTime(r.created_at)} · ${rows.length} tests on ${platforms.length} platforms · select a cell for its details</p>
    ${!platforms.length && html`<p>No suite of this report ran on a platform.</p>`}
    <div class="scroll"><table id="matrix">
      <thead><tr><th>Test</th>${platforms.map((pf) => html`<th key=${pf}>${pf}<br /><span class="muted">${counts(pf)}</span></th>`)}</tr></thead>
      <tbody>${rows.map((k) => html`<tr key=${k}><th>${k}</th>${platforms.map((pf) => {
        const c = at.get(k + "\u0000" + pf);
        const here = sel && k === test && pf === platform;
        return html`<td key=${pf} data-platform=${pf} data-outcome=${c ? c.outcome : "none"} class=${here ? "selected" : ""}>${c
          ? html`<a href=${cellUrl(k, pf)} aria-current=${here ? "true" : undefined}><${Status} s=${OUTCOME_WORD[c.outcome] || c.outcome} title=${c.message || c.outcome} /></a>`
          : html`<span title="not run on this platform">—</span>`}</td>`;
      })}</tr>`)}</tbody>
    </table></div>
    ${test && !sel && html`<p class="error" role="alert">No result for ${test} on ${platform} in this report.</p>`}
    ${sel && html`<div class="panel" id="cell-detail">
      <h2>${test} on ${platform}</h2>
      <dl class="facts">
        <dt>Outcome</dt><dd><${Status} s=${OUTCOME_WORD[sel.outcome] || sel.outcome} /></dd>
        ${sel.message && html`<dt>Message</dt><dd>${sel.message}</dd>`}
        <dt>Duration</dt><dd>${sel.duration_ms} ms</dd>
        ${sel.attempts > 1 && html`<dt>Attempts</dt><dd>${sel.attempts}</dd>`}
        ${sel.log_url && html`<dt>Log</dt><dd><a href=${sel.log_url} target="_blank" rel="noopener">log</a></dd>`}
        ${(sel.artifacts || []).length > 0 && html`<dt>Artifacts</dt><dd>${sel.artifacts.map((a) => html`<a class="chip" href=${a.url}>${a.name}</a>`)}</dd>`}
      </dl>
      ${sel.output && html`<pre class="log">${sel.output}</pre>`}
    </div>`}
  </section>`;
}

// uPlot is loaded only by the pages that draw charts.
let uplotLoading = null;
function loadUplot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  uplotLoading ||= new Promise((resolve, reject) => {
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = `${BASE}/vendor/uPlot.min.css`;
    document.head.append(css);
    const s = document.createElement("script");
    s.src = `${BASE}/vendor/uPlot.iife.min.js`;
    s.onload = () => resolve(window.uPlot);
    s.onerror = () => reject(new Error("could not load the chart library"));
    document.head.append(s);
  });
  return uplotLoading;
}

function Execution({ id, planId }) {
  const box = useRef(null), sysBox = useRef(null);
  const [state, setState] = useState({ status: "connecting", last: null });
  useEffect(() => {
    let closed = false, ws = null, plot = null, sysPlot = null, timer = null, retry = 0;
    const xs = [], rps = [], p = [], p50 = [], p90 = [], p99 = [], errs = [], users = [], cpu = [], mem = [];
    const agents = [], byAgent = {};
    let lines = [];
    // The plan's response-time thresholds, drawn as dashed lines on the ms
    // scale: constant series as long as the time axis.
    const data = () => [xs, rps, p, p50, p90, p99, errs, users, ...lines.map((l) => xs.map(() => positive(l.value)))];
    Promise.all([loadUplot(), planOf(id, planId).then((pl) => msThresholds((pl?.config?.thresholds || []).map((expr) => ({ expr }))), () => [])]).then(([uPlot, ls]) => {
      if (closed || !box.current) return;
      lines = ls;
      const series = [{}, { label: "requests/s", stroke: "#2060c0", width: 2 },
        { label: "avg ms", stroke: "#b05000", scale: "ms" },
        { label: "p50 ms", stroke: "#d08030", scale: "ms", dash: [2, 2] },
        { label: "p90 ms", stroke: "#a04070", scale: "ms" },
        { label: "p99 ms", stroke: "#602080", scale: "ms", width: 2 },
        { label: "errors %", stroke: "#c02020", scale: "%" },
        { label: "active users", stroke: "#208040", scale: "users" },
        ...lines.map((l) => ({ label: `threshold ${l.label} ${l.value}`, stroke: "#c02020", dash: [6, 4], width: 1, scale: "ms" }))];
      plot = new uPlot({
        width: Math.min(960, box.current.clientWidth || 600), height: 280, series,
        // Logarithmic: a 0.2 ms p99 and a 5,000 ms threshold both stay readable.
        scales: { ms: { distr: 3, log: 10 } },
        axes: [{}, { label: "req/s" }, { scale: "ms", side: 1, label: "ms (log)" }],
      }, data(), box.current);
      box.current.dataset.series = series.slice(1).map((s) => s.label).join("|");
      UPlot = uPlot;
      drawSys();
    }).catch((e) => setState((s) => ({ ...s, status: e.message })));
    // One CPU and one memory line per load agent, named; the agents are
    // known from the first second that names them (older servers send only
    // the average, drawn as before).
    let UPlot = null, drawnFor = null;
    const sysData = () => [xs, ...(agents.length ? agents.flatMap((a) => [byAgent[a].cpu, byAgent[a].mem]) : [cpu, mem])];
    const drawSys = () => {
      if (!UPlot || !sysBox.current || (sysPlot && drawnFor === agents.join("|"))) return;
      drawnFor = agents.join("|");
      sysPlot && sysPlot.destroy();
      const palette = ["#2060c0", "#208040", "#b05000", "#602080", "#c02020", "#008080"];
      const series = agents.length
        ? agents.flatMap((a, i) => [
          { label: `${a} CPU %`, stroke: palette[i % palette.length], width: 2 },
          { label: `${a} memory %`, stroke: palette[i % palette.length], dash: [4, 3] }])
        : [{ label: "load agents CPU %", stroke: "#2060c0" }, { label: "memory %", stroke: "#208040" }];
      sysPlot = new UPlot({
        width: Math.min(960, sysBox.current.clientWidth || 600), height: 180,
        series: [{}, ...series],
        scales: { y: { range: [0, 100] } },
      }, sysData(), sysBox.current);
      sysBox.current.dataset.series = series.map((s) => s.label).join("|");
    };
    const open = () => {
      ws = new WebSocket(wsUrl(`/ws/performance/${encodeURIComponent(id)}/`));
      ws.onmessage = (m) => {
        let msg;
        try { msg = JSON.parse(m.data); } catch { return; }
        retry = 0;
        if (msg.type === "metrics") {
          const d = msg.data;
          // Unix seconds (the window's start); an RFC 3339 string is accepted too.
          const t = typeof msg.timestamp === "number" ? msg.timestamp : Date.parse(msg.timestamp) / 1000;
          if (!Number.isFinite(t)) return;
          if (xs.length && t <= xs[xs.length - 1]) return; // a replayed second
          const sm = d.system_metrics || {};
          xs.push(t); rps.push(d.requests_per_second); errs.push(d.error_rate); users.push(d.active_users);
          // Percentiles are null in a second without responses (and absent
          // from servers older than them): a gap, not a zero (nor can a log
          // scale show a zero).
          p.push(positive(d.response_time)); p50.push(positive(d.p50)); p90.push(positive(d.p90)); p99.push(positive(d.p99));
          cpu.push(sm.cpu ?? null); mem.push(sm.memory ?? null);
          const seen = {};
          for (const a of d.agents || []) {
            if (!byAgent[a.agent]) {
              // An agent first heard of now: empty before this second.
              byAgent[a.agent] = { cpu: xs.slice(0, -1).map(() => null), mem: xs.slice(0, -1).map(() => null) };
              agents.push(a.agent);
            }
            seen[a.agent] = a;
          }
          // A second without an agent's sample (lost, finished) is a gap.
          for (const a of agents) {
            byAgent[a].cpu.push(seen[a] ? seen[a].cpu : null);
            byAgent[a].mem.push(seen[a] ? seen[a].memory : null);
          }
          plot && plot.setData(data());
          drawSys();
          sysPlot && sysPlot.setData(sysData());
          if (box.current) {
            box.current.dataset.points = xs.length; box.current.dataset.last = t;
            if (d.p99 != null) box.current.dataset.p99 = d.p99;
          }
          setState({ status: d.paused ? "paused" : "running", last: d });
        } else if (msg.type === "finished") {
          setState((s) => ({ ...s, status: "finished" }));
        }
      };
      ws.onclose = (ev) => {
        if (closed || ev.code === 1000) return;
        timer = setTimeout(open, Math.min(10000, 1000 * 2 ** retry++));
      };
    };
    open();
    return () => { closed = true; clearTimeout(timer); ws && ws.close(); plot && plot.destroy(); sysPlot && sysPlot.destroy(); };
  }, [id]);
  const l = state.last;
  return html`<section>
    <p><a href="/performance">← Performance</a></p>
    <h1>Execution ${id} <${Status} s=${state.status} /></h1>
    ${l && html`<p id="rps" data-rps=${l.requests_per_second}>${l.requests_per_second} requests/s · avg ${l.response_time} ms
      ${l.p99 != null && html` · p50 ${l.p50} · p90 ${l.p90} · p99 ${l.p99} ms`} · ${l.error_rate} % errors · ${l.active_users} users</p>`}
    <div ref=${box} class="chart" id="live-chart" aria-label="requests per second and response time chart"></div>
    <h2>Load agents</h2>
    <div ref=${sysBox} class="chart" id="sys-live" aria-label="load agents CPU and memory chart"></div>
  </section>`;
}

const positive = (v) => (typeof v === "number" && v > 0 ? v : null);

// The performance plan an execution belongs to: the one named by `?plan=`
// (the console's own links carry it), else the plan whose last execution it
// is (the API has no execution → plan lookup), else null.
async function planOf(execution, planId) {
  if (planId) return api("GET", `/api/performance/plans/${encodeURIComponent(planId)}/`);
  const projects = await api("GET", "/api/projects?page_size=100");
  for (const pr of projects.results || projects) {
    const plans = await api("GET", `/api/performance/plans/?project_id=${pr.id}&page_size=100`);
    for (const item of plans.results || plans) {
      const pl = await api("GET", `/api/performance/plans/${item.id}/`);
      if (pl.last_execution === execution) return pl;
    }
  }
  return null;
}

function usePerfActions() {
  const [actionError, setActionError] = useState(null);
  const act = async (plan, action) => {
    setActionError(null);
    try {
      const r = await api("POST", `/api/performance/plans/${plan.id}/${action}/`, {});
      if (action === "start" && r.execution_id) navigate(`/performance/executions/${r.execution_id}?plan=${plan.id}`);
    } catch (e) { setActionError(e); }
  };
  const buttons = (p) => {
    if (!can("operator")) return null;
    const b = (action, label, cls = "") => html`<button class=${cls} data-action=${action} onClick=${() => act(p, action)}>${label}</button> `;
    if (p.status === "running") return [b("pause", "Pause"), b("stop", "Stop", "danger")];
    if (p.status === "paused") return [b("resume", "Resume"), b("stop", "Stop", "danger")];
    return b("start", "Start");
  };
  return { actionError, buttons };
}

function Performance() {
  // Plans are listed per project (the seed-001 API asks for a project).
  const plans = usePoll(async () => {
    const projects = await api("GET", "/api/projects?page_size=100");
    const all = await Promise.all((projects.results || projects).map((pr) =>
      api("GET", `/api/performance/plans/?project_id=${pr.id}&page_size=100`)
        .then((r) => (r.results || r).map((pl) => ({ ...pl, project: pr.name })))));
    return all.flat();
  }, [], 2000);
  const { actionError, buttons } = usePerfActions();
  return html`<section>
    <h1>Performance</h1>
    <${ErrorBox} error=${plans.error || actionError} />
    <div class="scroll"><table id="perf-plans">
      <thead><tr><th>Project</th><th>Plan</th><th>Status</th><th></th></tr></thead>
      <tbody>${(plans.data || []).map((p) => html`<tr key=${p.id} data-plan=${p.name}>
        <td>${p.project}</td><td><a href=${`/performance/plans/${p.id}`}>${p.name}</a></td><td><${Status} s=${p.status} /></td>
        <td>${buttons(p)}</td></tr>`)}</tbody>
    </table></div>
    ${plans.data && !plans.data.length && html`<p class="muted">No performance plans: create one with <code>POST /api/performance/plans/</code>.</p>`}
  </section>`;
}

function PerfPlan({ id }) {
  const plan = usePoll(() => api("GET", `/api/performance/plans/${id}/`), [id], 2000);
  const reports = usePoll(() => api("GET", `/api/performance/reports/?plan_id=${id}&page_size=50`), [id], 5000);
  const { actionError, buttons } = usePerfActions();
  const p = plan.data, c = (p && p.config) || {};
  return html`<section>
    <p><a href="/performance">← Performance</a></p>
    <${ErrorBox} error=${plan.error || actionError} />
    ${p && html`<h1>${p.name} <${Status} s=${p.status} /></h1>
      ${p.description && html`<p>${p.description}</p>`}
      <dl class="facts">
        <dt>Target</dt><dd>${c.target_url || "—"}</dd>
        <dt>Users</dt><dd>${c.concurrent_users ?? "—"}</dd>
        <dt>Type</dt><dd>${c.test_type || "—"}</dd>
        <dt>Thresholds</dt><dd>${(c.thresholds || []).map((t) => html`<code class="chip">${t}</code>`)}</dd>
        <dt>Last execution</dt><dd>${p.last_execution ? html`<a href=${`/performance/executions/${p.last_execution}?plan=${p.id}`}>${p.last_execution}</a>` : "—"}</dd>
      </dl>
      <div class="actions">${buttons(p)}</div>`}
    <h2>Reports</h2>
    <${ErrorBox} error=${reports.error} />
    <ul id="perf-reports">${(reports.data ? reports.data.results : []).map((r) => html`<li key=${r.id}>
      <a href=${`/performance/reports/${r.id}`}>Report ${r.id}</a> · ${fmtTime(r.start_time)} · ${r.status}
      · ${r.summary.total_requests} requests</li>`)}</ul>
  </section>`;
}

function Groups() {
  const groups = usePoll(() => api("GET", "/api/groups?page_size=1000"), [], 2000);
  const agents = usePoll(() => api("GET", "/api/agents"), [], 5000);
  const [error, setError] = useState(null);
  const [fields, setFields] = useState({});
  const act = async (method, path, body) => {
    setError(null); setFields({});
    try { await api(method, path, body); return true; } catch (e) {
      const f = {};
      for (const d of e.details || []) f[d.field.replace(/^\//, "")] = d.message;
      setFields(f); setError(e); return false;
    }
  };
  const create = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { name: f.get("name") };
    if (f.get("description")) body.description = f.get("description");
    if (await act("POST", "/api/groups", body)) e.target.reset();
  };
  const list = groups.data ? groups.data.results || groups.data : [];
  const all = agents.data || [];
  return html`<section>
    <h1>Groups</h1>
    <${ErrorBox} error=${groups.error || error} />
    <div class="scroll"><table id="groups">
      <thead><tr><th>Group</th><th>Agents</th><th>Reserved by</th>${can("operator") && html`<th>Add an agent</th>`}</tr></thead>
      <tbody>${list.map((g) => html`<tr key=${g.name} data-group=${g.name}>
        <td><strong>${g.name}</strong>${g.description ? html`<br /><span class="muted">${g.description}</span>` : ""}</td>
        <td>${g.agents.length ? g.agents.map((a) => html`<span class="chip" key=${a.uuid}>
            <a href=${`/agents/${a.uuid}`}>${a.name}</a> ${a.online ? "● online" : "○ offline"}
            ${can("operator") && html` <button class="link" aria-label=${`remove ${a.name} from ${g.name}`}
              onClick=${() => act("DELETE", `/api/groups/${encodeURIComponent(g.name)}/agents/${a.uuid}`)}>remove</button>`}
          </span>`) : html`<span class="muted">none</span>`}</td>
        <td>${g.reserved_by ? html`<a href=${`/runs/${g.reserved_by}`}>run ${short(g.reserved_by)}</a>` : html`<span class="muted">free</span>`}</td>
        ${can("operator") && html`<td><select aria-label=${`add an agent to ${g.name}`} onChange=${async (e) => {
            const v = e.target.value; e.target.value = "";
            if (v) await act("PUT", `/api/groups/${encodeURIComponent(g.name)}/agents/${v}`);
          }}>
          <option value="">add…</option>
          ${all.filter((a) => !g.agents.some((m) => m.uuid === a.uuid)).map((a) => html`<option value=${a.uuid}>${a.name}</option>`)}
        </select></td>`}
      </tr>`)}</tbody>
    </table></div>
    ${can("operator") && html`<h2>New group</h2>
      <form class="filters" id="new-group" onSubmit=${create}>
        <label>Name <input name="name" required aria-invalid=${fields.name ? "true" : undefined} />
          <span class="field-error">${fields.name || ""}</span></label>
        <label>Description <input name="description" /></label>
        <button type="submit">Create</button>
      </form>`}
  </section>`;
}

// A one-off task (seed 002's POST /v2.1/testcases), its form built from the
// chosen method's JSON schema; the API's 422 puts each error by its field.
function NewTask() {
  const agents = usePoll(() => api("GET", "/api/agents"), [], 5000);
  const [sel, setSel] = useState({ agent: "", plugin: "", method: "" });
  const [errors, setErrors] = useState({ top: null, fields: {} });
  const all = (agents.data || []).filter((a) => a.status === "online");
  const agent = all.find((a) => a.uuid === sel.agent);
  const plugin = agent && agent.plugins.find((p) => p.name === sel.plugin);
  const method = plugin && plugin.methods.find((m) => m.name === sel.method);
  const props = (method && method.schema && method.schema.properties) || {};
  const required = (method && method.schema && method.schema.required) || [];
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const parameters = {}, bad = {};
    for (const [name, p] of Object.entries(props)) {
      const raw = f.get(name);
      if (p.type === "boolean") { if (raw === "on") parameters[name] = true; continue; }
      if (raw === null || raw === "") continue;
      if (p.type === "integer" || p.type === "number") parameters[name] = Number(raw);
      else if (p.type === "object" || p.type === "array") {
        try { parameters[name] = JSON.parse(raw); } catch { bad[name] = "not valid JSON"; }
      } else parameters[name] = raw;
    }
    if (Object.keys(bad).length) return setErrors({ top: null, fields: bad });
    try {
      const r = await api("POST", "/v2.1/testcases", { plugin: sel.plugin, host: agent.host, method: sel.method, parameters });
      navigate(`/tasks/${r.task_id}`);
    } catch (err) {
      const byField = {};
      for (const d of err.details || []) byField[d.field.replace(/^\/parameters\/?/, "") || "_"] = d.message;
      setErrors({ top: err, fields: byField });
    }
  };
  const pick = (k) => (e) => setSel({ ...sel, [k]: e.target.value, ...(k === "agent" ? { plugin: "", method: "" } : k === "plugin" ? { method: "" } : {}) });
  return html`<section>
    <h1>New task</h1>
    ${!can("operator") ? html`<p class="muted">Viewers cannot start tasks.</p>` : html`
    <div class="filters">
      <label>Agent <select id="task-agent" value=${sel.agent} onChange=${pick("agent")}><option value="">choose…</option>
        ${all.map((a) => html`<option value=${a.uuid}>${a.name} (${a.host})</option>`)}</select></label>
      ${agent && html`<label>Plugin <select id="task-plugin" value=${sel.plugin} onChange=${pick("plugin")}><option value="">choose…</option>
        ${agent.plugins.map((p) => html`<option value=${p.name}>${p.name}</option>`)}</select></label>`}
      ${plugin && html`<label>Method <select id="task-method" value=${sel.method} onChange=${pick("method")}><option value="">choose…</option>
        ${plugin.methods.map((m) => html`<option value=${m.name}>${m.name}</option>`)}</select></label>`}
    </div>
    ${method && html`<form id="task-form" onSubmit=${submit}>
      ${method.description && html`<p class="muted">${method.description}</p>`}
      ${Object.entries(props).map(([name, p]) => html`<div class="field" key=${sel.method + name}>
        <label for=${"t-" + name}>${name} <span class="muted">(${p.type || "any"}${required.includes(name) ? ", required" : ""})</span></label>
        ${p.type === "boolean" ? html`<input type="checkbox" id=${"t-" + name} name=${name} />`
          : html`<input id=${"t-" + name} name=${name} type=${p.type === "integer" || p.type === "number" ? "number" : "text"} step=${p.type === "number" ? "any" : undefined}
              aria-invalid=${errors.fields[name] ? "true" : undefined} aria-describedby=${"te-" + name} />`}
        ${p.description && html`<small>${p.description}</small>`}
        <span class="field-error" id=${"te-" + name}>${errors.fields[name] || ""}</span>
      </div>`)}
      <${ErrorBox} error=${errors.top} />
      <button type="submit" id="submit-task">Run task</button>
    </form>`}`}
  </section>`;
}

function ReportsPage() {
  const { data, error } = usePoll(() => api("GET", "/api/reports?page_size=100"), [], 10000);
  const [a, setA] = useState(""), [b, setB] = useState("");
  const list = data ? data.results || data : [];
  return html`<section>
    <h1>Reports</h1>
    <${ErrorBox} error=${error} />
    <div class="scroll"><table id="reports">
      <thead><tr><th>Report</th><th>Result</th><th>Passed</th><th>Failed</th><th>Skipped</th><th>Created</th><th>Compare</th></tr></thead>
      <tbody>${list.map((r) => html`<tr key=${r.id}>
        <td><a href=${`/reports/${r.id}`}>${r.name}</a></td><td><${Status} s=${r.ok ? "passed" : "failed"} /></td>
        <td>${r.passed}</td><td>${r.failed + r.errors}</td><td>${r.skipped}</td><td>${fmtTime(r.created_at)}</td>
        <td><label class="inline"><input type="radio" name="base" checked=${a === r.id} onChange=${() => setA(r.id)} /> base</label>
            <label class="inline"><input type="radio" name="new" checked=${b === r.id} onChange=${() => setB(r.id)} /> new</label></td>
      </tr>`)}</tbody>
    </table></div>
    ${a && b && a !== b && html`<p><a class="button" id="compare" href=${`/reports/${a}/compare/${b}`}>Compare base with new</a></p>`}
  </section>`;
}

function Results({ query }) {
  const { data, error } = usePoll(() => api("GET", "/api/results?page_size=1000"), [], 5000);
  const selCase = query.get("testcase"), selEnv = query.get("environment");
  const list = data ? data.results || data : [];
  const envs = [...new Set(list.map((r) => r.environment))].sort();
  const cases = [...new Set(list.map((r) => r.testcase))].sort();
  const at = new Map(list.map((r) => [r.testcase + "\u0000" + r.environment, r]));
  const word = { pass: "passed", fail: "failed", error: "error", skip: "skipped" };
  return html`<section>
    <h1>Results</h1>
    <p class="muted">The latest result of each test case in each environment.</p>
    <${ErrorBox} error=${error} />
    <div class="scroll"><table id="results">
      <thead><tr><th>Test case</th>${envs.map((e) => html`<th>${e}</th>`)}</tr></thead>
      <tbody>${cases.map((c) => html`<tr key=${c}><th>${c}</th>${envs.map((e) => {
        const r = at.get(c + "\u0000" + e);
        const here = c === selCase && e === selEnv;
        return html`<td key=${e} data-testcase=${c} data-environment=${e} class=${here ? "selected" : ""}>${r
          ? html`<a href=${`/results?${new URLSearchParams({ testcase: c, environment: e })}`} aria-current=${here ? "true" : undefined}
              title="history"><${Status} s=${word[r.status] || r.status} title=${r.message || r.status} /></a>
          ${r.log_url && html` <a href=${r.log_url} target="_blank" rel="noopener">log</a>`}` : "—"}</td>`;
      })}</tr>`)}</tbody>
    </table></div>
    ${selCase && selEnv && html`<${ResultHistory} key=${selCase + "\u0000" + selEnv} testcase=${selCase} environment=${selEnv} />`}
  </section>`;
}

// How many recent runs the history looks through.
const HISTORY_RUNS = 100;

// The history of a test case in an environment. The results API keeps only
// the latest result of each cell, so the history is read from the runs
// (the public API the CLI uses too): among the latest HISTORY_RUNS runs,
// each step that ran this test case in this environment (the step's,
// else the run's, else the plan's environment; "default" without one).
function ResultHistory({ testcase, environment }) {
  const [state, setState] = useState({ rows: null, scanned: 0, error: null });
  useEffect(() => {
    let stop = false;
    (async () => {
      const list = await api("GET", `/api/runs?page_size=${HISTORY_RUNS}`);
      const rows = [];
      const summaries = list.results || [];
      // A few at a time: a history must not flood the server.
      for (let i = 0; i < summaries.length && !stop; i += 4) {
        const runs = await Promise.all(summaries.slice(i, i + 4).map((s) => api("GET", `/api/runs/${s.id}`).catch(() => null)));
        for (const run of runs.filter(Boolean)) {
          for (const step of (run.spec && run.spec.steps) || []) {
            const env = step.environment || run.environment || run.spec.environment || "default";
            if (step.testcase !== testcase || env !== environment) continue;
            const st = (run.steps || {})[step.id] || {};
            const task = (st.instances || []).map((x) => x.task_id).find(Boolean);
            rows.push({ run, step: step.id, status: st.status || "pending", reason: st.reason, at: st.finished_at || run.created_at, task });
          }
        }
        if (!stop) setState({ rows: [...rows], scanned: Math.min(i + 4, summaries.length), error: null });
      }
      if (!stop && !summaries.length) setState({ rows: [], scanned: 0, error: null });
    })().catch((e) => !stop && setState((s) => ({ ...s, error: e })));
    return () => { stop = true; };
  }, [testcase, environment]);
  const { rows, scanned, error } = state;
  return html`<div class="panel" id="history">
    <h2>History of ${testcase} in ${environment}</h2>
    <p class="muted">Every run of it among the latest ${HISTORY_RUNS} runs, newest first${rows ? ` (${scanned} looked at)` : ""}.</p>
    <${ErrorBox} error=${error} />
    ${!rows ? html`<p>Loading…</p>` : !rows.length ? html`<p>None of the latest runs ran it here.</p>` : html`<div class="scroll"><table>
      <thead><tr><th>When</th><th>Result</th><th>Run</th><th>Reason</th><th>Log</th></tr></thead>
      <tbody>${rows.map((h) => html`<tr key=${h.run.id + h.step} data-run=${h.run.id}>
        <td>${fmtTime(h.at)}</td><td><${Status} s=${h.status} /></td>
        <td><a href=${`/runs/${h.run.id}?step=${encodeURIComponent(h.step)}`}>${short(h.run.id)}</a> ${h.run.plan_name}</td>
        <td>${h.reason || ""}</td>
        <td>${h.task ? html`<a href=${`/api/tasks/${h.task}/log`} target="_blank" rel="noopener">log</a>` : "—"}</td></tr>`)}</tbody>
    </table></div>`}
  </div>`;
}

// Horizontal lines for thresholds on response time (`p(95)<500`, `avg<200`…).
function msThresholds(thresholds) {
  return (thresholds || [])
    .map((t) => /^\s*(p\([\d.]+\)|avg|med|max|min)\s*[<>]=?\s*([\d.]+)\s*$/.exec(t.expr))
    .filter(Boolean)
    .map((m) => ({ label: m[1], value: Number(m[2]) }));
}

// A uPlot chart that draws given series and dashed threshold lines.
function Chart({ id, series, data, lines = [], height = 240 }) {
  const box = useRef(null);
  useEffect(() => {
    let plot = null, dead = false;
    loadUplot().then((uPlot) => {
      if (dead || !box.current) return;
      const extra = lines.map((l) => ({ label: `threshold ${l.label} ${l.value}`, stroke: "#c02020", dash: [6, 4], width: 1 }));
      const all = [...data, ...lines.map((l) => data[0].map(() => l.value))];
      plot = new uPlot({ width: Math.min(960, box.current.clientWidth || 600), height, series: [{}, ...series, ...extra] }, all, box.current);
      box.current.dataset.points = data[0].length;
    });
    return () => { dead = true; plot && plot.destroy(); };
  }, [JSON.stringify(data), JSON.stringify(lines)]);
  return html`<div ref=${box} class="chart" id=${id}></div>`;
}

function PerfReport({ id }) {
  const { data: r, error } = usePoll(() => api("GET", `/api/performance/reports/${encodeURIComponent(id)}/`), [id], 60000);
  if (!r) return html`<section><${ErrorBox} error=${error} /><p>Loading report…</p></section>`;
  const rt = r.metrics.response_times, sys = r.metrics.system_metrics;
  const pc = rt.percentiles || {};
  // Each load agent's CPU and memory when the report has them (reports
  // from before that carry the average only).
  const n = Math.min(sys.cpu.length, rt.timestamps.length);
  const names = Object.keys(sys.agents || {});
  const palette = ["#2060c0", "#208040", "#b05000", "#602080", "#c02020", "#008080"];
  const sysSeries = names.length
    ? names.flatMap((a, i) => [{ label: `${a} CPU %`, stroke: palette[i % palette.length], width: 2 },
      { label: `${a} memory %`, stroke: palette[i % palette.length], dash: [4, 3] }])
    : [{ label: "CPU %", stroke: "#2060c0" }, { label: "memory %", stroke: "#208040" }];
  const sysData = [rt.timestamps.slice(0, n), ...(names.length
    ? names.flatMap((a) => [sys.agents[a].cpu.slice(0, n), sys.agents[a].memory.slice(0, n)])
    : [sys.cpu.slice(0, n), sys.memory.slice(0, n)])];
  return html`<section>
    <p><a href=${`/performance/plans/${r.plan_id}`}>← Plan</a> · <a href=${`/performance/executions/${r.execution_id}?plan=${r.plan_id}`}>execution</a></p>
    <h1>Load report ${r.id} <${Status} s=${r.passed ? "passed" : "failed"} /></h1>
    <p class="muted">${fmtTime(r.start_time)} – ${fmtTime(r.end_time)} · status ${r.status} · agents ${r.agents.join(", ") || "—"}${r.lost_agents.length ? " · lost " + r.lost_agents.join(", ") : ""}</p>
    <dl class="facts" id="perf-summary">
      <dt>Requests</dt><dd>${r.summary.total_requests}</dd>
      <dt>Success rate</dt><dd>${r.summary.success_rate} %</dd>
      <dt>Errors</dt><dd>${r.summary.error_count}</dd>
      <dt>Response time</dt><dd>avg ${r.summary.avg_response_time} ms · p50 ${pc.p50} · p90 ${pc.p90} · p95 ${pc.p95} · p99 ${pc.p99} ms</dd>
    </dl>
    ${r.thresholds.length > 0 && html`<h2>Thresholds</h2><ul id="thresholds">${r.thresholds.map((t) => html`<li key=${t.expr}>
      <${Status} s=${t.passed ? "passed" : "failed"} /> <code>${t.expr}</code> (observed ${t.observed})</li>`)}</ul>`}
    <h2>Response time</h2>
    <${Chart} id="rt-chart" series=${[{ label: "response ms", stroke: "#b05000" }]} data=${[rt.timestamps, rt.values]} lines=${msThresholds(r.thresholds)} />
    ${sys.cpu.length > 0 && html`<h2>Load agents</h2>
      <${Chart} id="sys-chart" series=${sysSeries} data=${sysData} />`}
  </section>`;
}

// ---------------------------------------------------------------- app ----

const NAV = [["/agents", "Agents"], ["/groups", "Groups"], ["/runs", "Runs"], ["/plans", "Plans"], ["/tasks", "Tasks"],
  ["/performance", "Performance"], ["/reports", "Reports"], ["/results", "Results"]];

// Pages are keyed by their path: another run (agent, task…) is a fresh page
// with fresh state, not the previous one's (a finished run's stopped poll).
function route(path, query) {
  const seg = path.split("/").filter(Boolean).map(decodeURIComponent);
  switch (seg[0]) {
    case undefined: case "agents":
      return seg[1] ? html`<${Agent} key=${path} id=${seg[1]} />` : html`<${Agents} />`;
    case "runs": return seg[1] ? html`<${RunPage} key=${path} id=${seg[1]} query=${query} />` : html`<${Runs} query=${query} />`;
    case "tasks": return seg[1] && seg[1] !== "new" ? html`<${TaskPage} key=${path} id=${seg[1]} />` : html`<${NewTask} />`;
    case "plans": return seg[1] ? html`<${PlanPage} key=${path} id=${seg[1]} />` : html`<${Plans} />`;
    case "reports":
      if (seg[1] && seg[2] === "compare" && seg[3]) return html`<${Report} key=${path} id=${seg[1]} other=${seg[3]} />`;
      if (seg[1] && seg[2] === "matrix") return html`<${KitMatrix} key=${path} id=${seg[1]} query=${query} />`;
      return seg[1] ? html`<${Report} key=${path} id=${seg[1]} />` : html`<${ReportsPage} />`;
    case "groups": return html`<${Groups} />`;
    case "results": return html`<${Results} query=${query} />`;
    case "performance":
      if (seg[1] === "executions" && seg[2]) return html`<${Execution} key=${path} id=${seg[2]} planId=${query.get("plan")} />`;
      if (seg[1] === "reports" && seg[2]) return html`<${PerfReport} key=${path} id=${seg[2]} />`;
      if (seg[1] === "plans" && seg[2]) return html`<${PerfPlan} key=${path} id=${seg[2]} />`;
      return html`<${Performance} />`;
    default: return html`<section><h1>Not found</h1><p>No console page at ${path}.</p></section>`;
  }
}

function App() {
  const { path, query } = useLocation();
  const [ready, setReady] = useState(!!session.user);
  useEffect(() => {
    if (session.user || path === "/login") { setReady(true); return; }
    api("GET", "/api/auth/me").then((u) => { session.user = u; setReady(true); }).catch(() => setReady(true));
  }, [path]);
  const signOut = useCallback(async () => {
    try { await api("DELETE", "/api/auth/session"); } finally { session.user = null; navigate("/login", true); }
  }, []);
  useEffect(() => {
    const page = path.split("/")[1] || "agents";
    document.title = `${page.charAt(0).toUpperCase() + page.slice(1)} · Testbed`;
  }, [path]);
  if (path === "/login") return html`<${Login} query=${query} />`;
  if (!ready || !session.user) return html`<p class="loading">Loading…</p>`;
  const top = "/" + (path.split("/")[1] || "agents");
  return html`<div class="shell">
    <a class="skip" href="#main">Skip to content</a>
    <header>
      <a class="brand" href="/agents">Testbed</a>
      <nav aria-label="main">${NAV.map(([href, label]) => html`<a href=${href} aria-current=${top === href ? "page" : undefined}>${label}</a>`)}</nav>
      <span class="who" id="who">${session.user.username} (${session.user.role})</span>
      <button class="link" id="sign-out" onClick=${signOut}>Sign out</button>
    </header>
    <main id="main" tabindex="-1">${route(path, query)}</main>
  </div>`;
}

// A page that throws shows the error (and the rest of the console keeps
// working) instead of leaving a blank screen.
class Boundary extends Component {
  componentDidCatch(error) {
    this.setState({ error });
  }
  render({ children }, { error }) {
    if (error) {
      return html`<section role="alert"><h1>This page failed</h1><pre class="page-error">${String(error && error.stack || error)}</pre>
        <p><a href="/agents" onClick=${() => this.setState({ error: null })}>Back to the agents</a></p></section>`;
    }
    return children;
  }
}

render(html`<${Boundary}><${App} /><//>`, document.getElementById("app"));
