// maskwatch dashboard: the fleet page (edge nodes over MQTT, GET /api/v1/fleet) and its dead letters (what
// the control room could not store, GET /api/v1/dead-letters, operators). Loaded after app.js, whose helpers
// (el, api, state, pct, num, when) it uses; it registers itself in app.js's router as #/fleet.
"use strict";

const ago = (t) => {
  if (!t) return "–";
  const s = Math.max(0, Date.now() / 1000 - t);
  return s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : when(t);
};

function fleetRows(node) {
  const head = el("tr", { class: "node", "data-node": node.name },
    el("td", {}, el("b", {}, node.name)), el("td", { class: `st state-${node.state}` }, node.state),
    el("td", { class: "muted" }, node.state === "offline" && node.reason ? `${ago(node.since)} · ${node.reason}` : ago(node.since)),
    el("td", { class: "seen" }, ago(node.last_seen)), el("td", {}, "–"), el("td", {}, "–"),
    el("td", { class: "people" }, node.people), el("td", { class: "compliance" }, pct(node.compliance)),
    el("td", { class: node.outbox && node.outbox.dropping ? "error" : "muted" }, outboxText(node.outbox)));
  const cams = node.cameras.map((c) => el("tr", { class: "cam", "data-camera": c.camera },
    el("td", {}, c.name), el("td", { class: `st state-${c.state || "unknown"}` }, c.state || "–"), el("td", {}, ""),
    el("td", { class: "seen" }, ago(c.last_seen)), el("td", { class: "fps" }, num(c.fps)),
    el("td", { class: "lag" }, `${num(c.lag_p50, 2)} / ${num(c.lag_p95, 2)}`),
    el("td", { class: "people" }, c.people), el("td", { class: "compliance" }, pct(c.compliance)), el("td", {}, "")));
  return [head, ...cams];
}

function outboxText(o) {
  if (!o) return "";
  const dropped = (o.dropped_events ?? 0) + (o.dropped_stats ?? 0);
  const text = `outbox ${o.messages ?? "–"} waiting`;
  if (!dropped) return text;
  const span = o.last_drop_first ? ` made ${when(o.last_drop_first)} – ${when(o.last_drop_last)}` : "";
  return `${text} · ${o.dropping ? "DROPPING: " : ""}dropped ${o.dropped_events ?? 0} events / ${o.dropped_stats ?? 0} stats${span}`;
}

// what the control room could not store (operators; viewers are not shown payloads)
async function deadLetters(card) {
  if (state.me.role === "viewer") { card.hidden = true; return; }
  const page = await api("/dead-letters?limit=20");
  const reasons = page.reasons.map((r) => `${r.reason} ${r.messages}`).join(", ");
  const rows = page.items.map((d) => el("tr", { class: "dead-letter", "data-reason": d.reason },
    el("td", {}, when(d.last_seen)), el("td", { class: "error" }, d.reason), el("td", {}, d.node || "–"),
    el("td", { class: "muted" }, d.topic || "(refused by the database)"), el("td", {}, d.count),
    el("td", {}, el("details", {}, el("summary", {}, d.detail), el("pre", { class: "muted" }, d.payload.slice(0, 2000)))),
    el("td", {}, state.me.role === "admin" ? el("button", { onclick: async () => { await api(`/dead-letters/${d.id}`, { method: "DELETE" }); await deadLetters(card); } }, "Dealt with") : "")));
  card.replaceChildren(el("h2", {}, "Dead letters"),
    el("p", { class: "muted" }, page.items.length ? `Messages the control room could not store, kept with the reason (by reason: ${reasons}).` : "None: everything that arrived was stored."),
    page.items.length ? el("table", { id: "dead-letters" }, el("tr", {}, ["last seen", "reason", "node", "topic", "times", "why / payload", ""].map((h) => el("th", {}, h))), ...rows) : "");
}

async function fleetPage(main) {
  const mine = state.page;
  const gone = () => state.page !== mine;
  main.append(el("h1", {}, "Fleet"));
  const labels = { online: "nodes online", offline: "nodes offline", cameras: "cameras", compliance: "compliance (1 h)" };
  main.append(el("div", { class: "tiles" }, Object.entries(labels).map(([k, l]) =>
    el("div", { class: "tile" }, el("div", { class: "v", id: `fleet-${k}` }, "–"), el("div", { class: "l" }, l)))));
  const table = el("table", { id: "fleet-nodes" });
  const note = el("p", { class: "muted", id: "fleet-ingest" });
  main.append(el("div", { class: "card" }, el("h2", {}, "Nodes and cameras"), table, note));
  const letters = el("div", { class: "card", id: "fleet-dead-letters" });
  main.append(letters);
  const refresh = async () => {
    const f = await api("/fleet?window_s=3600");
    if (gone()) return;
    $("#fleet-online").textContent = f.online; $("#fleet-offline").textContent = f.offline;
    $("#fleet-cameras").textContent = f.nodes.reduce((a, n) => a + n.cameras.length, 0);
    $("#fleet-compliance").textContent = pct(f.compliance);
    table.replaceChildren(el("tr", {}, ["node / camera", "state", "since", "last seen", "FPS", "lag p50 / p95 (s)", "people (1 h)", "compliance (1 h)", ""].map((h) => el("th", {}, h))),
      ...(f.nodes.length ? f.nodes.flatMap(fleetRows) : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No edge node has reported yet."))]));
    deadLetters(letters).catch((err) => { letters.replaceChildren(el("p", { class: "error" }, `dead letters: ${err.message}`)); });
    if (!f.enabled) { note.textContent = "This server does not ingest MQTT (maskwatch serve --mqtt ...): stored figures only."; return; }
    const rejected = Object.entries(f.ingest.rejected).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
    note.textContent = `MQTT ingest ${f.ingest.connected ? "connected" : "DISCONNECTED from its broker: node states are on hold"} · ${f.ingest.accepted} messages accepted · rejected (dead letters): ${rejected} · ${f.ingest.pending_acks} acknowledgements pending`;
  };
  await refresh();
  const poll = setInterval(() => { if (gone()) { clearInterval(poll); return; } refresh().catch(() => {}); }, 5000);
  let busy = false, at = 0; // events refresh at most every 2 s (a fleet sends stats all the time)
  state.page.onEvent = async (type) => {
    if (gone() || busy || Date.now() - at < 2000 || !["source_status", "stats", "alert"].includes(type)) return;
    busy = true; at = Date.now();
    try { await refresh(); } catch (err) { /* the next poll tries again */ } finally { busy = false; }
  };
}

PAGES.fleet = fleetPage;
