// maskwatch dashboard: plain JS, no CDN, no build step. Talks to /api/v1 with the session cookie and the
// CSRF header; live numbers come from the server-sent event stream (/api/v1/stream).
"use strict";
const API = "/api/v1";
const $ = (sel, root = document) => root.querySelector(sel);
const state = { me: null, source: null, live: {}, page: null };
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
const when = (t) => (t ? new Date(typeof t === "number" ? t * 1000 : t).toLocaleString() : "–");
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
  if (!r.ok) throw new Error((data && data.detail) || `HTTP ${r.status}`);
  return data;
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
  $("#login").hidden = true; $("#main").hidden = false; $("#nav").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = `${state.me.name} (${state.me.role})`;
  connect(); route();
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
const PAGES = { "": overview, events: eventsPage, alerts: alertsPage, upload: uploadPage, settings: settingsPage, camera: cameraPage };
async function route() {
  if (!state.me) return;
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  const main = $("#main"); main.replaceChildren();
  const page = PAGES[name] || overview;
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
  cap.textContent = `people per bucket (max ${maxPeople}) · ${new Date(from * 1000).toLocaleString()} → ${new Date(to * 1000).toLocaleString()}`;
  svg.append(cap);
  return svg;
}
async function chartCard(cameras, hours = 6) {
  const to = Date.now() / 1000, from = to - hours * 3600;
  const q = new URLSearchParams({ bucket: hours > 48 ? "1h" : "1m", from: new Date(from * 1000).toISOString(), to: new Date(to * 1000).toISOString() });
  for (const c of cameras || []) q.append("camera", c);
  const data = await api(`/stats/compliance?${q}&format=columns`); // an array per field: a fifth of the bytes
  const series = data.cameras.map((s) => ({ camera: s.camera, points: s.t.map((t, k) => ({ t, n_people: s.n_people[k], compliance: s.n_people[k] ? s.compliant_people[k] / s.n_people[k] : null })) }));
  const legend = el("div", { class: "legend" }, data.cameras.map((s, i) => el("span", {}, el("b", { class: "swatch" }, "■ "), s.camera)));
  legend.querySelectorAll("b").forEach((b, i) => { b.style.color = COLORS[i % COLORS.length]; });
  return el("div", { class: "card", id: "chart" }, el("h2", {}, `Compliance over time (last ${hours} h)`), chart(series, { from, to }), legend,
    el("p", { class: "muted" }, `total: ${data.total.n_people} people, compliance ${pct(data.total.compliance)} · `,
      el("a", { href: `${API}/stats/compliance?${q}&format=csv` }, "CSV")));
}

// -- pages ---------------------------------------------------------------------------------------------
async function overview(main) {
  const mine = state.page; // this page's handlers; the router replaces it when the user moves on
  const gone = () => state.page !== mine;
  main.append(el("h1", {}, "Overview"));
  const tiles = el("div", { class: "tiles" },
    ["people-now", "people-today", "compliance", "alerts"].map((k) => el("div", { class: "tile" }, el("div", { class: "v", id: `tile-${k}` }, "–"),
      el("div", { class: "l" }, { "people-now": "people now", "people-today": "people today", compliance: "compliance today", alerts: "active alerts" }[k]))));
  main.append(tiles);
  const list = el("div", { class: "card" }, el("h2", {}, "Cameras"), el("table", { id: "camera-list" }));
  main.append(list);
  const refresh = async () => {
    const o = await api("/overview");
    const cams = await api("/cameras");
    if (gone()) return; // the user moved to another page while this was loading
    $("#tile-people-now").textContent = o.people_now; $("#tile-people-today").textContent = o.people_today;
    $("#tile-compliance").textContent = pct(o.compliance_today); $("#tile-alerts").textContent = o.alerts_firing;
    $("#camera-list").replaceChildren(el("tr", {}, ["camera", "state", "people now", "FPS", "lag p95 (s)", "people since start"].map((h) => el("th", {}, h))),
      ...cams.map((c) => el("tr", { "data-camera": c.name }, el("td", {}, el("a", { href: `#/camera/${encodeURIComponent(c.name)}` }, c.name)),
        el("td", { class: `st state-${c.state}` }, c.state), el("td", { class: "present" }, (o.cameras[c.name] || {}).present ?? 0),
        el("td", { class: "fps" }, num(c.fps)), el("td", { class: "lag" }, num(c.lag_p95, 2)), el("td", { class: "people" }, c.people_since_start))));
  };
  await refresh();
  main.append(await chartCard(null));
  // the chart follows the stored buckets: redrawn when a stats bucket arrives (at most every 5 s) and at
  // least every 30 s (polled, in case the event stream is down)
  let busy = false, charting = false, chartAt = Date.now(), redraws = 0;
  const redrawChart = async () => {
    if (charting) return;
    charting = true; chartAt = Date.now();
    try {
      const card = await chartCard(null);
      if (gone()) return;
      card.dataset.redraws = String(++redraws);
      const old = $("#chart"); if (old) old.replaceWith(card);
    } finally { charting = false; }
  };
  const page = state.page;
  const poll = setInterval(() => { if (state.page !== page) { clearInterval(poll); return; } if (Date.now() - chartAt >= 30000) redrawChart(); }, 5000);
  state.page.onLive = async (live) => {
    if (gone()) return;
    $("#tile-people-now").textContent = Object.values(live.cameras).reduce((a, c) => a + (c.present || 0), 0);
    $("#tile-alerts").textContent = live.alerts_firing;
    for (const [name, c] of Object.entries(live.cameras)) {
      const row = document.querySelector(`#camera-list tr[data-camera="${CSS.escape(name)}"]`);
      if (row) {
        row.querySelector(".present").textContent = c.present; row.querySelector(".people").textContent = c.people_since_start;
        row.querySelector(".fps").textContent = num(c.fps_now ?? c.fps); row.querySelector(".lag").textContent = num(c.lag_now ?? c.lag_p95, 2);
        const st = row.querySelector(".st"); st.textContent = c.state; st.className = `st state-${c.state}`;
      }
    }
  };
  state.page.onEvent = async (type) => {
    if (type !== "stats") return;
    if (!busy) { busy = true; try { await refresh(); } finally { busy = false; } }
    if (Date.now() - chartAt >= 5000) await redrawChart();
  };
}

async function cameraPage(main, name) {
  const c = await api(`/cameras/${encodeURIComponent(name)}`);
  main.append(el("h1", {}, `Camera ${c.name}`), el("p", { id: "camera-state", class: `state-${c.state}` }, `${c.state}${c.reason ? ` (${c.reason})` : ""}`));
  main.append(el("div", { class: "card" }, el("h2", {}, "Live (faces blurred)"),
    el("img", { class: "live", id: "live-view", alt: `live view of ${c.name}`, src: `${API}/cameras/${encodeURIComponent(name)}/live.mjpeg?fps=3` })));
  if (typeof zoneCard === "function") main.append(zoneCard(c)); // zones.js: the privacy zone editor
  main.append(await chartCard([name], 6));
  const events = await api(`/events?camera=${encodeURIComponent(name)}&limit=20`);
  main.append(el("div", { class: "card" }, el("h2", {}, "Recent people"), eventGallery(events.items)));
  state.page.onEvent = (type, data) => { const p = $("#camera-state"); if (p && type === "source_status" && data.source === name) { p.textContent = data.state; p.className = `state-${data.state}`; } };
}

function eventGallery(items) {
  return el("div", { class: "gallery", id: "events" }, items.length ? items.map((e) => el("div", { class: `ev ${e.compliant ? "good" : "bad"}`, "data-id": e.id },
    e.has_snapshot ? el("img", { class: "snap", loading: "lazy", alt: `person ${e.id} (faces blurred)`, src: `${API}/events/${e.id}/snapshot` }) : null,
    el("b", {}, e.label), ` ${pct(e.probability)}`, el("div", { class: "muted" }, `${e.camera} · ${when(e.time)} · ${e.n_frames} frames`),
    e.false_positive ? el("div", { class: "muted" }, "marked false positive") :
      (state.me.role !== "viewer" ? el("button", { class: "fp", onclick: async (ev) => { await api(`/events/${e.id}/false-positive`, { method: "POST" }); ev.target.replaceWith("marked false positive"); } }, "false positive") : null)))
    : el("p", { class: "muted" }, "No people yet."));
}

async function eventsPage(main) {
  main.append(el("h1", {}, "Events"));
  const cams = await api("/cameras");
  const form = el("form", { class: "inline", id: "event-filter" },
    el("select", { name: "camera" }, el("option", { value: "" }, "all cameras"), cams.map((c) => el("option", { value: c.name }, c.name))),
    el("select", { name: "verdict" }, el("option", { value: "" }, "any verdict"), el("option", { value: "compliant" }, "compliant"), el("option", { value: "noncompliant" }, "not compliant")),
    el("button", {}, "Filter"));
  const holder = el("div");
  let cursor = null;
  const more = el("button", { id: "more", hidden: true }, "More");
  const load = async (reset) => {
    const q = new URLSearchParams({ limit: 30 });
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    if (!reset && cursor) q.set("cursor", cursor);
    const page = await api(`/events?${q}`);
    if (reset) holder.replaceChildren();
    holder.append(eventGallery(page.items)); cursor = page.next_cursor; more.hidden = !cursor;
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(true); });
  more.addEventListener("click", () => load(false));
  main.append(form, holder, more);
  await load(true);
}

async function alertsPage(main) {
  main.append(el("h1", {}, "Alerts"));
  const list = el("table", { id: "alert-list" });
  const refresh = async () => {
    const data = await api("/alerts?limit=100");
    list.replaceChildren(el("tr", {}, ["state", "rule", "camera", "message", "since", ""].map((h) => el("th", {}, h))),
      ...data.items.map((a) => el("tr", { "data-alert": a.id }, el("td", { class: a.state }, a.state), el("td", {}, a.rule), el("td", {}, a.camera),
        el("td", {}, a.message), el("td", {}, when(a.started)),
        el("td", {}, a.acknowledged_by ? `ack by ${a.acknowledged_by}` : (state.me.role === "viewer" ? "" :
          el("button", { class: "ack", onclick: async () => { await api(`/alerts/${a.id}/ack`, { method: "POST" }); refresh(); } }, "Acknowledge"))))));
  };
  main.append(el("div", { class: "card" }, list));
  await refresh();
  state.page.onEvent = (type) => { if (type === "alert") refresh(); };
  main.append(el("h2", {}, "Rules"));
  const rules = el("table", { id: "rule-list" });
  const loadRules = async () => {
    const data = await api("/alert-rules");
    rules.replaceChildren(el("tr", {}, ["name", "kind", "camera", "threshold", "min people", "window (s)", "enabled", ""].map((h) => el("th", {}, h))),
      ...data.map((r) => el("tr", {}, el("td", {}, r.name), el("td", {}, r.kind), el("td", {}, r.camera || "all"), el("td", {}, r.threshold ?? "–"),
        el("td", {}, r.min_people), el("td", {}, r.window_s), el("td", {}, r.enabled ? "yes" : "no"),
        el("td", {}, state.me.role === "admin" ? el("button", { onclick: async () => { await api(`/alert-rules/${r.id}`, { method: "DELETE" }); loadRules(); } }, "Delete") : ""))));
  };
  main.append(el("div", { class: "card" }, rules));
  await loadRules();
  if (state.me.role === "admin") {
    const err = el("p", { class: "error" });
    const form = el("form", { class: "inline", id: "rule-form" },
      el("input", { name: "name", placeholder: "name", required: true }),
      el("select", { name: "kind" }, ["compliance_below", "unmasked_person", "camera_offline", "camera_lagging", "node_offline"].map((k) => el("option", { value: k }, k))),
      el("input", { name: "camera", placeholder: "camera (empty: all)" }), el("input", { name: "threshold", placeholder: "threshold", type: "number", step: "any" }),
      el("input", { name: "min_people", placeholder: "min people", type: "number", value: 5 }), el("input", { name: "window_s", placeholder: "window s", type: "number", value: 600 }),
      el("input", { name: "for_s", placeholder: "for s", type: "number", value: 60 }), el("button", {}, "Add rule"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = {};
      for (const [k, v] of new FormData(form)) if (v !== "") body[k] = ["threshold", "min_people", "window_s", "for_s"].includes(k) ? Number(v) : v;
      try { await api("/alert-rules", { method: "POST", body }); form.reset(); err.textContent = ""; loadRules(); } catch (x) { err.textContent = x.message; }
    });
    main.append(el("div", { class: "card" }, el("h2", {}, "Add a rule"), form, err));
  }
}

async function uploadPage(main) {
  main.append(el("h1", {}, "Upload an image"));
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
      ...cams.map((c) => el("tr", { "data-camera": c.name }, el("td", {}, c.name), el("td", {}, c.url ?? "(admins only)"), el("td", { class: `state-${c.state}` }, c.state),
        el("td", {}, state.me.role === "admin" ? [
          el("button", { onclick: async () => { await api(`/cameras/${encodeURIComponent(c.name)}/${c.enabled ? "disable" : "enable"}`, { method: "POST" }); load(); } }, c.enabled ? "Disable" : "Enable"), " ",
          el("button", { onclick: async () => { await api(`/cameras/${encodeURIComponent(c.name)}`, { method: "DELETE" }); load(); } }, "Remove")] : ""))));
  };
  main.append(el("div", { class: "card" }, el("h2", {}, "Cameras"), table));
  await load();
  if (state.me.role !== "admin") return;
  const err = el("p", { class: "error", id: "camera-error" });
  const form = el("form", { class: "inline", id: "camera-form" }, el("input", { name: "name", placeholder: "name", required: true }),
    el("input", { name: "url", placeholder: "rtsp://… or a video file", required: true, size: 40 }),
    el("label", {}, el("input", { type: "checkbox", name: "realtime" }), " play file in real time"), el("label", {}, el("input", { type: "checkbox", name: "loop" }), " loop"),
    el("button", {}, "Add camera"));
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
  const tform = el("form", { class: "inline", id: "token-form" }, el("input", { name: "name", placeholder: "token name", required: true }),
    el("select", { name: "role" }, ["viewer", "operator", "admin"].map((r) => el("option", { value: r }, r))), el("button", {}, "Make token"));
  tform.addEventListener("submit", async (e) => {
    e.preventDefault(); const f = new FormData(tform);
    const t = await api("/tokens", { method: "POST", body: { name: f.get("name"), role: f.get("role") } });
    made.replaceChildren("New token (shown once): ", el("code", {}, t.token)); tform.reset(); loadTokens();
  });
  main.append(el("div", { class: "card" }, el("h2", {}, "API tokens"), tokens, tform, made));
  await loadTokens();
}

start();
