// A webhook's delivery log: filters, each delivery's attempts, resend, replay with progress,
// and the chart.
import { api, get, showDate, inputTime, localInput } from "./api.js";
import { h, fill, field, fieldError, errorBox, showError, button, td, say } from "./dom.js";
import { chart } from "./chart.js";
import { setState } from "./webhooks.js";

const STATUSES = ["", "pending", "inflight", "delivered", "failed", "cancelled"];
const PAGE = 50;

function statusBadge(s) {
  const kind = s === "delivered" ? "ok" : s === "failed" ? "bad" : s === "cancelled" ? "idle" : "wait";
  return h("span", { class: `badge ${kind}` }, s);
}

export async function deliveriesScreen(main, id) {
  const hook = await get(`/Webhook/${id}`);
  document.title = `${hook.Name} · deliveries · crmhooks`;
  const stateErr = errorBox("state-error");
  const active = hook.State === "Active";
  const toggle = button(active ? "Stop webhook" : "Start webhook", async () => {
    showError(stateErr, null);
    try {
      await setState(id, active ? "Stopped" : "Active");
      say(`Webhook ${hook.Name} ${active ? "stopped" : "started"}.`);
      await deliveriesScreen(main, id);
    } catch (e) {
      showError(stateErr, e);
    }
  });

  // Filters: kept in the form, so a refused search keeps what was typed.
  const status = field("Status", h("select", { name: "status" },
    STATUSES.map((s) => h("option", { value: s }, s || "any"))));
  const contact = field("Contact (PrimaryKey)", h("input", { name: "PrimaryKey", inputmode: "numeric", autocomplete: "off" }));
  const eventId = field("EventId", h("input", { name: "EventId", autocomplete: "off", spellcheck: "false" }));
  const since = field("Since", h("input", { name: "since", type: "datetime-local" }));
  const until = field("Until", h("input", { name: "until", type: "datetime-local" }));
  const filterFields = { status, PrimaryKey: contact, EventId: eventId, since, until };
  const filterErr = errorBox("filter-error");
  const tbody = h("tbody");
  const more = h("div", { class: "actions" });
  const listErr = errorBox("list-error");
  const count = h("p", { class: "muted", id: "delivery-count" });

  function query(before) {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (status.control.value) q.set("status", status.control.value);
    if (contact.control.value.trim()) q.set("PrimaryKey", contact.control.value.trim());
    if (eventId.control.value.trim()) q.set("EventId", eventId.control.value.trim());
    const s = inputTime(since.control.value);
    const u = inputTime(until.control.value);
    if (s) q.set("since", s);
    if (u) q.set("until", u);
    if (before) q.set("before", String(before));
    return q;
  }

  async function load(before) {
    for (const f of Object.values(filterFields)) fieldError(f, null);
    showError(filterErr, null);
    let page;
    try {
      page = await get(`/Webhook/${id}/Deliveries?${query(before)}`);
    } catch (e) {
      const named = Object.keys(filterFields).find((k) => new RegExp(`\\b${k}\\b`, "i").test(e.message));
      if (named) fieldError(filterFields[named], e.describe());
      else showError(filterErr, e);
      return;
    }
    if (!before) tbody.replaceChildren();
    for (const d of page) tbody.append(...deliveryRows(id, d, tbody, listErr));
    count.textContent = `${tbody.querySelectorAll("tr.delivery").length} deliveries shown`;
    fill(more, page.length === PAGE
      ? button("Older deliveries", () => load(page[page.length - 1].DeliveryId))
      : null);
  }

  const filterForm = h("form", { class: "filters", novalidate: true, "aria-label": "Filter deliveries" },
    status.wrap, contact.wrap, eventId.wrap, since.wrap, until.wrap,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Search"),
      button("Clear", () => {
        for (const f of Object.values(filterFields)) f.control.value = "";
        return load();
      })),
    filterErr);
  filterForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });

  const chartBox = h("div", { class: "chart" });
  fill(main,
    h("p", {}, h("a", { href: "#/webhooks" }, "← Webhooks")),
    h("div", { class: "heading" },
      h("h1", {}, `Deliveries of ${hook.Name}`),
      h("div", { class: "row-actions" },
        h("span", { class: `badge ${active ? "ok" : hook.State === "TooManyErrors" ? "bad" : "idle"}`, id: "hook-state" }, hook.State),
        toggle,
        button("Refresh", async () => {
          await load();
          await chart(chartBox, id);
          say("Delivery log refreshed.");
        }, { class: "refresh" }))),
    stateErr,
    h("p", { class: "muted url" }, hook.TargetUrl, " · ", (hook.Events || []).join(", ")),
    h("section", { "aria-labelledby": "chart-title", class: "card" },
      h("h2", { id: "chart-title" }, "Last 30 minutes"), chartBox),
    h("section", { "aria-labelledby": "log-title" },
      h("h2", { id: "log-title" }, "Delivery log"),
      filterForm, count, listErr,
      h("div", { class: "table-wrap" }, h("table", { class: "cards log" },
        h("caption", { class: "sr-only" }, "Deliveries, newest first"),
        h("thead", {}, h("tr", {},
          ["Id", "Event", "Contact", "Status", "Attempts", "Last status", "Created", "Completed", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
        tbody)),
      more),
    replaySection(id, () => load()));
  await Promise.all([load(), chart(chartBox, id)]);
}

function deliveryRows(hookId, d, tbody, listErr) {
  const detail = h("tr", { class: "attempts", hidden: true }, h("td", { colspan: 9 }));
  const err = errorBox(`delivery-${d.DeliveryId}-error`);
  const toggle = button("Attempts", async () => {
    const open = toggle.getAttribute("aria-expanded") === "true";
    if (open) {
      detail.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      return;
    }
    showError(err, null);
    try {
      const full = await get(`/Webhook/${hookId}/Deliveries/${d.DeliveryId}`);
      fill(detail.firstChild, attemptsTable(full));
      detail.hidden = false;
      toggle.setAttribute("aria-expanded", "true");
    } catch (e) {
      showError(err, e);
    }
  }, { "aria-expanded": "false", "aria-label": `Attempts of delivery ${d.DeliveryId}` });
  const resend = button("Resend", async () => {
    showError(err, null);
    try {
      const r = await api("POST", `/Webhook/${hookId}/Deliveries/${d.DeliveryId}/Resend`);
      say(`Delivery ${d.DeliveryId} resent as delivery ${r.data.DeliveryId}.`);
      const rows = deliveryRows(hookId, r.data, tbody, listErr);
      tbody.prepend(...rows);
      rows[0].classList.add("fresh");
    } catch (e) {
      showError(err, e);
    }
  }, { "aria-label": `Resend delivery ${d.DeliveryId}`, class: "resend" });
  const main = h("tr", { class: "delivery", "data-delivery": d.DeliveryId },
    td("Id", String(d.DeliveryId), d.ReplayOf ? h("span", { class: "muted" }, " (again)") : null),
    td("Event", d.Event),
    td("Contact", h("a", { href: `#/contacts/${d.PrimaryKey}` }, String(d.PrimaryKey))),
    td("Status", statusBadge(d.Status)),
    td("Attempts", String(d.Attempts), d.FailedCycles ? ` (${d.FailedCycles} failed cycles)` : ""),
    td("Last status", d.LastStatus == null ? "" : String(d.LastStatus),
      d.LastError ? h("div", { class: "muted clip", title: d.LastError }, d.LastError.split("\n")[0]) : null),
    td("Created", showDate(d.Created)),
    td("Completed", showDate(d.Completed) || (d.NextAttemptAt ? `next ${showDate(d.NextAttemptAt)}` : "")),
    td("Actions", h("div", { class: "row-actions" }, toggle, resend), err));
  return [main, detail];
}

function attemptsTable(full) {
  const attempts = full.AttemptLog || [];
  if (attempts.length === 0) return h("p", { class: "muted" }, "No attempt yet.");
  return h("table", { class: "inner cards" },
    h("caption", {}, `Attempts of delivery ${full.DeliveryId}`),
    h("thead", {}, h("tr", {}, ["Retry", "At", "EventId", "Response code", "Duration", "Receiver's answer"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, attempts.map((a) => h("tr", {},
      td("Retry", String(a.Retry)),
      td("At", showDate(a.AttemptedAt)),
      td("EventId", h("code", {}, a.EventId)),
      td("Response code", a.StatusCode == null ? "none" : String(a.StatusCode)),
      td("Duration", `${a.DurationMs.toFixed(1)} ms`),
      td("Receiver's answer", a.Error || a.Response
        ? h("pre", {}, [a.Error, a.Response].filter(Boolean).join("\n"))
        : h("span", { class: "muted" }, a.StatusCode === 200 ? "accepted" : ""))))));
}

function replaySection(id, reload) {
  const since = field("Since", h("input", { type: "datetime-local", name: "since", required: true, value: localInput(Date.now() - 3600e3) }));
  const until = field("Until", h("input", { type: "datetime-local", name: "until" }), "Empty: up to now.");
  const onlyFailed = h("input", { type: "checkbox", name: "onlyFailed", id: "replay-only-failed" });
  const err = errorBox("replay-error");
  const progress = h("progress", { max: 1, value: 0, hidden: true, id: "replay-progress" });
  const report = h("p", { role: "status", id: "replay-report" });
  const form = h("form", { class: "card", novalidate: true, "aria-labelledby": "replay-title" },
    h("h2", { id: "replay-title" }, "Replay a time window"),
    h("p", { class: "muted" }, "Queues the logged events of the window again for this webhook (those still pending are skipped)."),
    h("div", { class: "filters" }, since.wrap, until.wrap,
      h("label", { class: "check", for: "replay-only-failed" }, onlyFailed, "Only events not delivered")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Replay")),
    err, progress, report);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    fieldError(since, null);
    fieldError(until, null);
    showError(err, null);
    if (!since.control.value) {
      fieldError(since, "Choose where the window starts.");
      since.control.focus();
      return;
    }
    const body = { since: inputTime(since.control.value), onlyFailed: onlyFailed.checked };
    const u = inputTime(until.control.value);
    if (u) body.until = u;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    progress.hidden = false;
    progress.removeAttribute("value");
    report.textContent = "Replaying…";
    try {
      let { status, data: job } = await api("POST", `/Webhook/${id}/Replay`, body);
      show(job);
      while (status === 202 || job.status === "Running") {
        await new Promise((r) => setTimeout(r, 500));
        ({ status, data: job } = await api("GET", `/Webhook/${id}/Replay/${job.replayId}`));
        show(job);
      }
      if (job.status === "Failed") showError(err, new Error(`The replay failed: ${job.error}`));
      await reload();
    } catch (e) {
      const named = /\buntil\b/i.test(e.message) ? until : /\bsince\b/i.test(e.message) ? since : null;
      if (named) fieldError(named, e.describe());
      else showError(err, e);
      progress.hidden = true;
      report.textContent = "";
    } finally {
      submit.disabled = false;
    }
  });
  function show(job) {
    const done = job.status !== "Running";
    if (done) {
      progress.max = 1;
      progress.value = 1;
    }
    report.textContent = `${job.status}: ${job.matched} events matched, ${job.queued} queued, ${job.skipped} skipped.`;
  }
  return form;
}
