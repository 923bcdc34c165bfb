// The dashboard: sign-in, navigation by the URL's #fragment, and the screens.
import { api, session, whenUnauthorized } from "./api.js";
import { h, fill, field, fieldError, errorBox, showError, say } from "./dom.js";
import { webhooksScreen, webhookForm } from "./webhooks.js";
import { deliveriesScreen } from "./deliveries.js";
import { contactsScreen, contactScreen } from "./contacts.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");

const routes = [
  [/^#\/webhooks\/new$/, () => webhookForm(main, null)],
  [/^#\/webhooks\/(\d+)\/edit$/, (m) => webhookForm(main, Number(m[1]))],
  [/^#\/webhooks\/(\d+)$/, (m) => deliveriesScreen(main, Number(m[1]))],
  [/^#\/webhooks$/, () => webhooksScreen(main)],
  [/^#\/contacts\/(\d+)$/, (m) => contactScreen(main, Number(m[1]))],
  [/^#\/contacts$/, () => contactsScreen(main)],
];

let rendering = 0;

async function route() {
  const hash = location.hash || "#/webhooks";
  if (!session.key) {
    signIn();
    return;
  }
  nav.hidden = false;
  for (const a of nav.querySelectorAll("a[data-nav]")) {
    if (hash.startsWith(`#/${a.dataset.nav}`)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const found = routes.find(([re]) => re.test(hash));
  if (!found) {
    location.replace("#/webhooks");
    return;
  }
  const me = ++rendering;
  fill(main, h("p", { class: "muted" }, "Loading…"));
  try {
    await found[1](found[0].exec(hash));
  } catch (e) {
    if (me !== rendering) return;
    const box = errorBox("screen-error");
    fill(main, h("h1", {}, "Something went wrong"), box);
    showError(box, e);
  }
}

function signIn(message) {
  nav.hidden = true;
  document.title = "Sign in · crmhooks";
  const key = field("API key", h("input", {
    type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false",
  }), "The key stays in this browser tab (sessionStorage) and is sent only to this server's API.");
  const form = h("form", { class: "card narrow", novalidate: true },
    h("h1", {}, "Sign in"),
    key.wrap,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = key.control.value.trim();
    if (!value) {
      fieldError(key, "Enter an API key (crmhooks key create, or CRMHOOKS_API_KEY).");
      key.control.focus();
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      // Any read the key may do proves it: the webhooks of its tenant.
      await api("GET", "/Webhook", undefined, value);
      session.set(value);
      fieldError(key, null);
      say("Signed in.");
      if (!location.hash || location.hash === "#/signin") location.hash = "#/webhooks";
      else route();
    } catch (e) {
      fieldError(key, e.describe ? e.describe() : String(e));
      key.control.focus();
    } finally {
      submit.disabled = false;
    }
  });
  fill(main, form);
  if (message) fieldError(key, message);
  key.control.focus();
}

whenUnauthorized((err) => {
  session.clear();
  signIn(`The key was refused: ${err.message}. Sign in again.`);
});

document.getElementById("signout").addEventListener("click", () => {
  session.clear();
  say("Signed out.");
  signIn();
});

window.addEventListener("hashchange", () => {
  route();
  main.focus({ preventScroll: true });
});
route();
