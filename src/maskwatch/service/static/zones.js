// maskwatch dashboard: a camera's privacy zones, drawn over its latest frame (camera page). Loaded after
// app.js, whose helpers (el, svgEl, api, state, API) it uses; app.js's camera page appends zoneCard(camera).
// A zone is a polygon of [x, y] corners in fractions of the frame (0..1 from the top left), so it fits the
// camera at any resolution; the server blacks zones out before a frame is analysed, streamed or stored.
// Admins draw: click to add a corner, "Close zone" to finish the polygon, "Save" to store them all (PATCH
// /cameras/{name}: the camera restarts with them). Others see the zones, read-only.
"use strict";

const ZONE_PLACEHOLDER = "data:image/svg+xml," + encodeURIComponent(
  '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="360"><rect width="640" height="360" fill="#1d2330"/></svg>');

function zoneCard(camera) {
  const name = encodeURIComponent(camera.name);
  const admin = state.me && state.me.role === "admin";
  const own = camera.privacy_zones; // null: the camera inherits engine.camera_defaults.privacy_zones
  let zones = (own || []).map((z) => z.map(([x, y]) => [x, y]));
  let drawing = [];
  const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;
  const frame = el("img", { class: "zone-frame", id: "zone-frame", alt: `latest frame of ${camera.name} (faces blurred, zones black)` });
  frame.addEventListener("error", () => { frame.src = ZONE_PLACEHOLDER; note.textContent = "No frame yet: zones can still be drawn (the frame's shape may differ)."; });
  const layer = svgEl("svg", { class: "zone-layer", id: "zone-layer", viewBox: "0 0 1 1", preserveAspectRatio: "none" });
  const holder = el("div", { class: "zone-holder" }, frame, layer);
  const note = el("p", { class: "muted", id: "zone-note" }, own === null || own === undefined ? "This camera uses the default zones (engine.camera_defaults)." : "");
  const status = el("p", { id: "zone-status" });
  const count = el("span", { id: "zone-count" });

  const redraw = () => {
    layer.replaceChildren();
    zones.forEach((z, i) => layer.append(svgEl("polygon", { class: "zone", "data-zone": i, points: z.map((p) => p.join(",")).join(" ") })));
    if (drawing.length) {
      layer.append(svgEl("polyline", { class: "drawing", points: drawing.map((p) => p.join(",")).join(" ") }));
      for (const [x, y] of drawing) layer.append(svgEl("circle", { class: "corner", cx: x, cy: y, r: 0.006 }));
    }
    count.textContent = `${zones.length} zone(s)${drawing.length ? `, ${drawing.length} corner(s) drawn` : ""}`;
  };
  const reload = () => { frame.src = `${API}/cameras/${name}/latest.jpg?t=${Date.now()}`; };

  if (admin) {
    layer.classList.add("editable");
    layer.addEventListener("click", (e) => {
      const box = layer.getBoundingClientRect();
      drawing.push([round((e.clientX - box.left) / box.width), round((e.clientY - box.top) / box.height)]);
      redraw();
    });
  }
  const button = (id, text, onclick) => el("button", { id, type: "button", onclick }, text);
  const tools = admin ? el("div", { class: "inline zone-tools" },
    button("zone-close", "Close zone", () => {
      if (drawing.length < 3) { status.textContent = "A zone needs at least 3 corners."; return; }
      zones.push(drawing); drawing = []; status.textContent = ""; redraw();
    }),
    button("zone-undo", "Undo corner", () => { drawing.pop(); redraw(); }),
    button("zone-remove", "Remove last zone", () => { zones.pop(); redraw(); }),
    button("zone-clear", "Clear all", () => { zones = []; drawing = []; redraw(); }),
    button("zone-save", "Save", async () => {
      if (drawing.length) { status.textContent = "Close or undo the zone being drawn first."; return; }
      try {
        const saved = await api(`/cameras/${name}`, { method: "PATCH", body: { privacy_zones: zones } });
        zones = (saved.privacy_zones || []).map((z) => z.map(([x, y]) => [x, y]));
        note.textContent = ""; status.textContent = `Saved ${zones.length} zone(s): the camera restarts with them.`;
        redraw(); setTimeout(reload, 3000);
      } catch (err) { status.textContent = err.message; }
    }),
    button("zone-default", "Use defaults", async () => {
      try {
        await api(`/cameras/${name}`, { method: "PATCH", body: { privacy_zones: null } });
        zones = []; drawing = []; note.textContent = "This camera uses the default zones (engine.camera_defaults).";
        status.textContent = "Saved."; redraw(); setTimeout(reload, 3000);
      } catch (err) { status.textContent = err.message; }
    }), count) : el("p", { class: "muted" }, count);

  reload(); redraw();
  return el("div", { class: "card", id: "zones" },
    el("h2", {}, "Privacy zones (blacked out before anything is analysed, streamed or stored)"),
    admin ? el("p", { class: "muted" }, "Click on the frame to add corners; close each zone, then save.") : null,
    holder, tools, note, status);
}
