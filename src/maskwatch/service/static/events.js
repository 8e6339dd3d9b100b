// maskwatch dashboard: person events. Each card shows the person's blurred snapshot when snapshots are kept
// (privacy.snapshots) or says plainly why there is none; the events page filters by camera, verdict and time
// range and exports the filtered list as CSV. Loaded after app.js (helpers el, api, state, pct, when).
"use strict";

// why a card has no picture: snapshots off on this server, a remote camera (its node keeps pictures), or none
function noSnapshotReason(e) {
  if (e.camera.includes(":")) return "no snapshot: remote camera";
  return state.console && state.console.snapshots ? "no snapshot" : "snapshots off";
}

function snapshotsNote(camera) {
  if (camera && camera.kind === "remote") return el("p", { class: "muted snapshots-note" }, "Events of a remote camera carry no picture (no image leaves a node but on request).");
  if (state.console && state.console.snapshots) return null;
  return el("p", { class: "muted snapshots-note", id: "snapshots-off" },
    "Snapshots are off (privacy.snapshots: false, the default): no picture of anyone is kept; each event says where and when.");
}

function eventGallery(items) {
  return el("div", { class: "gallery", id: "events" }, items.length ? items.map((e) => el("div", { class: `ev ${e.compliant ? "good" : "bad"}`, "data-id": e.id, "data-camera": e.camera },
    e.has_snapshot ? el("img", { class: "snap", loading: "lazy", alt: `person ${e.id} (faces blurred)`, src: `${API}/events/${e.id}/snapshot` })
      : el("div", { class: "nosnap" }, noSnapshotReason(e)),
    el("b", {}, e.label), ` ${pct(e.probability)}`, el("div", { class: "muted" }, `${e.camera} · ${when(e.time)} · ${e.n_frames} frames`),
    e.false_positive ? el("div", { class: "muted" }, "marked false positive") :
      actionButton("false_positive", "false positive", { class: "fp" }, async (ev) => { await api(`/events/${e.id}/false-positive`, { method: "POST" }); ev.target.replaceWith("marked false positive"); })))
    : el("p", { class: "muted" }, "No people yet."));
}

// the filter form's values as the API's query (datetime-local inputs are the browser's local time)
function eventQuery(form) {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    if (!v) continue;
    q.set(k, k === "from" || k === "to" ? new Date(v).toISOString() : v);
  }
  return q;
}

async function eventsPage(main) {
  main.append(el("h1", {}, "Events"));
  const cams = await api("/cameras");
  const form = el("form", { class: "inline labelled", id: "event-filter" },
    el("label", {}, "Camera ", el("select", { name: "camera" }, el("option", { value: "" }, "every camera"), cams.map((c) => el("option", { value: c.name }, c.name)))),
    el("label", {}, "Verdict ", el("select", { name: "verdict" }, el("option", { value: "" }, "any"), el("option", { value: "compliant" }, "compliant"), el("option", { value: "noncompliant" }, "not compliant"))),
    el("label", {}, "From ", el("input", { type: "datetime-local", name: "from", step: 60 })),
    el("label", {}, "To ", el("input", { type: "datetime-local", name: "to", step: 60 })),
    el("button", {}, "Apply"),
    el("a", { id: "export-csv", class: "button", href: `${API}/events/export.csv`, download: "maskwatch-events.csv" }, "Export CSV"));
  const holder = el("div", { id: "event-pages" }), more = el("button", { id: "more", hidden: true }, "More");
  const count = el("p", { class: "muted", id: "event-count" });
  let cursor = null, shown = 0;
  const load = async (reset) => {
    const q = eventQuery(form);
    $("#export-csv").href = `${API}/events/export.csv${q.toString() ? `?${q}` : ""}`; // the same filters
    q.set("limit", 30);
    if (!reset && cursor) q.set("cursor", cursor);
    const page = await api(`/events?${q}`);
    if (reset) { holder.replaceChildren(); shown = 0; }
    holder.append(eventGallery(page.items)); cursor = page.next_cursor; more.hidden = !cursor;
    shown += page.items.length; count.textContent = `${shown} event(s) shown${cursor ? ", more below" : ""}`;
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(true).catch((err) => { count.textContent = err.message; count.className = "error"; }); });
  more.addEventListener("click", () => load(false));
  main.append(...[el("div", { class: "card" }, form), snapshotsNote(null), count, holder, more].filter(Boolean));
  await load(true);
}

PAGES.events = eventsPage;
