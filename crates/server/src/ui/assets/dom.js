// Building DOM nodes without innerHTML: every text goes in as text, never as markup.

/** An element: h("a", {href: "#/x", class: "btn", on: {click: f}}, "text", child, …). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") {
      for (const [ev, f] of Object.entries(v)) el.addEventListener(ev, f);
    } else if (k === "class") {
      el.className = v;
    } else if (k === "text") {
      el.textContent = v;
    } else if (k in el && typeof v !== "string") {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

/** A place for the error of one action, announced when it changes. */
export function errorBox(id) {
  return h("p", { class: "error", id, role: "alert", hidden: true });
}

/** Shows `err` (an ApiError or any Error) in `box`; `null` hides it. */
export function showError(box, err) {
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = err.describe ? err.describe() : String(err.message || err);
}

/** A labelled form field: its wrapper, the control, and the error line under it. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const err = h("p", { class: "field-error", id: `${id}-error`, role: "alert", hidden: true });
  control.setAttribute("aria-describedby", `${id}-error`);
  const wrap = h("div", { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint" }, hint) : null,
    err);
  return { wrap, control, err };
}

/** Shows `message` under a field (and marks it invalid); `null` clears it. */
export function fieldError(f, message) {
  f.err.hidden = !message;
  f.err.textContent = message || "";
  if (message) f.control.setAttribute("aria-invalid", "true");
  else f.control.removeAttribute("aria-invalid");
}

/** A button that disables itself while `action` runs. */
export function button(label, action, attrs = {}) {
  const b = h("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async (ev) => {
    ev.preventDefault();
    if (b.disabled) return;
    b.disabled = true;
    b.setAttribute("aria-busy", "true");
    try {
      await action(ev);
    } finally {
      b.disabled = false;
      b.removeAttribute("aria-busy");
    }
  });
  return b;
}

/** A cell that shows its column name on narrow screens. */
export function td(label, ...children) {
  return h("td", { "data-label": label }, ...children);
}

/** Tells what just happened, in the status line (announced politely). */
export function say(text) {
  const line = document.getElementById("status");
  if (line) line.textContent = text;
}
