// Pure helpers of the audit console: no DOM, no network, no storage.
// tests/unit/test_console.py reads ENDPOINTS and QUEUES with a regex (keep one entry per line,
// double quotes, FastAPI path templates) and runs the formatters under node when it is installed.

/**
 * Every API call the console makes: [method, FastAPI path template, query parameters it may send].
 * The test checks each one against the routes the audit app serves (services/audit/app.py build_api).
 */
export const ENDPOINTS = Object.freeze({
  checkToken: ["GET", "/api/v1/faq", []],
  search: ["GET", "/api/v1/search", ["q"]],
  payment: ["GET", "/api/v1/payments/{payment_id}", []],
  refund: ["GET", "/api/v1/refunds/{refund_id}", []],
  visa: ["GET", "/api/v1/visas/{sponsor_id}/{export_number}/{serial_number}", []],
  balances: ["GET", "/api/v1/beneficiaries/{beneficiary_id}/balances", []],
  refunds: ["GET", "/api/v1/refunds", ["status", "cursor"]],
  unreflected: ["GET", "/api/v1/payments/unreflected", ["cursor"]],
  mismatches: ["GET", "/api/v1/visas/status-mismatches", ["cursor"]],
  jawazatQueue: ["GET", "/api/v1/jawazat/queue", ["cursor"]],
  jawazatApprove: ["POST", "/api/v1/jawazat/refunds/{refund_id}/approve", []],
  jawazatReject: ["POST", "/api/v1/jawazat/refunds/{refund_id}/reject", []],
  reviewsQueue: ["GET", "/api/v1/reviews/queue", ["cursor"]],
  reviewsApprove: ["POST", "/api/v1/reviews/refunds/{refund_id}/approve", []],
  reviewsReject: ["POST", "/api/v1/reviews/refunds/{refund_id}/reject", []],
  refundsCsv: ["GET", "/api/v1/refunds.csv", ["status"]],
  unreflectedCsv: ["GET", "/api/v1/payments/unreflected.csv", []],
  mismatchesCsv: ["GET", "/api/v1/visas/status-mismatches.csv", []],
  searchCsv: ["GET", "/api/v1/search.csv", ["q"]],
  statsRefunds: ["GET", "/api/v1/stats/refunds", ["from", "to", "bucket"]],
  statsSla: ["GET", "/api/v1/stats/sla", ["from", "to"]],
});

/**
 * The decision queues, mirroring QUEUES in services/audit/refunds_api.py (the test compares them).
 * The server enforces these roles; the console only uses them to hide what a role cannot use.
 */
export const QUEUES = Object.freeze({
  jawazat: { list: "jawazatQueue", approve: "jawazatApprove", reject: "jawazatReject", readers: ["jawazat", "admin", "auditor"], deciders: ["jawazat"] },
  reviews: { list: "reviewsQueue", approve: "reviewsApprove", reject: "reviewsReject", readers: ["mofa", "admin", "auditor"], deciders: ["mofa"] },
});

/** Roles that see IDs and IBANs in full (FULL_PII_ROLES in services/audit/api.py). */
export const FULL_PII_ROLES = Object.freeze(["auditor", "admin"]);

/** The case kinds a search result may open, by the endpoint that serves the case. */
export const CASE_ENDPOINTS = Object.freeze({
  payment: "payment",
  refund: "refund",
  visa: "visa",
  beneficiary: "balances",
});

/** A path from a template: every {name} replaced by its value, percent-encoded as one segment. */
export function fillPath(template, params = {}) {
  return template.replace(/\{([a-z_]+)\}/g, (_, name) => {
    const value = params[name];
    if (value === undefined || value === null || String(value) === "") {
      throw new Error(`missing path parameter ${name}`);
    }
    return encodeURIComponent(String(value));
  });
}

/** The request URL of an endpoint: its path, and the query parameters it declares (others refused). */
export function endpointUrl(name, params = {}, query = {}) {
  const entry = ENDPOINTS[name];
  if (!entry) throw new Error(`unknown endpoint ${name}`);
  const [, template, allowed] = entry;
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (!allowed.includes(key)) throw new Error(`${name} takes no query parameter ${key}`);
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return fillPath(template, params) + (text ? `?${text}` : "");
}

function splitPath(path) {
  return path.split("/").slice(1);
}

/**
 * Which case a search result's `url` names: {endpoint, params}, or null when it is not an API
 * path of a case this console knows (other hosts, query strings, dot segments and fixed routes such
 * as /api/v1/payments/unreflected are refused, so a result can never make the console fetch
 * something else).
 */
export function parseCaseUrl(url) {
  if (typeof url !== "string" || !url.startsWith("/api/v1/") || /[?#\\\s]/.test(url)) return null;
  const segments = splitPath(url);
  let values;
  try {
    values = segments.map((s) => decodeURIComponent(s));
  } catch {
    return null;
  }
  if (values.some((v) => v === "" || v === "." || v === ".." || v.includes("/"))) return null;
  const fixed = Object.values(ENDPOINTS).some(([, template]) => !template.includes("{") && template === url);
  if (fixed) return null;
  for (const endpoint of Object.values(CASE_ENDPOINTS)) {
    const parts = splitPath(ENDPOINTS[endpoint][1]);
    if (parts.length !== values.length) continue;
    const params = {};
    const matches = parts.every((part, i) => {
      const name = /^\{([a-z_]+)\}$/.exec(part);
      if (name) {
        params[name[1]] = values[i];
        return true;
      }
      return part === values[i];
    });
    if (matches) return { endpoint, params };
  }
  return null;
}

/** Halalas (an integer) as SAR with two decimals and grouped thousands: 123456 -> "1,234.56". */
export function formatHalalas(halalas) {
  if (typeof halalas !== "number" || !Number.isSafeInteger(halalas)) return null;
  const sign = halalas < 0 ? "-" : "";
  const abs = Math.abs(halalas);
  const riyals = String(Math.trunc(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const fraction = String(abs % 100).padStart(2, "0");
  return `${sign}${riyals}.${fraction}`;
}

const RFC3339 = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * An API time as it was given (the API sends Asia/Riyadh times with their offset): date and time,
 * no conversion; the offset is shown only when it is not Riyadh's +03:00.
 */
export function formatTime(value) {
  if (typeof value !== "string") return null;
  const match = RFC3339.exec(value);
  if (!match) return value;
  const [, date, time, , offset] = match;
  return offset === "+03:00" ? `${date} ${time}` : `${date} ${time} ${offset.toUpperCase()}`;
}

/** Arabic-Indic and Persian digits to 0-9, whitespace trimmed and collapsed; an IBAN loses its spaces. */
export function normalizeQuery(text) {
  const western = String(text ?? "")
    .replace(/[\u0660-\u0669]/g, (d) => String(d.charCodeAt(0) - 0x0660))
    .replace(/[\u06f0-\u06f9]/g, (d) => String(d.charCodeAt(0) - 0x06f0))
    .replace(/\s+/g, " ")
    .trim();
  return /^sa[0-9 ]+$/i.test(western) ? western.replace(/ /g, "").toUpperCase() : western;
}

/** A pasted token without a "Bearer " prefix or surrounding whitespace. */
export function cleanToken(text) {
  return String(text ?? "").trim().replace(/^bearer\s+/i, "").trim();
}

/**
 * The claims of a JWT, decoded WITHOUT verifying its signature: for display only (who is signed
 * in, which buttons to show). The server verifies every request. Null when it is not a JWT.
 */
export function decodeClaims(token) {
  const parts = String(token ?? "").split(".");
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** True when the claims carry an expiry (seconds since the epoch) that has passed at `nowMs`. */
export function isExpired(claims, nowMs = Date.now()) {
  return typeof claims?.exp === "number" && claims.exp * 1000 <= nowMs;
}

/** A message with {name} placeholders filled; unknown placeholders stay as they are. */
export function interpolate(template, vars = {}) {
  return String(template).replace(/\{([a-z_]+)\}/g, (whole, name) =>
    Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : whole);
}

/** The text of a FastAPI error body's `detail` (a string, or a list of validation errors). */
export function detailText(body) {
  const detail = body && typeof body === "object" ? body.detail : null;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => (d && typeof d === "object" ? [Array.isArray(d.loc) ? d.loc.join(".") : "", d.msg].filter(Boolean).join(": ") : String(d)))
      .join("; ");
  }
  return "";
}

/** What a refund's decision was, from its state and who decided: "approved", "rejected" or null. */
export function decisionOf(refund) {
  if (!refund) return null;
  if (refund.state === "REJECTED") return "rejected";
  return refund.decided_by ? "approved" : null;
}

/** The refund case related to a visa and the payment related to a refund or visa, as endpoint calls. */
export function relatedCalls(kind, data) {
  const calls = {};
  if (!data) return calls;
  if (kind === "refund") {
    const ref = data.reference || {};
    if (ref.payment_id) calls.payment = { endpoint: "payment", params: { payment_id: ref.payment_id } };
    if (/^[12][0-9]{9}$/.test(ref.sponsor_id || "") && ref.export_number && ref.serial_number) {
      calls.visa = {
        endpoint: "visa",
        params: { sponsor_id: ref.sponsor_id, export_number: ref.export_number, serial_number: ref.serial_number },
      };
    }
  } else if (kind === "visa") {
    if (data.refund_id) calls.refund = { endpoint: "refund", params: { refund_id: data.refund_id } };
    if (data.payment_id) calls.payment = { endpoint: "payment", params: { payment_id: data.payment_id } };
  }
  return calls;
}

/** A visa's API params when its sponsor ID is shown in full (masked IDs cannot open the case). */
export function visaParams(row) {
  if (!row || !/^[12][0-9]{9}$/.test(row.sponsor_id || "")) return null;
  return { sponsor_id: row.sponsor_id, export_number: row.export_number, serial_number: row.serial_number };
}
