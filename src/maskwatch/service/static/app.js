// maskwatch dashboard: plain JS, no CDN, no build step. Talks to /api/v1 with the session cookie and the
// CSRF header; live numbers come from the server-sent event stream (/api/v1/stream).
// This file: helpers, login, the router, the chart, the upload and settings pages. The pages of the camera
// view (cameras.js), events (events.js), alerts and rules (alerts.js) and the fleet (fleet.js) are loaded
// after it and register themselves in PAGES.
"use strict";
const API = "/api/v1";
const $ = (sel, root = document) => root.querySelector(sel);
const state = { me: null, console: null, source: null, live: {}, page: null, tz: "UTC" }; // tz: the site's (GET /site)
const COLORS = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04", "#475569"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c.nodeType ? c : String(c));
  return node;
}
const svgEl = (tag, attrs = {}) => {
  const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  return n;
};
const pct = (v) => (v === null || v === undefined ? "–" : `${Math.round(v * 100)} %`);
const num = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
// times are shown in the site's time zone (site.timezone on the server), never the browser's
const when = (t) => (t ? new Date(typeof t === "number" ? t * 1000 : t).toLocaleString(undefined, { timeZone: state.tz }) : "–");
function csrf() { const m = document.cookie.match(/(?:^|; )mw_csrf=([^;]+)/); return m ? decodeURIComponent(m[1]) : ""; }

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (opts.method && opts.method !== "GET") headers["X-CSRF-Token"] = csrf();
  let body = opts.body;
  if (body && !(body instanceof FormData) && typeof body !== "string") {
    headers["Content-Type"] = "application/json"; body = JSON.stringify(body);
  }
  const r = await fetch(API + path, { method: opts.method || "GET", headers, body, credentials: "same-origin" });
  if (r.status === 401 && path !== "/auth/me") { showLogin(); throw new Error("log in first"); }
  if (r.status === 204) return null;
  const data = (r.headers.get("content-type") || "").includes("json") ? await r.json() : await r.text();
  if (!r.ok) { // every error is {status, error, detail}
    const err = new Error((data && data.detail) || `HTTP ${r.status}`);
    err.status = r.status; err.code = data && data.error;
    throw err;
  }
  return data;
}

// -- roles: what the caller may do (GET /console); controls it may not use are disabled with the reason ----
function can(action) { const a = state.console && state.console.actions[action]; return !!(a && a.allowed); }
function whyNot(action) { const a = state.console && state.console.actions[action]; return a && !a.allowed ? a.reason : null; }
// a button for an action: enabled when the role allows it, else disabled with the reason (title and a note)
function actionButton(action, label, attrs, onclick) {
  if (can(action)) return el("button", Object.assign({}, attrs, { onclick }), label);
  return el("button", Object.assign({}, attrs, { disabled: true, title: whyNot(action), "data-needs": state.console.actions[action].needs }), label);
}
// a form control with its label always visible (a placeholder is no label: it goes when one types)
function field(label, input) { return el("label", { class: "field" }, el("span", {}, label), input); }
function roleNote(action) { return can(action) ? null : el("p", { class: "muted role-note" }, `${whyNot(action)}.`); }
function gateNav() {
  for (const a of document.querySelectorAll("#nav a[data-action]")) {
    const action = a.dataset.action;
    a.classList.toggle("disabled", !can(action));
    if (can(action)) a.removeAttribute("title"); else a.title = whyNot(action);
  }
}

// -- login ---------------------------------------------------------------------------------------------
function showLogin() {
  $("#login").hidden = false; $("#main").hidden = true; $("#nav").hidden = true; $("#logout").hidden = true;
}
async function start() {
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("/auth/login", { method: "POST", body: { token: $("#token").value } });
      $("#token").value = ""; $("#login-error").textContent = ""; await boot();
    } catch (err) { $("#login-error").textContent = err.message; }
  });
  $("#logout").addEventListener("click", async () => { await api("/auth/logout", { method: "POST" }); location.hash = "#/"; showLogin(); });
  window.addEventListener("hashchange", route);
  await boot();
}
async function boot() {
  if (!csrf()) { showLogin(); return; } // no session cookie yet: nothing to ask the server
  const r = await fetch(API + "/auth/me", { credentials: "same-origin" });
  if (!r.ok) { showLogin(); return; }
  state.me = await r.json();
  state.console = await api("/console");
  try { state.tz = (await api("/site")).timezone; } catch (err) { state.tz = "UTC"; }
  $("#login").hidden = true; $("#main").hidden = false; $("#nav").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = `${state.me.name} (${state.me.role})`;
  gateNav(); connect(); route();
}

// -- live stream ---------------------------------------------------------------------------------------
function connect() {
  if (state.source) return;
  const es = new EventSource(API + "/stream");
  state.source = es;
  es.addEventListener("live", (m) => { state.live = JSON.parse(m.data); if (state.page && state.page.onLive) state.page.onLive(state.live); });
  for (const t of ["track_ended", "stats", "source_status", "alert"]) {
    es.addEventListener(t, (m) => { if (state.page && state.page.onEvent) state.page.onEvent(t, JSON.parse(m.data)); });
  }
  es.onerror = () => {}; // EventSource reconnects by itself
}

// -- router --------------------------------------------------------------------------------------------
const PAGES = { upload: uploadPage, settings: settingsPage }; // and those the other files register
async function route() {
  if (!state.me) return;
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  const main = $("#main"); main.replaceChildren();
  const page = PAGES[name] || PAGES[""];
  state.page = {};
  try { await page(main, arg ? decodeURIComponent(arg) : null); } catch (err) { main.append(el("p", { class: "error" }, err.message)); }
}

// -- chart: compliance line (0..100 %) with people bars under it --------------------------------------
function chart(series, { from, to }) {
  const W = 1000, H = 220, top = 10, mid = 140, bottom = 200, left = 40;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  const x = (t) => left + ((t - from) / Math.max(1, to - from)) * (W - left - 10);
  for (const p of [0, 50, 100]) {
    const y = mid - (p / 100) * (mid - top);
    svg.append(svgEl("line", { x1: left, x2: W - 10, y1: y, y2: y, stroke: "#e5e9f0" }));
    const label = svgEl("text", { x: 4, y: y + 4, "font-size": 11, fill: "#5b6577" }); label.textContent = `${p}%`; svg.append(label);
  }
  const maxPeople = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p.n_people)));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => p.compliance !== null).map((p) => `${x(p.t).toFixed(1)},${(mid - p.compliance * (mid - top)).toFixed(1)}`);
    if (pts.length > 1) svg.append(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2, "data-camera": s.camera }));
    else if (pts.length === 1) { const [cx, cy] = pts[0].split(","); svg.append(svgEl("circle", { cx, cy, r: 4, fill: color, "data-camera": s.camera })); } // a line needs two buckets
    for (const p of s.points) {
      const h = (p.n_people / maxPeople) * (bottom - mid - 10);
      svg.append(svgEl("rect", { x: x(p.t) + i * 3, y: bottom - h, width: 3, height: h, fill: color, opacity: 0.7 }));
    }
  });
  const cap = svgEl("text", { x: left, y: H - 4, "font-size": 11, fill: "#5b6577" });
  cap.textContent = `people per bucket (max ${maxPeople}) · ${when(from)} → ${when(to)} (${state.tz})`;
  svg.append(cap);
  return svg;
}
// cameras: the cameras to draw (the chart never shows a camera that is not listed: a deleted one leaves it)
async function chartCard(cameras, hours = 6) {
  const to = Date.now() / 1000, from = to - hours * 3600;
  const q = new URLSearchParams({ bucket: hours > 48 ? "1h" : "1m", from: new Date(from * 1000).toISOString(), to: new Date(to * 1000).toISOString() });
  if (!cameras.length) return el("div", { class: "card", id: "chart" }, el("h2", {}, `Compliance over time (last ${hours} h)`), el("p", { class: "muted" }, "No camera to draw."));
  for (const c of cameras) q.append("camera", c);
  const data = await api(`/stats/compliance?${q}&format=columns`); // an array per field: a fifth of the bytes
  const series = data.cameras.map((s) => ({ camera: s.camera, points: s.t.map((t, k) => ({ t, n_people: s.n_people[k], compliance: s.n_people[k] ? s.compliant_people[k] / s.n_people[k] : null })) }));
  const legend = el("div", { class: "legend" }, data.cameras.map((s, i) => el("span", { "data-camera": s.camera }, el("b", { class: "swatch" }, "■ "), s.camera)));
  legend.querySelectorAll("b").forEach((b, i) => { b.style.color = COLORS[i % COLORS.length]; });
  return el("div", { class: "card", id: "chart" }, el("h2", {}, `Compliance over time (last ${hours} h)`), chart(series, { from, to }), legend,
    el("p", { class: "muted" }, `total: ${data.total.n_people} people, compliance ${pct(data.total.compliance)} · `,
      el("a", { href: `${API}/stats/compliance?${q}&format=csv` }, "CSV")));
}

// -- pages ---------------------------------------------------------------------------------------------
async function uploadPage(main) {
  main.append(el("h1", {}, "Upload an image"));
  if (!can("upload")) { main.append(el("p", { class: "error", id: "upload-refused" }, `${whyNot("upload")}.`)); return; }
  const input = el("input", { type: "file", id: "file", accept: "image/*" });
  const out = el("div", { class: "result", id: "result" });
  const send = async (file) => {
    out.replaceChildren(el("p", { class: "muted" }, "analysing…"));
    const fd = new FormData(); fd.append("file", file); fd.append("annotated", "true");
    try {
      const r = await api("/infer?annotated=true", { method: "POST", body: fd });
      out.replaceChildren(el("p", { id: "counts" }, `${r.n_faces} face(s): ${Object.entries(r.counts).map(([k, v]) => `${k} ${v}`).join(", ")} · compliance ${pct(r.compliance)} · ${r.timings.total_ms} ms`),
        el("img", { src: r.image, alt: "annotated result, faces blurred" }));
    } catch (err) { out.replaceChildren(el("p", { class: "error" }, err.message)); }
  };
  input.addEventListener("change", () => input.files[0] && send(input.files[0]));
  const drop = el("div", { id: "drop" }, "Drop an image here, or ", input);
  drop.addEventListener("dragover", (e) => e.preventDefault());
  drop.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]); });
  main.append(drop, out);
}

async function settingsPage(main) {
  main.append(el("h1", {}, "Settings"));
  const table = el("table", { id: "settings-cameras" });
  const load = async () => {
    const cams = await api("/cameras");
    table.replaceChildren(el("tr", {}, ["camera", "source", "state", ""].map((h) => el("th", {}, h))),
      ...cams.map((c) => el("tr", { "data-camera": c.name }, el("td", {}, c.name), el("td", {}, c.kind === "remote" ? `on node ${c.node}` : c.url ?? "(admins only)"), el("td", { class: `state-${c.state}` }, c.state),
        el("td", {}, c.kind === "remote" ? el("span", { class: "muted" }, `managed on node ${c.node}`) : [
          actionButton("cameras", c.enabled ? "Disable" : "Enable", {}, async () => { await api(`/cameras/${encodeURIComponent(c.name)}/${c.enabled ? "disable" : "enable"}`, { method: "POST" }); load(); }), " ",
          actionButton("cameras", "Remove", { class: "remove" }, async () => { await api(`/cameras/${encodeURIComponent(c.name)}`, { method: "DELETE" }); load(); })]))));
  };
  main.append(el("div", { class: "card" }, el("h2", {}, "Cameras"), table, roleNote("cameras")));
  await load();
  if (!can("cameras")) return;
  const err = el("p", { class: "error", id: "camera-error" });
  const form = el("form", { class: "fields", id: "camera-form" }, field("Name", el("input", { name: "name", required: true })),
    field("Source", el("input", { name: "url", placeholder: "rtsp://… or a video file", required: true, size: 40 })),
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "realtime" }), " play file in real time"), el("label", { class: "check" }, el("input", { type: "checkbox", name: "loop" }), " loop"),
    el("div", { class: "actions" }, el("button", {}, "Add camera")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    try {
      await api("/cameras", { method: "POST", body: { name: f.get("name"), url: f.get("url"), realtime: f.get("realtime") === "on", loop: f.get("loop") === "on" } });
      form.reset(); err.textContent = ""; load();
    } catch (x) { err.textContent = x.message; }
  });
  main.append(el("div", { class: "card" }, el("h2", {}, "Add a camera"), form, err));
  const tokens = el("table", { id: "token-list" });
  const loadTokens = async () => {
    const list = await api("/tokens");
    tokens.replaceChildren(el("tr", {}, ["name", "role", "prefix", "created", ""].map((h) => el("th", {}, h))),
      ...list.filter((t) => !t.revoked).map((t) => el("tr", {}, el("td", {}, t.name), el("td", {}, t.role), el("td", {}, `${t.prefix}…`), el("td", {}, when(t.created)),
        el("td", {}, el("button", { onclick: async () => { try { await api(`/tokens/${t.id}`, { method: "DELETE" }); loadTokens(); } catch (x) { alert(x.message); } } }, "Revoke")))));
  };
  const made = el("p", { id: "new-token" });
  const tform = el("form", { class: "fields", id: "token-form" }, field("Token name", el("input", { name: "name", required: true })),
    field("Role", el("select", { name: "role" }, ["viewer", "operator", "admin"].map((r) => el("option", { value: r }, r)))), el("div", { class: "actions" }, el("button", {}, "Make token")));
  tform.addEventListener("submit", async (e) => {
    e.preventDefault(); const f = new FormData(tform);
    const t = await api("/tokens", { method: "POST", body: { name: f.get("name"), role: f.get("role") } });
    made.replaceChildren("New token (shown once): ", el("code", {}, t.token)); tform.reset(); loadTokens();
  });
  main.append(el("div", { class: "card" }, el("h2", {}, "API tokens"), tokens, tform, made));
  await loadTokens();
}

start();
