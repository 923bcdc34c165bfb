// Contacts: list, create, open, edit, soft delete and restore, so a change can be fired from
// the browser.
import { api, get, showDate } from "./api.js";
import { h, fill, field, fieldError, errorBox, showError, button, td, say } from "./dom.js";

const EDITABLE = [
  ["Name", "Name", 219],
  ["Department", "Department", 219],
  ["OrgNr", "Organisation number", 31],
  ["Number1", "Number 1", 31],
  ["Number2", "Number 2", 31],
];

// Contacts soft-deleted from this tab: the list does not show them, so they are offered here.
const deleted = new Map();

export async function contactsScreen(main) {
  document.title = "Contacts · crmhooks";
  const page = await get("/Contact?$top=100&$orderBy=contactId%20desc");
  const rows = (page && page.value) || [];
  const name = field("Name", h("input", { name: "Name", required: true, maxlength: 219, autocomplete: "off" }));
  const dept = field("Department", h("input", { name: "Department", maxlength: 219, autocomplete: "off" }));
  const createErr = errorBox("create-error");
  const create = h("form", { class: "card filters", novalidate: true, "aria-labelledby": "new-contact" },
    h("h2", { id: "new-contact" }, "New contact"),
    name.wrap, dept.wrap,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create contact")),
    createErr);
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    fieldError(name, null);
    fieldError(dept, null);
    showError(createErr, null);
    const submit = create.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const c = (await api("POST", "/Contact", { Name: name.control.value, Department: dept.control.value })).data;
      say(`Created contact ${c.Name} (#${c.ContactId}).`);
      await contactsScreen(main);
    } catch (e) {
      placeContactError(e, { Name: name, Department: dept }, createErr);
    } finally {
      submit.disabled = false;
    }
  });
  const restoreId = field("Contact id", h("input", { name: "restoreId", inputmode: "numeric", autocomplete: "off" }));
  const restoreErr = errorBox("restore-error");
  const restoreForm = h("form", { class: "card filters", novalidate: true, "aria-labelledby": "restore-title" },
    h("h2", { id: "restore-title" }, "Restore from the recycle bin"),
    deleted.size
      ? h("ul", { class: "plain" }, [...deleted].map(([id, nm]) => h("li", {},
        `#${id} ${nm} `, button("Restore", () => restore(id, restoreErr, main), { "aria-label": `Restore contact ${nm}` }))))
      : null,
    restoreId.wrap,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Restore")),
    restoreErr);
  restoreForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    fieldError(restoreId, null);
    const id = restoreId.control.value.trim();
    if (!/^\d+$/.test(id)) {
      fieldError(restoreId, "Enter the id of a soft-deleted contact.");
      restoreId.control.focus();
      return;
    }
    await restore(Number(id), restoreErr, main, restoreId);
  });
  fill(main,
    h("div", { class: "heading" }, h("h1", {}, "Contacts")),
    h("div", { class: "two" }, create, restoreForm),
    rows.length === 0
      ? h("p", { class: "empty" }, "No contacts yet.")
      : h("div", { class: "table-wrap" }, h("table", { class: "cards" },
        h("caption", { class: "sr-only" }, "Contacts, newest first"),
        h("thead", {}, h("tr", {}, ["Id", "Name", "Department", "Updated", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((c) => h("tr", { "data-contact": c.contactId },
          td("Id", String(c.contactId)),
          td("Name", h("a", { href: `#/contacts/${c.contactId}` }, c.name || `#${c.contactId}`)),
          td("Department", c.department || ""),
          td("Updated", showDate(c.updated || c.updatedDate || "")),
          td("", h("a", { class: "btn", href: `#/contacts/${c.contactId}`, "aria-label": `Open contact ${c.name}` }, "Open"))))))));
}

async function restore(id, errBox, main, idField) {
  showError(errBox, null);
  try {
    await api("POST", `/Contact/${id}/Restore`);
    deleted.delete(id);
    const target = `#/contacts/${id}`;
    if (location.hash === target) await contactScreen(main, id);
    else location.hash = target;
    say(`Restored contact #${id}.`);
  } catch (e) {
    if (idField) fieldError(idField, e.describe());
    else showError(errBox, e);
  }
}

function placeContactError(e, fields, formErr) {
  const named = Object.keys(fields).find((k) => new RegExp(`\\b${k}\\b`, "i").test(e.message || ""));
  if (named) {
    fieldError(fields[named], e.describe());
    fields[named].control.focus();
  } else {
    showError(formErr, e);
  }
}

export async function contactScreen(main, id) {
  let entity;
  try {
    entity = await get(`/Contact/${id}`);
  } catch (e) {
    if (e.status !== 404) throw e;
    const err = errorBox("open-error");
    fill(main, h("p", {}, h("a", { href: "#/contacts" }, "← Contacts")),
      h("h1", {}, `Contact #${id}`), err,
      h("div", { class: "actions" }, button("Restore", () => restore(id, err, main))));
    showError(err, e);
    return;
  }
  document.title = `${entity.Name} · contacts · crmhooks`;
  const fields = {};
  for (const [prop, label, max] of EDITABLE) {
    fields[prop] = field(label, h("input", { name: prop, value: entity[prop] || "", maxlength: max, autocomplete: "off" }));
  }
  const formErr = errorBox("contact-error");
  const saved = h("p", { role: "status", class: "result ok", hidden: true });
  const form = h("form", { class: "card", novalidate: true },
    h("h1", {}, `Contact #${entity.ContactId}`),
    h("p", { class: "muted" }, `Updated ${showDate(entity.UpdatedDate) || "never"} · created ${showDate(entity.CreatedDate)}`),
    Object.values(fields).map((f) => f.wrap),
    formErr,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Save"),
      button("Delete (to the recycle bin)", async () => {
        showError(formErr, null);
        try {
          await api("DELETE", `/Contact/${id}`);
          deleted.set(id, entity.Name);
          say(`Contact ${entity.Name} moved to the recycle bin.`);
          const err = errorBox("restore-error");
          fill(main, h("p", {}, h("a", { href: "#/contacts" }, "← Contacts")),
            h("h1", {}, `Contact #${id} deleted`),
            h("p", {}, `${entity.Name} is in the recycle bin (contact.softdeleted was fired).`),
            h("div", { class: "actions" }, button("Restore", () => restore(id, err, main), { class: "primary" })), err);
          main.querySelector("button").focus();
        } catch (e) {
          showError(formErr, e);
        }
      }, { class: "danger" }),
      h("a", { class: "btn", href: "#/contacts" }, "Back to contacts")),
    saved);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of Object.values(fields)) fieldError(f, null);
    showError(formErr, null);
    saved.hidden = true;
    // The entity as read, with the edits: a PUT changes exactly what was edited.
    const body = { ...entity };
    for (const [prop, f] of Object.entries(fields)) body[prop] = f.control.value;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      entity = (await api("PUT", `/Contact/${id}`, body)).data;
      saved.hidden = false;
      saved.textContent = `Saved at ${showDate(entity.UpdatedDate)}.`;
      say(`Saved contact ${entity.Name}.`);
    } catch (e) {
      placeContactError(e, fields, formErr);
    } finally {
      submit.disabled = false;
    }
  });
  fill(main, h("p", {}, h("a", { href: "#/contacts" }, "← Contacts")), form);
  fields.Name.control.focus();
}
