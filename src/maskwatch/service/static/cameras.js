// maskwatch dashboard: one view of every camera, local (run by this server) or remote (run by an edge node,
// named node:camera): the overview with its filter by node, and each camera's page. Loaded after app.js,
// whose helpers (el, api, state, chartCard, eventGallery from events.js, ...) it uses; registers "" and camera.
"use strict";

const cameraFilter = { value: "" }; // "", "local" or "node:NAME"; kept while the dashboard is open

function cameraQuery(value) {
  if (value === "local") return "?kind=local";
  if (value.startsWith("node:")) return `?node=${encodeURIComponent(value.slice(5))}`;
  return "";
}

function cameraWhere(c) {
  return c.kind === "remote" ? `node ${c.node}${c.node_state && c.node_state !== "online" ? ` (${c.node_state})` : ""}` : "this server";
}

function filterControl(onchange) {
  const nodes = (state.console && state.console.nodes) || [];
  const select = el("select", { id: "camera-filter" }, el("option", { value: "" }, "every camera"),
    el("option", { value: "local" }, "this server"), nodes.map((n) => el("option", { value: `node:${n}` }, `node ${n}`)));
  if ([...select.options].some((o) => o.value === cameraFilter.value)) select.value = cameraFilter.value;
  else cameraFilter.value = "";
  select.addEventListener("change", () => { cameraFilter.value = select.value; onchange(); });
  return el("label", { class: "filter" }, "Cameras of ", select);
}

function setText(sel, text) { const n = $(sel); if (n) n.textContent = text; }

// -- overview: tiles that add up the camera table, the table, the chart of the cameras listed --------------
async function overview(main) {
  const mine = state.page; // this page's handlers; the router replaces it when the user moves on
  const gone = () => state.page !== mine;
  state.console = await api("/console"); // nodes may have joined since the login
  let cams = [];
  const redrawAll = async () => { await refresh(); await redrawChart(); };
  main.append(el("div", { class: "title-row" }, el("h1", {}, "Overview"), filterControl(() => redrawAll())));
  const labels = { "people-now": "people in view now", "people-today": "people today", compliance: "compliance today", alerts: "active alerts" };
  main.append(el("div", { class: "tiles" }, Object.entries(labels).map(([k, l]) =>
    el("div", { class: "tile" }, el("div", { class: "v", id: `tile-${k}` }, "–"), el("div", { class: "l" }, l)))));
  main.append(el("p", { class: "muted", id: "people-definition" },
    `People today: ${state.console.people_today}. The tiles add up the cameras listed below.`));
  main.append(el("div", { class: "card" }, el("h2", {}, "Cameras"), el("table", { id: "camera-list" })));
  const tiles = () => {
    const people = cams.reduce((a, c) => a + c.people_today, 0), ok = cams.reduce((a, c) => a + c.compliant_today, 0);
    setText("#tile-people-today", people); setText("#tile-compliance", pct(people ? ok / people : null));
    setText("#tile-people-now", cams.reduce((a, c) => a + c.present, 0));
  };
  const refresh = async () => {
    const [o, list] = await Promise.all([api("/overview"), api(`/cameras${cameraQuery(cameraFilter.value)}`)]);
    if (gone()) return; // the user moved to another page while this was loading
    cams = list;
    setText("#tile-alerts", o.alerts_firing);
    $("#camera-list").replaceChildren(el("tr", {}, ["camera", "where", "state", "people now", "people today", "compliance today", "FPS", "lag p95 (s)"].map((h) => el("th", {}, h))),
      ...(cams.length ? cams.map((c) => el("tr", { "data-camera": c.name, "data-kind": c.kind },
        el("td", {}, el("a", { href: `#/camera/${encodeURIComponent(c.name)}` }, c.name)), el("td", { class: "where" }, cameraWhere(c)),
        el("td", { class: `st state-${c.state}`, title: c.reason || "" }, c.state), el("td", { class: "present" }, c.present),
        el("td", { class: "people" }, c.people_today), el("td", { class: "compliance" }, pct(c.compliance_today)),
        el("td", { class: "fps" }, num(c.fps)), el("td", { class: "lag" }, num(c.lag_p95, 2))))
        : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No camera here yet."))]));
    tiles();
  };
  await refresh();
  main.append(await chartCard(cams.map((c) => c.name)));
  // the chart follows the stored buckets: redrawn when a stats bucket arrives (at most every 5 s) and at
  // least every 30 s (polled, in case the event stream is down)
  let busy = false, charting = false, chartAt = Date.now(), redraws = 0;
  async function redrawChart() {
    if (charting) return;
    charting = true; chartAt = Date.now();
    try {
      const card = await chartCard(cams.map((c) => c.name));
      if (gone()) return;
      card.dataset.redraws = String(++redraws);
      const old = $("#chart"); if (old) old.replaceWith(card);
    } finally { charting = false; }
  }
  const poll = setInterval(() => { if (gone()) { clearInterval(poll); return; } if (Date.now() - chartAt >= 30000) redrawChart(); }, 5000);
  state.page.onLive = (live) => { // state, people in view, FPS, lag of each listed camera, every second
    if (gone()) return;
    setText("#tile-alerts", live.alerts_firing);
    for (const c of cams) {
      const now = live.cameras[c.name];
      const row = document.querySelector(`#camera-list tr[data-camera="${CSS.escape(c.name)}"]`);
      if (!now || !row) continue;
      const st = c.kind === "local" && !c.enabled ? "disabled" : now.state;
      c.present = now.present; c.state = st;
      row.querySelector(".present").textContent = now.present;
      row.querySelector(".fps").textContent = st === "live" ? num(now.fps_now ?? now.fps) : "–";
      row.querySelector(".lag").textContent = st === "live" ? num(now.lag_now ?? now.lag_p95, 2) : "–";
      const cell = row.querySelector(".st"); cell.textContent = st; cell.className = `st state-${st}`;
    }
    tiles();
  };
  state.page.onEvent = async (type) => {
    if (!["stats", "source_status"].includes(type)) return;
    if (!busy) { busy = true; try { await refresh(); } finally { busy = false; } } // people today: from buckets
    if (type === "stats" && Date.now() - chartAt >= 5000) await redrawChart();
  };
}

// -- a camera's page: its frame (live here, or asked from its node), chart, people, alerts ---------------
async function remoteFrame(name) {
  const img = $("#remote-frame"), status = $("#frame-status");
  status.textContent = "asking the node…"; status.className = "muted";
  const r = await fetch(`${API}/cameras/${encodeURIComponent(name)}/latest.jpg`, { credentials: "same-origin" });
  if (!r.ok) {
    const body = (r.headers.get("content-type") || "").includes("json") ? await r.json() : {};
    img.hidden = true; img.removeAttribute("src");
    status.textContent = body.detail || `HTTP ${r.status}`; status.className = "error"; status.dataset.code = body.error || "";
    return;
  }
  const blob = await r.blob();
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob); img.hidden = false;
  status.textContent = `received ${new Date().toLocaleTimeString()} · every face blurred on the node`; status.className = "muted"; status.dataset.code = "ok";
}

function alertTable(items) {
  return el("table", { id: "camera-alerts" }, el("tr", {}, ["state", "rule", "message", "since"].map((h) => el("th", {}, h))),
    ...(items.length ? items.map((a) => el("tr", { "data-alert": a.id }, el("td", { class: a.state }, a.state), el("td", {}, a.rule), el("td", {}, a.message), el("td", {}, when(a.started))))
      : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No alert on this camera."))]));
}

async function cameraPage(main, name) {
  const c = await api(`/cameras/${encodeURIComponent(name)}`);
  const q = encodeURIComponent(name);
  main.append(el("h1", {}, `Camera ${c.name}`),
    el("p", {}, el("span", { id: "camera-kind", class: `kind-${c.kind}` }, c.kind === "remote" ? `remote · node ${c.node} (${c.node_state || "unknown"})` : "this server"), " · ",
      el("span", { id: "camera-state", class: `state-${c.state}` }, `${c.state}${c.reason ? ` (${c.reason})` : ""}`), " · ",
      el("span", { id: "camera-people" }, `${c.people_today} people today, compliance ${pct(c.compliance_today)}`)));
  if (c.kind === "remote") {
    main.append(el("div", { class: "card", id: "frame-card" }, el("h2", {}, `Latest frame (asked from node ${c.node})`),
      el("p", { id: "frame-status", class: "muted" }), el("img", { class: "live", id: "remote-frame", alt: `latest frame of ${c.name}, faces blurred`, hidden: true }),
      el("p", {}, el("button", { id: "frame-refresh", onclick: () => remoteFrame(name) }, "Ask again"))));
    remoteFrame(name);
  } else {
    main.append(el("div", { class: "card" }, el("h2", {}, "Live (faces blurred)"),
      el("img", { class: "live", id: "live-view", alt: `live view of ${c.name}`, src: `${API}/cameras/${q}/live.mjpeg?fps=3` })));
    if (typeof zoneCard === "function") main.append(zoneCard(c)); // zones.js: the privacy zone editor
  }
  main.append(await chartCard([name], 6));
  const [events, alerts] = await Promise.all([api(`/events?camera=${q}&limit=20`), api(`/alerts?camera=${q}&limit=20`)]);
  main.append(el("div", { class: "card" }, el("h2", {}, "Alerts"), alertTable(alerts.items)));
  main.append(el("div", { class: "card" }, el("h2", {}, "Recent people"), snapshotsNote(c), eventGallery(events.items)));
  state.page.onEvent = (type, data) => {
    const p = $("#camera-state");
    if (p && type === "source_status" && data.source === name) { p.textContent = `${data.state}${data.reason ? ` (${data.reason})` : ""}`; p.className = `state-${data.state}`; }
  };
}

PAGES[""] = overview;
PAGES.camera = cameraPage;
