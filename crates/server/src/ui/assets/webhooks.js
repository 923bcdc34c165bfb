// Webhooks: the list (state, errors, last error; start, stop, test) and the create/edit form.
import { api, get } from "./api.js";
import { h, fill, field, fieldError, errorBox, showError, button, td, say } from "./dom.js";

export const CONTACT_EVENTS = ["contact.created", "contact.changed", "contact.softdeleted", "contact.deleted"];

function stateBadge(state) {
  const kind = state === "Active" ? "ok" : state === "TooManyErrors" ? "bad" : "idle";
  return h("span", { class: `badge ${kind}` }, state);
}

/** The definition the API takes for `hook` with `changes` (Secret left out: kept). */
function definition(hook, changes = {}) {
  const out = {};
  for (const k of ["Name", "Events", "TargetUrl", "State", "Type", "Headers", "Properties", "ErrorsEmail", "RetryPolicy", "SuccessStatus"]) {
    if (hook[k] !== undefined && hook[k] !== null) out[k] = hook[k];
  }
  return Object.assign(out, changes);
}

/** Sends a test event to a saved webhook's target; {Success, Message}. */
export async function testHook(hook) {
  return (await api("POST", "/Webhook/Test", definition(hook, { State: "Active" }))).data;
}

/** Starts or stops webhook `id` (a start sends the test event first: test-on-save). */
export async function setState(id, state) {
  return (await api("PATCH", `/Webhook/${id}`, { State: state })).data;
}

export async function webhooksScreen(main) {
  document.title = "Webhooks · crmhooks";
  const hooks = await get("/Webhook");
  const list = Array.isArray(hooks) ? hooks : hooks.value || [];
  const usages = await Promise.all(
    list.map((w) => get(`/Webhook/${w.WebhookId}/Usage`).catch(() => null)));
  const body = h("tbody");
  list.forEach((w, i) => body.append(row(w, usages[i], main)));
  fill(main,
    h("div", { class: "heading" },
      h("h1", {}, "Webhooks"),
      h("a", { class: "btn primary", href: "#/webhooks/new" }, "New webhook")),
    list.length === 0
      ? h("p", { class: "empty" }, "No webhooks yet. Create one to have contact changes sent to a receiver.")
      : h("div", { class: "table-wrap" }, h("table", { class: "cards" },
        h("caption", { class: "sr-only" }, "Webhooks of this tenant"),
        h("thead", {}, h("tr", {},
          ["Name", "Target", "Events", "State", "Errors", "Last error", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
        body)));
}

function row(w, usage, main) {
  const result = h("p", { class: "result", role: "status", hidden: true });
  const err = errorBox(`hook-${w.WebhookId}-error`);
  const lastError = usage && usage.last_error;
  const active = w.State === "Active";
  const toggle = button(active ? "Stop" : "Start", async () => {
    showError(err, null);
    try {
      await setState(w.WebhookId, active ? "Stopped" : "Active");
      say(`Webhook ${w.Name} ${active ? "stopped" : "started"}.`);
      await webhooksScreen(main);
      const again = document.querySelector(`[data-hook="${w.WebhookId}"] .toggle`);
      if (again) again.focus();
    } catch (e) {
      showError(err, e);
    }
  }, { class: "toggle", "aria-label": `${active ? "Stop" : "Start"} webhook ${w.Name}` });
  const test = button("Test", async () => {
    showError(err, null);
    result.hidden = true;
    try {
      const r = await testHook(w);
      result.hidden = false;
      result.className = `result ${r.Success ? "ok" : "bad"}`;
      result.textContent = `${r.Success ? "Test delivered" : "Test failed"}: ${r.Message || ""}`;
    } catch (e) {
      showError(err, e);
    }
  }, { "aria-label": `Send a test event to webhook ${w.Name}` });
  return h("tr", { "data-hook": w.WebhookId },
    td("Name", h("a", { href: `#/webhooks/${w.WebhookId}` }, w.Name || `#${w.WebhookId}`)),
    td("Target", h("span", { class: "url" }, w.TargetUrl || "")),
    td("Events", (w.Events || []).join(", ")),
    td("State", stateBadge(w.State)),
    td("Errors", String(usage ? usage.consecutive_errors : "?")),
    td("Last error", lastError
      ? h("details", {}, h("summary", {}, lastError.split("\n")[0].slice(0, 60)), h("pre", {}, lastError))
      : h("span", { class: "muted" }, "none")),
    td("Actions",
      h("div", { class: "row-actions" },
        toggle, test,
        h("a", { class: "btn", href: `#/webhooks/${w.WebhookId}/edit`, "aria-label": `Edit webhook ${w.Name}` }, "Edit"),
        h("a", { class: "btn", href: `#/webhooks/${w.WebhookId}`, "aria-label": `Deliveries of webhook ${w.Name}` }, "Deliveries")),
      result, err));
}

/** The create (id null) or edit form. Errors stay next to their field; nothing typed is lost. */
export async function webhookForm(main, id) {
  const hook = id ? await get(`/Webhook/${id}`) : { Events: ["contact.created", "contact.changed"], State: "Active" };
  document.title = `${id ? "Edit" : "New"} webhook · crmhooks`;
  const name = field("Name", h("input", { name: "Name", value: hook.Name || "", required: true, maxlength: 255 }));
  const target = field("Target URL", h("input", { name: "TargetUrl", type: "url", value: hook.TargetUrl || "", required: true, placeholder: "https://receiver.example/hook" }),
    "An Active webhook is saved only after a test event to this URL succeeds.");
  const boxes = CONTACT_EVENTS.map((ev) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "Events", value: ev, checked: (hook.Events || []).includes(ev) }), ev));
  const otherEvents = (hook.Events || []).filter((e) => !CONTACT_EVENTS.includes(e));
  const other = field("Other events (comma-separated)", h("input", { name: "OtherEvents", value: otherEvents.join(", ") }));
  const eventsErr = h("p", { class: "field-error", id: "events-error", role: "alert", hidden: true });
  const secret = field("Secret", h("input", { name: "Secret", type: "password", autocomplete: "new-password", placeholder: id ? "unchanged" : "" }),
    id ? "Leave empty to keep the stored secret. It is never shown." : "Signs each body (X-SuperOffice-Signature). Optional.");
  const state = field("State", h("select", { name: "State" },
    ["Active", "Stopped"].map((s) => h("option", { value: s, selected: hook.State === s }, s))));
  const email = field("Errors e-mail", h("input", { name: "ErrorsEmail", type: "email", value: hook.ErrorsEmail || "" }));
  const formErr = errorBox("form-error");
  const outcome = h("div", { class: "outcome", role: "status" });
  const fields = { Name: name, TargetUrl: target, Secret: secret, State: state, ErrorsEmail: email };
  const form = h("form", { class: "card", novalidate: true },
    h("h1", {}, id ? `Edit webhook ${hook.Name}` : "New webhook"),
    name.wrap, target.wrap,
    h("fieldset", { "aria-describedby": "events-error" }, h("legend", {}, "Events"), boxes, eventsErr),
    other.wrap, secret.wrap, state.wrap, email.wrap,
    formErr,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, id ? "Save" : "Create"),
      h("a", { class: "btn", href: "#/webhooks" }, "Back to webhooks")),
    outcome);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of Object.values(fields)) fieldError(f, null);
    eventsErr.hidden = true;
    showError(formErr, null);
    fill(outcome);
    const events = boxes.map((b) => b.firstChild).filter((c) => c.checked).map((c) => c.value)
      .concat(other.control.value.split(",").map((s) => s.trim()).filter(Boolean));
    const body = definition(id ? hook : { Type: "webhook" }, {
      Name: name.control.value.trim(),
      TargetUrl: target.control.value.trim(),
      Events: events,
      State: state.control.value,
      ErrorsEmail: email.control.value.trim() || null,
    });
    if (secret.control.value) body.Secret = secret.control.value;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const saved = id
        ? (await api("PUT", `/Webhook/${id}`, body)).data
        : (await api("POST", "/Webhook", body)).data;
      const tested = saved.State === "Active";
      fill(outcome, h("p", { class: "result ok" },
        `Saved webhook ${saved.Name} (#${saved.WebhookId}), ${saved.State}. `,
        tested ? "Test-on-save: the receiver accepted the test event." : "Stopped: no test event was sent."),
      h("p", {}, h("a", { href: `#/webhooks/${saved.WebhookId}` }, "See its deliveries"), " · ",
        h("a", { href: "#/webhooks" }, "All webhooks")));
      say(`Saved webhook ${saved.Name}.`);
      if (!id) {
        // From now on the form edits what was created.
        history.replaceState(null, "", `#/webhooks/${saved.WebhookId}/edit`);
        Object.assign(hook, saved);
        id = saved.WebhookId;
        submit.textContent = "Save";
      }
    } catch (e) {
      placeError(e, fields, eventsErr, formErr);
    } finally {
      submit.disabled = false;
    }
  });
  fill(main, form);
  name.control.focus();
}

/** An API error next to the field it is about (by the property its message names). */
export function placeError(e, fields, eventsErr, formErr) {
  const msg = e.describe ? e.describe() : String(e);
  if (e.type === "WebhookTestFailed") {
    fieldError(fields.TargetUrl, msg);
    fields.TargetUrl.control.focus();
    return;
  }
  const named = Object.keys(fields).find((k) => new RegExp(`\\b${k}\\b`, "i").test(e.message || ""));
  if (named) {
    fieldError(fields[named], msg);
    fields[named].control.focus();
  } else if (eventsErr && /\bEvents?\b/.test(e.message || "")) {
    eventsErr.hidden = false;
    eventsErr.textContent = msg;
  } else {
    showError(formErr, e);
  }
}
