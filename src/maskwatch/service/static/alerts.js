// maskwatch dashboard: alerts (pushed live; only firing ones can be acknowledged) and the rules editor: every
// field labelled, webhooks (the URL shown to admins only), edit, enable/disable, test-fire (one signed sample
// delivery). Loaded after app.js (helpers el, api, state, actionButton, roleNote, ...); registers #/alerts.
"use strict";

const RULE_KINDS = ["compliance_below", "unmasked_person", "camera_offline", "camera_lagging", "node_offline"];
// the number fields: [name, label, placeholder]; empty means the server's default (never prefilled: a value
// in the box would hide what the default is)
const RULE_NUMBERS = [
  ["threshold", "Threshold", "compliance 0–1, or lag in s"], ["min_people", "Min people", "default 5"],
  ["window_s", "Window (s)", "default 600"], ["for_s", "For (s)", "default 60"],
  ["cooldown_s", "Cooldown (s)", "default 300"], ["hysteresis", "Hysteresis", "default 0.05"],
];

function alertRows(items, refresh) {
  return items.map((a) => el("tr", { "data-alert": a.id, "data-state": a.state }, el("td", { class: a.state }, a.state), el("td", {}, a.rule),
    el("td", {}, a.camera), el("td", {}, a.message), el("td", {}, when(a.started)),
    el("td", {}, a.acknowledged_by ? `ack by ${a.acknowledged_by}` : a.state !== "firing" ? "" : // a resolved alert needs no acknowledgement
      actionButton("acknowledge", "Acknowledge", { class: "ack" }, async () => { await api(`/alerts/${a.id}/ack`, { method: "POST" }); refresh(); }))));
}

function ruleForm(cams, nodes, onsaved) {
  const err = el("p", { class: "error", id: "rule-error" });
  const cameraChoices = (kind) => kind === "node_offline"
    ? [el("option", { value: "" }, "every node"), ...nodes.map((n) => el("option", { value: n }, n))]
    : [el("option", { value: "" }, "every camera"), ...cams.map((c) => el("option", { value: c.name }, c.name))];
  const kind = el("select", { name: "kind", id: "rule-kind" }, RULE_KINDS.map((k) => el("option", { value: k }, k)));
  const camera = el("select", { name: "camera", id: "rule-camera" }, cameraChoices("compliance_below"));
  kind.addEventListener("change", () => camera.replaceChildren(...cameraChoices(kind.value)));
  const title = el("h2", { id: "rule-form-title" }, "Add a rule");
  const submit = el("button", { type: "submit", id: "rule-save" }, "Add rule");
  const cancel = el("button", { type: "button", id: "rule-cancel", hidden: true }, "Cancel edit");
  const form = el("form", { class: "fields", id: "rule-form" },
    field("Name", el("input", { name: "name", required: true, maxlength: 100 })), field("Kind", kind), field("Camera or node", camera),
    ...RULE_NUMBERS.map(([name, label, hint]) => field(label, el("input", { name, type: "number", step: "any", min: 0, placeholder: hint }))),
    field("Active hours", el("input", { name: "active_hours", placeholder: "always, or 08:00-18:00" })),
    field("Webhook URL", el("input", { name: "webhook_url", type: "url", placeholder: "https://… (none)", size: 32 })),
    field("Webhook secret", el("input", { name: "webhook_secret", type: "password", autocomplete: "new-password", placeholder: "signs deliveries (none)" })),
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "enabled", checked: true }), " enabled"),
    el("div", { class: "actions" }, submit, cancel));
  let editing = null; // the rule being edited, or null when adding
  const reset = () => { editing = null; form.reset(); kind.disabled = false; camera.replaceChildren(...cameraChoices(kind.value)); title.textContent = "Add a rule"; submit.textContent = "Add rule"; cancel.hidden = true; form.elements.webhook_secret.placeholder = "signs deliveries (none)"; };
  cancel.addEventListener("click", reset);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = form.elements, body = { name: f.name.value, enabled: f.enabled.checked };
    if (!editing) body.kind = f.kind.value; // a rule keeps its kind (make a new rule for another)
    body.camera = f.camera.value || null;
    for (const [name] of RULE_NUMBERS) if (f[name].value !== "") body[name] = Number(f[name].value); else if (editing && name === "threshold") body.threshold = null;
    body.active_hours = f.active_hours.value || null;
    body.webhook_url = f.webhook_url.value || null;
    if (f.webhook_secret.value) body.webhook_secret = f.webhook_secret.value; // write-only: empty leaves it as it is
    else if (!editing || !body.webhook_url) body.webhook_secret = null;
    try {
      if (editing) await api(`/alert-rules/${editing.id}`, { method: "PATCH", body }); else await api("/alert-rules", { method: "POST", body });
      err.textContent = ""; reset(); onsaved();
    } catch (x) { err.textContent = x.message; }
  });
  const edit = (r) => {
    editing = r; const f = form.elements;
    f.name.value = r.name; f.kind.value = r.kind; kind.disabled = true; camera.replaceChildren(...cameraChoices(r.kind)); f.camera.value = r.camera || "";
    for (const [name] of RULE_NUMBERS) f[name].value = r[name] ?? "";
    f.active_hours.value = r.active_hours || ""; f.webhook_url.value = r.webhook_url || ""; f.webhook_secret.value = "";
    f.webhook_secret.placeholder = r.has_webhook_secret ? "set: type to replace" : "signs deliveries (none)";
    f.enabled.checked = r.enabled; title.textContent = `Edit rule ${r.name}`; submit.textContent = "Save rule"; cancel.hidden = false;
    form.scrollIntoView({ block: "nearest" });
  };
  return { card: el("div", { class: "card", id: "rule-editor" }, title, form, err), edit };
}

async function alertsPage(main) {
  main.append(el("h1", {}, "Alerts"));
  const list = el("table", { id: "alert-list" });
  let latest = 0;  // alerts arrive in bursts, and their refreshes may answer out of order: the last one asked wins
  const refresh = async () => {
    const asked = ++latest;
    const data = await api("/alerts?limit=100");
    if (asked !== latest) return;
    list.replaceChildren(el("tr", {}, ["state", "rule", "camera", "message", "since", ""].map((h) => el("th", {}, h))), ...alertRows(data.items, refresh));
  };
  main.append(el("div", { class: "card" }, list, roleNote("acknowledge")));
  await refresh();
  state.page.onEvent = (type) => { if (type === "alert") refresh(); };

  main.append(el("h2", {}, "Rules"));
  const rules = el("table", { id: "rule-list" });
  const tested = el("p", { id: "rule-test-result", class: "muted" });
  const admin = can("rules");
  const [cams, info] = await Promise.all([api("/cameras"), api("/console")]);
  const editor = admin ? ruleForm(cams, info.nodes, () => loadRules()) : null;
  const loadRules = async () => {
    const data = await api("/alert-rules");
    rules.replaceChildren(el("tr", {}, ["name", "kind", "camera", "threshold", "min people", "window (s)", "for (s)", "webhook", "enabled", ""].map((h) => el("th", {}, h))),
      ...data.map((r) => el("tr", { "data-rule": r.name },
        el("td", {}, r.name), el("td", {}, r.kind), el("td", {}, r.camera || (r.kind === "node_offline" ? "every node" : "every camera")),
        el("td", {}, r.threshold ?? "–"), el("td", {}, r.min_people), el("td", {}, r.window_s), el("td", {}, r.for_s),
        el("td", { class: "webhook" }, r.has_webhook ? (r.webhook_url ?? "set (shown to admins)") + (r.has_webhook_secret ? " · signed" : "") : "–"),
        el("td", { class: "enabled" }, r.enabled ? "yes" : "no"),
        el("td", { class: "rule-actions" },
          actionButton("rules", "Edit", { class: "edit" }, () => editor.edit(r)), " ",
          actionButton("rules", r.enabled ? "Disable" : "Enable", { class: "toggle" }, async () => { await api(`/alert-rules/${r.id}`, { method: "PATCH", body: { enabled: !r.enabled } }); loadRules(); }), " ",
          r.has_webhook ? actionButton("rules", "Test-fire", { class: "test", title: "send a signed sample delivery to the webhook" }, async () => {
            tested.textContent = `sending a sample delivery of ${r.name}…`; tested.className = "muted";
            try {
              const t = await api(`/alert-rules/${r.id}/test`, { method: "POST" });
              tested.textContent = t.ok ? `Test delivery of ${r.name}: HTTP ${t.status_code} in ${t.duration_ms} ms${t.signed ? ", signed" : ", not signed (no secret)"}`
                : `Test delivery of ${r.name} failed: ${t.error}`;
              tested.className = t.ok ? "ok" : "error";
            } catch (x) { tested.textContent = x.message; tested.className = "error"; }
          }) : null, " ",
          actionButton("rules", "Delete", { class: "delete" }, async () => { await api(`/alert-rules/${r.id}`, { method: "DELETE" }); loadRules(); })))));
  };
  main.append(el("div", { class: "card" }, rules, tested, roleNote("rules")));
  await loadRules();
  if (editor) main.append(editor.card);
}

PAGES.alerts = alertsPage;
