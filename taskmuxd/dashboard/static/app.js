"use strict";
// The taskmux dashboard: the overview, a live event stream (server-sent events), a task's
// events, resource history (inline SVG) and log with search, and start/stop/restart.
// Text is always inserted as text (never parsed as HTML).

const state = { csrf: null, selected: null, overview: null, filter: "", refreshTimer: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

function size(n) {
  if (n === null || n === undefined) return "-";
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + "G";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + "M";
  return Math.floor(n / 1024) + "K";
}

function duration(s) {
  if (s === null || s === undefined) return "-";
  s = Math.floor(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d";
}

function lastError(t) {
  if (t.healthy === false && t.last_health_failure) return "health: " + t.last_health_failure;
  if (["backoff", "fatal", "exited"].includes(t.state) && t.last_exit && !t.completed) {
    return t.last_exit.signal ? "killed by signal " + t.last_exit.signal : "exit " + t.last_exit.code;
  }
  return "";
}

const live = (s) => ["starting", "running", "stopping"].includes(s);

async function act(action, project, task, button) {
  button.disabled = true;
  try {
    const r = await fetch("/api/action", {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-taskmux-csrf": state.csrf },
      body: JSON.stringify({ action, project, task }),
    });
    const out = await r.json();
    if (!r.ok) alert(out.error || r.status);
  } finally {
    button.disabled = false;
    scheduleRefresh(0);
  }
}

function renderOverview() {
  const root = document.getElementById("projects");
  const data = state.overview;
  if (!data) return;
  root.replaceChildren();
  let running = 0, total = 0;
  const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
  for (const p of data.projects) {
    const rows = [];
    for (const t of p.tasks) {
      total += 1;
      if (t.state === "running") running += 1;
      const hay = `${p.project} ${t.name} ${t.state} ${t.url || ""}`.toLowerCase();
      if (!words.every((w) => hay.includes(w))) continue;
      const res = t.resources || {};
      const key = `${p.project}/${t.name}`;
      const buttons = el("td", {});
      for (const a of ["start", "stop", "restart"]) {
        const b = el("button", { type: "button", "data-action": a, "data-task": key }, a);
        b.disabled = !state.csrf;
        b.title = state.csrf ? `${a} ${key}` : "read-only: run `taskmux dashboard` to act";
        b.addEventListener("click", (ev) => { ev.stopPropagation(); act(a, p.project, t.name, b); });
        buttons.append(b);
      }
      const url = t.url ? el("a", { href: t.url, target: "_blank", rel: "noopener noreferrer" }, t.url) : "-";
      const health = t.healthy === true ? "healthy" : t.healthy === false ? "unhealthy" : "-";
      const tr = el("tr", { class: "task" + (state.selected === key ? " selected" : ""), "data-task": key },
        el("td", {}, t.name),
        el("td", { class: "state state-" + t.state }, t.state),
        el("td", { class: health }, health),
        el("td", {}, live(t.state) && res.cpu != null ? res.cpu.toFixed(1) + "%" : "-"),
        el("td", {}, live(t.state) ? size(res.rss) : "-"),
        el("td", {}, String(t.restarts ?? 0)),
        el("td", {}, duration(t.uptime)),
        el("td", {}, url),
        el("td", { class: "error" }, lastError(t)),
        buttons);
      tr.addEventListener("click", () => select(p.project, t.name));
      rows.push(tr);
    }
    const head = el("tr", {}, ...["task", "state", "health", "cpu", "mem", "restarts", "uptime",
                                  "url", "last error", ""].map((h) => el("th", {}, h)));
    const title = el("h2", {}, p.project + (p.config_error ? " — config: " + p.config_error : ""));
    root.append(el("div", { class: "project", "data-project": p.project }, title,
                   el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows))));
  }
  document.getElementById("summary").textContent =
    `${running}/${total} running in ${data.projects.length} project(s)`;
}

async function refresh() {
  try {
    state.overview = await getJSON("/api/overview");
    renderOverview();
    if (state.selected) await loadDetail();
  } catch (e) {
    document.getElementById("summary").textContent = "daemon unreachable: " + e.message;
  }
}

function scheduleRefresh(delay) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, delay);
}

function chart(values, format) {
  const w = 320, h = 80;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const nums = values.map((v) => (v == null ? 0 : v));
  const max = Math.max(1e-9, ...nums);
  if (nums.length > 1) {
    const pts = nums.map((v, i) => `${(i / (nums.length - 1)) * w},${h - 4 - (v / max) * (h - 8)}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4); label.setAttribute("y", 12); label.setAttribute("font-size", 11);
  label.textContent = nums.length ? `now ${format(values[values.length - 1])}, max ${format(max)}` : "no samples yet";
  svg.append(label);
  return svg;
}

async function loadDetail() {
  const [project, task] = state.selected.split("/");
  const q = `project=${encodeURIComponent(project)}&task=${encodeURIComponent(task)}`;
  const info = await getJSON(`/api/task?${q}`);
  const hist = (info.task.resources || {}).history || { cpu: [], rss: [] };
  document.getElementById("detail-title").textContent = `${project}/${task} — ${info.task.state}`;
  document.getElementById("chart-cpu").replaceChildren(chart(hist.cpu, (v) => (v == null ? "-" : v.toFixed(1) + "%")));
  document.getElementById("chart-mem").replaceChildren(chart(hist.rss, size));
  document.getElementById("task-events").replaceChildren(
    ...info.events.slice().reverse().map((e) => el("li", {}, `${e.time}  ${e.event}  ${JSON.stringify(e.details || {})}`)));
  await loadLog();
}

async function loadLog() {
  if (!state.selected) return;
  const [project, task] = state.selected.split("/");
  const search = document.getElementById("log-search").value;
  const q = `project=${encodeURIComponent(project)}&task=${encodeURIComponent(task)}&q=${encodeURIComponent(search)}`;
  const out = await getJSON(`/api/logs?${q}`);
  const pre = document.getElementById("log");
  pre.replaceChildren();
  for (const line of out.lines) {
    if (search) {
      const at = line.toLowerCase().indexOf(search.toLowerCase());
      pre.append(line.slice(0, at), el("mark", {}, line.slice(at, at + search.length)),
                 line.slice(at + search.length) + "\n");
    } else {
      pre.append(line + "\n");
    }
  }
  pre.scrollTop = pre.scrollHeight;
}

function select(project, task) {
  state.selected = `${project}/${task}`;
  document.getElementById("detail").hidden = false;
  renderOverview();
  loadDetail();
}

function connect() {
  const badge = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { badge.textContent = "live"; badge.classList.add("on"); });
  source.addEventListener("error", () => { badge.textContent = "reconnecting"; badge.classList.remove("on"); });
  source.addEventListener("task", () => scheduleRefresh(250));
}

async function main() {
  const me = await getJSON("/api/me");
  state.csrf = me.csrf;
  document.getElementById("mode").textContent = me.session ? "session" : "read-only";
  document.getElementById("filter").addEventListener("input", (e) => {
    state.filter = e.target.value; renderOverview();
  });
  let searchTimer = null;
  document.getElementById("log-search").addEventListener("input", () => {
    clearTimeout(searchTimer); searchTimer = setTimeout(loadLog, 250);
  });
  await refresh();
  connect();
  setInterval(refresh, 5000);
}

document.addEventListener("DOMContentLoaded", main);
