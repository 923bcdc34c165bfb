// The API with the key of this browser tab's session (sessionStorage only: gone when the tab
// closes, never sent anywhere but this server's API).

const KEY = "crmhooks.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

/** An API answer that was not a success, with the server's JSON error body. */
export class ApiError extends Error {
  constructor(status, body, text) {
    const message =
      (body && typeof body === "object" && body.Message) ||
      (typeof body === "string" && body) ||
      text ||
      `HTTP ${status}`;
    super(message);
    this.status = status;
    this.type = (body && body.ErrorType) || (status === 0 ? "Network" : `HTTP ${status}`);
  }
  describe() {
    return this.status ? `${this.message} (${this.status} ${this.type})` : this.message;
  }
}

let onUnauthorized = () => {};

/** What to do when the key is refused (sign in again). */
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

/** Calls `method /api/v1{path}`; the answer's {status, data, headers}, or throws ApiError. */
export async function api(method, path, body, key = session.key) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError(0, null, `The server cannot be reached (${e.message}).`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data, text);
    if (resp.status === 401 && key === session.key) onUnauthorized(err);
    throw err;
  }
  return { status: resp.status, data, headers: resp.headers };
}

export const get = async (path) => (await api("GET", path)).data;

/**
 * A date the API wrote (ISO 8601 with up to 7 fraction digits, with or without an offset;
 * one without is taken as this browser's local time) as milliseconds; NaN for none.
 */
export function parseDate(s) {
  if (!s || s.startsWith("0001-01-01")) return NaN;
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$/.exec(s);
  if (!m) return NaN;
  const [, y, mo, d, hh, mm, ss, frac = "0", zone] = m;
  const ms = Number(`0.${frac}`) * 1000;
  if (!zone) return new Date(+y, +mo - 1, +d, +hh, +mm, +ss, ms).getTime();
  let t = Date.UTC(+y, +mo - 1, +d, +hh, +mm, +ss, ms);
  if (zone !== "Z") {
    const sign = zone[0] === "-" ? -1 : 1;
    t -= sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6))) * 60000;
  }
  return t;
}

/** A date for people: local time, to the second; "" for none. */
export function showDate(s) {
  const t = parseDate(s);
  if (Number.isNaN(t)) return "";
  const d = new Date(t);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The value of a datetime-local input as RFC 3339 (UTC), or undefined when empty. */
export function inputTime(value) {
  if (!value) return undefined;
  const t = new Date(value);
  return Number.isNaN(t.getTime()) ? value : t.toISOString();
}

/** A datetime-local input's value for `ms`. */
export function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
