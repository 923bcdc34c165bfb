// Deliveries per minute, failure rate and latency percentiles of the last 30 minutes, computed
// here from the delivery log (at most 1,000 deliveries of the window), drawn as SVG.
import { get, parseDate } from "./api.js";
import { h, s, fill, errorBox, showError } from "./dom.js";

const MINUTES = 30;

/** The p-th percentile (0..100) of sorted numbers. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** A delivery that did not go through at its first attempt (or not at all). */
function troubled(d) {
  return d.Status === "failed" || d.FailedCycles > 0 || d.Attempts > 1 ||
    (d.LastStatus != null && (d.LastStatus < 200 || d.LastStatus > 299));
}

function tick(n) {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function fmtMs(ms) {
  if (Number.isNaN(ms)) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export async function chart(box, hookId) {
  const err = errorBox(`chart-error`);
  const now = Date.now();
  const start = Math.floor(now / 60000) * 60000 - (MINUTES - 1) * 60000;
  let list;
  try {
    list = await get(`/Webhook/${hookId}/Deliveries?limit=1000&since=${new Date(start).toISOString()}`);
  } catch (e) {
    fill(box, err);
    showError(err, e);
    return;
  }
  const buckets = Array.from({ length: MINUTES }, (_, i) => ({ at: start + i * 60000, ok: 0, bad: 0 }));
  const latencies = [];
  for (const d of list) {
    const created = parseDate(d.Created);
    if (Number.isNaN(created)) continue;
    const b = buckets[Math.floor((created - start) / 60000)];
    if (!b) continue;
    if (troubled(d)) b.bad += 1;
    else b.ok += 1;
    const done = parseDate(d.Completed);
    if (d.Status === "delivered" && !Number.isNaN(done)) latencies.push(Math.max(0, done - created));
  }
  latencies.sort((a, b) => a - b);
  const total = buckets.reduce((n, b) => n + b.ok + b.bad, 0);
  const bad = buckets.reduce((n, b) => n + b.bad, 0);
  const p = (q) => fmtMs(percentile(latencies, q));
  const summary = `${total} deliveries in the last ${MINUTES} minutes, ${total ? ((100 * bad) / total).toFixed(1) : "0.0"} % not delivered at the first attempt. ` +
    `Latency from commit to delivery: p50 ${p(50)}, p90 ${p(90)}, p99 ${p(99)}.`;

  const W = 600, H = 180, L = 36, R = 48, T = 10, B = 24;
  const max = Math.max(1, ...buckets.map((b) => b.ok + b.bad));
  const bw = (W - L - R) / MINUTES;
  const y = (n) => T + (H - T - B) * (1 - n / max);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-desc", class: "chart-svg" });
  // Axes and grid.
  for (const frac of [0, 0.5, 1]) {
    const yy = T + (H - T - B) * (1 - frac);
    svg.append(s("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "grid" }));
    svg.append(s("text", { x: L - 4, y: yy + 4, class: "axis", "text-anchor": "end" }, tick(max * frac)));
    svg.append(s("text", { x: W - R + 4, y: yy + 4, class: "axis rate" }, `${Math.round(frac * 100)}%`));
  }
  const points = [];
  buckets.forEach((b, i) => {
    const x = L + i * bw + 1;
    const n = b.ok + b.bad;
    if (b.ok) svg.append(s("rect", { x, y: y(n), width: bw - 2, height: y(b.bad) - y(n), class: "bar ok" },
      s("title", {}, `${new Date(b.at).toLocaleTimeString()}: ${b.ok} delivered at once`)));
    if (b.bad) svg.append(s("rect", { x, y: y(b.bad), width: bw - 2, height: y(0) - y(b.bad), class: "bar bad" },
      s("title", {}, `${new Date(b.at).toLocaleTimeString()}: ${b.bad} with failed attempts`)));
    if (n) points.push(`${x + bw / 2 - 1},${T + (H - T - B) * (1 - b.bad / n)}`);
    if (i % 5 === 0) {
      const d = new Date(b.at);
      svg.append(s("text", { x, y: H - 6, class: "axis" }, `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`));
    }
  });
  if (points.length > 1) svg.append(s("polyline", { points: points.join(" "), class: "rate-line" }));
  for (const pt of points) {
    const [cx, cy] = pt.split(",");
    svg.append(s("circle", { cx, cy, r: 2.5, class: "rate-dot" }));
  }
  fill(box,
    h("p", { id: "chart-desc", class: "chart-summary" }, summary),
    svg,
    h("ul", { class: "legend" },
      h("li", {}, h("span", { class: "swatch ok" }), "delivered at the first attempt"),
      h("li", {}, h("span", { class: "swatch bad" }), "with failed attempts"),
      h("li", {}, h("span", { class: "swatch rate" }), "failure rate (right axis)")),
    h("dl", { class: "stats" },
      h("div", {}, h("dt", {}, "Deliveries"), h("dd", {}, String(total))),
      h("div", {}, h("dt", {}, "Failure rate"), h("dd", {}, total ? `${((100 * bad) / total).toFixed(1)} %` : "–")),
      h("div", {}, h("dt", {}, "p50"), h("dd", {}, p(50))),
      h("div", {}, h("dt", {}, "p90"), h("dd", {}, p(90))),
      h("div", {}, h("dt", {}, "p99"), h("dd", {}, p(99)))));
}
