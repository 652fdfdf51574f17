// The audit console: one page for MoF staff and the 19990 contact centre, over the audit API.
//
// Rules this file keeps (tests/unit/test_console.py checks them):
// - every server value reaches the page as text (textContent / text nodes), never as HTML;
// - no inline handlers, no eval: the page runs under a strict Content-Security-Policy;
// - the bearer token lives in sessionStorage only (gone with the tab), never in a URL;
// - every API call goes through api(), i.e. through ENDPOINTS in lib.js.
// The JWT is decoded here only to show who is signed in and which buttons a role may use;
// the server checks the token and the role on every request.

import {
  CASE_ENDPOINTS,
  ENDPOINTS,
  FULL_PII_ROLES,
  QUEUES,
  cleanToken,
  decisionOf,
  decodeClaims,
  detailText,
  endpointUrl,
  formatHalalas,
  formatTime,
  interpolate,
  isExpired,
  normalizeQuery,
  parseCaseUrl,
  relatedCalls,
  visaParams,
} from "./lib.js";

const TOKEN_KEY = "refund-ledger.console.token"; // sessionStorage only
const LANG_KEY = "refund-ledger.console.lang"; // localStorage: a display preference, not a secret
const LANGS = { ar: "rtl", en: "ltr" };
const NONE = "\u2014";

const state = {
  lang: "ar",
  strings: null,
  token: null,
  claims: null,
  view: null,
  generation: 0,
  search: { query: "", items: null, error: null, loading: false },
  caseModel: null,
  listModel: null,
  chartsModel: null,
};

class ApiError extends Error {
  constructor(status, detail, network = false) {
    super(network ? "network error" : `HTTP ${status}`);
    this.status = status;
    this.detail = detail || "";
    this.network = network;
  }
}

const $ = (id) => document.getElementById(id);

// ---- words --------------------------------------------------------------------------------------

function t(key, vars) {
  const table = state.strings?.[state.lang] ?? {};
  if (!Object.prototype.hasOwnProperty.call(table, key)) {
    console.warn("console: no words for", key);
    return key;
  }
  return interpolate(table[key], vars);
}

function hasWords(key) {
  return Object.prototype.hasOwnProperty.call(state.strings?.[state.lang] ?? {}, key);
}

/** The name of a code (agency, state, route...) in the current language; unknown codes as they are. */
function label(kind, code) {
  if (code === null || code === undefined || code === "") return NONE;
  const key = `${kind}.${code}`;
  return hasWords(key) ? t(key) : String(code);
}

function applyStaticWords() {
  document.documentElement.lang = state.lang;
  document.documentElement.dir = LANGS[state.lang];
  document.title = t("app.title");
  $("lang").lang = state.lang === "ar" ? "en" : "ar"; // the button names the other language in its own words
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
    node.setAttribute("placeholder", t(node.dataset.i18nPlaceholder));
  }
  for (const node of document.querySelectorAll("[data-i18n-aria-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }
}

// ---- DOM (text only) ----------------------------------------------------------------------------

/** An element; string children become text nodes, "on*" entries become listeners. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${name} must be a function`);
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A value read left to right inside Arabic text (IDs, keys, references). */
function ltr(value, cls = "ltr") {
  if (value === null || value === undefined || value === "") return NONE;
  return h("bdi", { dir: "ltr", class: cls }, String(value));
}

function time(value) {
  if (!value) return NONE;
  return h("time", { datetime: value, dir: "ltr", class: "ltr", title: value }, formatTime(value));
}

function money(halalas, currency = "SAR") {
  const value = formatHalalas(halalas);
  if (value === null) return NONE;
  return h("span", { class: "amount" }, currency === "SAR" ? t("fmt.amount", { value }) : `${value} ${currency}`);
}

function code(kind, value) {
  if (value === null || value === undefined || value === "") return NONE;
  return h("span", { title: String(value) }, label(kind, value));
}

function yesNo(value) {
  if (value === null || value === undefined) return NONE;
  return t(value ? "common.yes" : "common.no");
}

function slaBadge(sla) {
  if (!sla) return null;
  return h("span", { class: `badge sla-${String(sla.status).toLowerCase().replace(/_/g, "-")}`, title: String(sla.status) },
    label("sla", sla.status));
}

function stateBadge(value) {
  if (!value) return NONE;
  return h("span", { class: "badge state", title: String(value) }, label("state", value));
}

/** A button that opens a case (never a link: nothing from the server becomes a URL of the page). */
function caseButton(endpoint, params, text) {
  return h("button", { type: "button", class: "link", onclick: () => openCase({ endpoint, params }) }, ltr(text));
}

/** Rows of facts; a row whose value is undefined is left out, null shows as a dash. */
function facts(rows) {
  const list = h("dl", { class: "facts" });
  for (const [key, value] of rows) {
    if (value === undefined) continue;
    list.append(h("div", { class: "fact" }, h("dt", {}, t(key)), h("dd", {}, value === null ? NONE : value)));
  }
  return list;
}

function section(titleKey, ...children) {
  return h("section", { class: "panel" }, h("h3", {}, t(titleKey)), ...children);
}

function table(columns, rows, rowClass) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col" }, t(c.head))));
  const body = h("tbody", {}, rows.map((row) => h("tr", { class: rowClass ? rowClass(row) : null },
    columns.map((c) => h("td", {}, c.cell(row) ?? NONE)))));
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), body));
}

function loading() {
  return h("p", { class: "loading", role: "status" }, t("common.loading"));
}

// ---- the API ------------------------------------------------------------------------------------

async function api(endpoint, { params = {}, query = {}, body } = {}) {
  const [method] = ENDPOINTS[endpoint];
  const url = endpointUrl(endpoint, params, query);
  const headers = { Accept: "application/json", Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store", redirect: "error", referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "", true);
  }
  let payload = null;
  if ((response.headers.get("content-type") || "").includes("application/json")) {
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, detailText(payload));
  if (payload === null || typeof payload !== "object") throw new ApiError(502, "the answer was not JSON");
  return payload;
}

/** Download a CSV export (streamed by the server) as a file; the token goes in the header, never a URL. */
async function download(endpoint, query, filename) {
  const url = endpointUrl(endpoint, {}, query);
  const headers = { Accept: "text/csv", Authorization: `Bearer ${state.token}` };
  let response;
  try {
    response = await fetch(url, { method: "GET", headers, credentials: "omit", cache: "no-store", redirect: "error", referrerPolicy: "no-referrer" });
  } catch {
    throw new ApiError(0, "", true);
  }
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    throw new ApiError(response.status, detailText(payload));
  }
  const file = await response.blob();
  const link = h("a", { download: filename, hidden: true });
  link.href = URL.createObjectURL(file); // a local object, never a server URL
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

/** A button that downloads an export; a failure shows where `place` says. */
function csvButton(endpoint, query, filename, place) {
  return h("button", {
    type: "button", class: "csv",
    onclick: async () => {
      try {
        await download(endpoint, query, filename);
      } catch (error) {
        const shown = errorBox(error, null);
        if (shown) place(shown);
      }
    },
  }, t("common.download_csv"));
}

/**
 * What to show for a failed call. 401 signs out (back to sign-in), 403 says the role may not,
 * 5xx and network errors offer a retry. Returns null when the page was taken to sign-in.
 */
function errorBox(error, retry, { forbiddenKey = "error.forbidden", notFoundKey = "error.not_found" } = {}) {
  if (!(error instanceof ApiError)) {
    console.error(error);
    return h("div", { class: "error", role: "alert" }, t("error.unexpected"));
  }
  if (error.status === 401) {
    signOut("signin.session_ended");
    return null;
  }
  const detail = error.detail ? h("span", { class: "detail", lang: "en", dir: "ltr" }, error.detail) : null;
  let text;
  let canRetry = false;
  if (error.network) {
    text = t("error.network");
    canRetry = true;
  } else if (error.status === 403) {
    text = t(forbiddenKey);
  } else if (error.status === 404) {
    text = t(notFoundKey);
  } else if (error.status === 409) {
    text = t("error.conflict");
  } else if (error.status === 400 || error.status === 422) {
    text = t("error.invalid");
  } else if (error.status >= 500) {
    text = t("error.server");
    canRetry = true;
  } else {
    text = t("error.status", { status: error.status });
  }
  return h("div", { class: "error", role: "alert" },
    h("p", {}, text),
    detail && error.status !== 403 && error.status !== 404 ? h("p", {}, detail) : null,
    canRetry && retry ? h("button", { type: "button", onclick: retry }, t("error.retry")) : null);
}

// ---- session ------------------------------------------------------------------------------------

function role() {
  return state.claims?.role ?? null;
}

function mayRead(queueName) {
  return QUEUES[queueName].readers.includes(role());
}

function mayDecide(queueName) {
  return QUEUES[queueName].deciders.includes(role());
}

function signinMessage(key) {
  const box = $("signin-message");
  box.textContent = key ? t(key) : "";
  box.hidden = !key;
}

async function signIn(raw) {
  const token = cleanToken(raw);
  const claims = decodeClaims(token);
  if (!claims) return signinMessage("signin.malformed");
  if (isExpired(claims)) return signinMessage("signin.expired_token");
  signinMessage("signin.checking");
  state.token = token;
  try {
    await api("checkToken");
  } catch (error) {
    state.token = null;
    if (error instanceof ApiError && error.status === 401) return signinMessage("signin.rejected");
    if (error instanceof ApiError && error.status === 403) return signinMessage("signin.role_refused");
    return signinMessage(error instanceof ApiError && error.network ? "error.network" : "error.server");
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.claims = claims;
  $("token").value = "";
  signinMessage(null);
  enterApp();
  go({ name: "search" });
}

function signOut(reasonKey = null) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.claims = null;
  state.generation += 1;
  state.search = { query: "", items: null, error: null, loading: false };
  state.caseModel = null;
  state.listModel = null;
  state.chartsModel = null;
  $("case-body").replaceChildren();
  $("charts-body").replaceChildren();
  $("list-body").replaceChildren();
  $("search-results").replaceChildren();
  $("search-input").value = "";
  $("app").hidden = true;
  $("user").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  history.replaceState(null, "", "#");
  signinMessage(reasonKey);
  $("token").focus();
}

function enterApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  renderUser();
  for (const button of document.querySelectorAll("[data-queue]")) button.hidden = !mayRead(button.dataset.queue);
}

function renderUser() {
  const user = $("user");
  if (!state.claims) {
    user.hidden = true;
    return;
  }
  user.hidden = false;
  user.replaceChildren(ltr(state.claims.sub ?? "?"), " \u00b7 ", label("role", role()));
  user.title = t("header.display_only");
}

// ---- navigation ---------------------------------------------------------------------------------

const VIEWS = ["search", "case", "list", "charts"];

/** Open a view; its parameters (case keys) live in history.state, never in the URL. */
function go(view, { push = true } = {}) {
  const hash = view.name === "list" ? view.list : view.name;
  if (push) history.pushState(view, "", `#${hash}`);
  else history.replaceState(view, "", `#${hash}`);
  show(view);
}

function show(view) {
  state.view = view;
  state.generation += 1;
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view.name;
  for (const button of document.querySelectorAll("[data-nav]")) {
    const active = button.dataset.nav === (view.name === "list" ? view.list : view.name);
    if (active) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  if (view.name === "search") {
    renderSearch();
    $("search-input").focus();
  } else if (view.name === "case") {
    loadCase(view, state.generation);
  } else if (view.name === "list") {
    loadList(view, state.generation);
  } else if (view.name === "charts") {
    loadCharts(view, state.generation);
  }
}

function openCase(target) {
  go({ name: "case", endpoint: target.endpoint, params: target.params });
}

function rerender() {
  if (!state.view || !state.token) return;
  if (state.view.name === "search") renderSearch();
  else if (state.view.name === "case" && state.caseModel) renderCase();
  else if (state.view.name === "list" && state.listModel) renderList();
  else if (state.view.name === "charts" && state.chartsModel) renderCharts();
}

// ---- search -------------------------------------------------------------------------------------

async function runSearch(raw) {
  const query = normalizeQuery(raw);
  const input = $("search-input");
  input.value = query;
  if (!query || query.length < input.minLength) {
    state.search = { query, items: null, error: query ? "search.too_short" : "search.empty_query", loading: false };
    renderSearch();
    return;
  }
  const generation = ++state.generation;
  state.search = { query, items: null, error: null, loading: true };
  renderSearch();
  try {
    const body = await api("search", { query: { q: query } });
    if (generation !== state.generation) return;
    const items = Array.isArray(body.items) ? body.items : [];
    state.search = { query, items, queryKind: body.query_kind ?? null, error: null, loading: false };
    history.replaceState({ name: "search" }, "", "#search");
    renderSearch();
    const only = items.length === 1 ? parseCaseUrl(items[0].url) : null;
    if (only) openCase(only); // one match: the agent has a citizen waiting
  } catch (error) {
    if (generation !== state.generation) return;
    state.search = { query, items: null, error, loading: false };
    renderSearch();
  }
}

function renderSearch() {
  const box = $("search-results");
  const { items, error, loading: busy, queryKind } = state.search;
  if (busy) return box.replaceChildren(loading());
  if (typeof error === "string") {
    return box.replaceChildren(h("p", { class: "note" }, t(error, { n: $("search-input").minLength })));
  }
  if (error) {
    const shown = errorBox(error, () => runSearch(state.search.query), { notFoundKey: "search.unavailable" });
    return shown ? box.replaceChildren(shown) : undefined;
  }
  if (items === null) return box.replaceChildren();
  if (items.length === 0) return box.replaceChildren(h("p", { class: "note" }, t("search.none")));
  const list = h("ul", { class: "results" });
  for (const item of items) {
    const target = parseCaseUrl(item.url);
    const kind = CASE_ENDPOINTS[item.kind] ? item.kind : null;
    list.append(h("li", {}, h("button", {
      type: "button", class: "result", disabled: !target,
      title: target ? null : t("error.bad_link"),
      onclick: target ? () => openCase(target) : null,
    }, h("span", { class: "badge kind" }, kind ? t(`kind.${kind}`) : String(item.kind ?? "?")),
    ltr(item.key, "ltr key"),
    h("span", { class: "result-label" }, kind === "beneficiary" ? t("section.balances")
      : h("bdi", { dir: "ltr", lang: "en" }, String(item.label ?? ""))))));
  }
  const understood = queryKind && hasWords(`query_kind.${queryKind}`) ? t(`query_kind.${queryKind}`) : null;
  const exportButton = csvButton("searchCsv", { q: state.search.query }, "search-results.csv", (shown) => box.append(shown));
  box.replaceChildren(h("p", { class: "count" }, t("search.results", { n: items.length }),
    understood ? [" \u00b7 ", t("search.understood_as", { kind: understood })] : null, " ", exportButton), list);
}

// ---- case page ----------------------------------------------------------------------------------

const KIND_OF_ENDPOINT = Object.fromEntries(Object.entries(CASE_ENDPOINTS).map(([kind, e]) => [e, kind]));

async function loadCase(view, generation) {
  const body = $("case-body");
  body.replaceChildren(loading());
  const kind = KIND_OF_ENDPOINT[view.endpoint];
  if (!kind) return body.replaceChildren(h("p", { class: "error", role: "alert" }, t("error.bad_link")));
  let data;
  try {
    data = await api(view.endpoint, { params: view.params });
  } catch (error) {
    if (generation !== state.generation) return;
    const shown = errorBox(error, () => show(view));
    if (shown) body.replaceChildren(shown);
    return;
  }
  if (generation !== state.generation) return;
  const calls = relatedCalls(kind, data);
  const model = { view, kind, data, related: {} };
  for (const name of Object.keys(calls)) model.related[name] = { loading: true };
  state.caseModel = model;
  renderCase();
  $("case-title")?.focus();
  await Promise.all(Object.entries(calls).map(async ([name, call]) => {
    let result;
    try {
      result = { data: await api(call.endpoint, { params: call.params }) };
    } catch (error) {
      result = { error };
    }
    if (generation !== state.generation) return;
    if (result.error instanceof ApiError && result.error.status === 401) {
      signOut("signin.session_ended");
      return;
    }
    model.related[name] = result;
    renderCase();
  }));
}

/** The case's own data for a kind, or the related case's once it has loaded. */
function part(model, kind) {
  if (model.kind === kind) return model.data;
  return model.related[kind]?.data ?? null;
}

function relatedState(model, kind, titleKey) {
  const related = model.related[kind];
  if (!related || related.data) return null;
  if (related.loading) return section(titleKey, loading());
  return section(titleKey, errorBox(related.error, () => show(model.view)));
}

function caseTitle(model) {
  const d = model.data;
  const key = {
    payment: d.payment_id,
    refund: d.refund_id,
    visa: [d.sponsor_id, d.export_number, d.serial_number].join(" / "),
    beneficiary: d.beneficiary_id,
  }[model.kind];
  return h("h2", { id: "case-title", tabindex: "-1" }, h("span", { class: "badge kind" }, t(`kind.${model.kind}`)), " ", ltr(key));
}

function renderCase() {
  const model = state.caseModel;
  if (!model) return;
  const refund = part(model, "refund");
  const payment = part(model, "payment");
  const visa = part(model, "visa");
  const sla = refund?.sla ?? visa?.sla ?? null;
  const summary = h("div", { class: "summary" });
  if (sla) {
    summary.append(h("div", { class: "sla" }, h("span", { class: "sla-label" }, t("fact.sla")), slaBadge(sla),
      facts([["fact.sla_deadline", time(sla.deadline)], ["fact.business_days", ltr(sla.business_days_elapsed)]])));
  }
  if (refund) {
    summary.append(facts([["fact.next_owner", refund.next_step_owner ? code("agency", refund.next_step_owner)
      : t("case.no_next_step")]]));
  }
  const parts = [caseTitle(model), summary];
  if (!FULL_PII_ROLES.includes(role())) parts.push(h("p", { class: "note" }, t("case.masked_note")));
  if (refund) parts.push(tellTheCitizen(refund));
  else if (model.related.refund?.loading) parts.push(section("section.tell", loading()));
  const contact = refund?.liaison ?? visa?.liaison ?? null;
  if (contact) parts.push(liaisonSection(contact));

  if (payment) parts.push(section("section.payment", paymentFacts(payment, model.kind !== "payment")));
  else parts.push(relatedState(model, "payment", "section.payment"));
  if (visa) parts.push(section("section.cancellation", visaFacts(visa, model.kind !== "visa")));
  else parts.push(relatedState(model, "visa", "section.cancellation"));
  if (refund) parts.push(section("section.refund", refundFacts(refund, model.kind !== "refund")));
  else parts.push(relatedState(model, "refund", "section.refund"));
  if (refund?.time_by_agency && Object.keys(refund.time_by_agency).length) {
    parts.push(section("section.time_by_agency", facts(Object.entries(refund.time_by_agency)
      .map(([agency, hours]) => [`agency.${agency}`, t("fmt.hours", { n: hours })])
      .filter(([key]) => hasWords(key))),
    unnamedAgencies(refund.time_by_agency)));
  }
  if (model.kind === "beneficiary") parts.push(section("section.balances", balancesTable(model.data)));
  if (Array.isArray(model.data.timeline)) parts.push(section("section.timeline", timeline(model.data.timeline)));
  const body = $("case-body");
  const hadFocus = body.contains(document.activeElement);
  body.replaceChildren(...parts.filter(Boolean));
  if (hadFocus) $("case-title").focus(); // a related section arrived: keep the reader's place
}

/** Hours with agencies the words table has no name for (shown by code, never dropped). */
function unnamedAgencies(byAgency) {
  const rest = Object.entries(byAgency).filter(([agency]) => !hasWords(`agency.${agency}`));
  if (!rest.length) return null;
  return h("ul", { class: "plain" }, rest.map(([agency, hours]) => h("li", {}, ltr(agency), ": ", t("fmt.hours", { n: hours }))));
}

/** Whom to call at the agency owning the next step: the name in the reader's language. */
function liaisonSection(contact) {
  const name = contact.name?.[state.lang] ?? contact.name?.en ?? null;
  return h("section", { class: "panel liaison", "aria-labelledby": "liaison-title" },
    h("h3", { id: "liaison-title" }, t("section.liaison")),
    facts([
      ["fact.liaison_agency", code("agency", contact.agency)],
      ["fact.liaison_name", name ? h("span", { dir: "auto" }, name) : null],
      ["fact.liaison_role", contact.role ? h("span", { lang: "en", dir: "ltr" }, contact.role) : null],
      ["fact.liaison_phone", ltr(contact.phone)],
      ["fact.liaison_email", ltr(contact.email)],
    ]));
}

function tellTheCitizen(refund) {
  const words = refund.tell_the_citizen;
  const line = words?.[state.lang] ?? null;
  return h("section", { class: "panel tell", "aria-labelledby": "tell-title" },
    h("h3", { id: "tell-title" }, t("section.tell")),
    line ? h("p", { class: "tell-line", lang: state.lang, dir: LANGS[state.lang] }, line)
      : h("p", { class: "note" }, t("tell.none")));
}

function paymentFacts(p, linked) {
  return facts([
    ["fact.payment_id", linked ? caseButton("payment", { payment_id: p.payment_id }, p.payment_id) : ltr(p.payment_id)],
    ["fact.paid_at", time(p.paid_at)],
    ["fact.amount", money(p.amount, p.currency)],
    ["fact.payment_channel", code("channel", p.channel)],
    ["fact.sadad_bill_number", p.sadad_bill_number ? ltr(p.sadad_bill_number) : undefined],
    ["fact.bank", bank(p.bank?.name, p.bank?.code)],
    ["fact.agency", code("agency", p.agency)],
    ["fact.service", code("service", p.service_code)],
    ["fact.beneficiary", beneficiary(p.beneficiary_id)],
    ["fact.payer", p.third_party_payer ? ltr(p.payer_id) : undefined],
    ["fact.payer_iban", ltr(p.payer_iban)],
    ["fact.third_party", yesNo(p.third_party_payer)],
    ["fact.acknowledged_at", time(p.acknowledged_at)],
    ["fact.refund_state", code("state", p.refund_state)],
    ["fact.refunded_at", p.refunded_at ? time(p.refunded_at) : undefined],
  ]);
}

function visaFacts(v, linked) {
  const params = visaParams(v);
  const key = [v.sponsor_id, v.export_number, v.serial_number].join(" / ");
  return facts([
    ["fact.visa", linked && params ? caseButton("visa", params, key) : ltr(key)],
    ["fact.visa_type", code("visa_type", v.visa_type)],
    ["fact.issued_at", time(v.issued_at)],
    ["fact.fee", v.fee === null ? null : money(v.fee)],
    ["fact.payment_id", v.payment_id ? caseButton("payment", { payment_id: v.payment_id }, v.payment_id) : null],
    ["fact.cancellation_requested_at", time(v.cancellation_requested_at)],
    ["fact.cancelled_at", time(v.cancelled_at)],
    ["fact.cancellation_channel", code("channel", v.cancellation_channel)],
    ["fact.hours_since_issue", v.hours_since_issue === null ? null : t("fmt.hours", { n: v.hours_since_issue })],
    ["fact.route", code("route", v.route)],
    ["fact.route_reason", v.route_reason ? h("span", { lang: "en", dir: "ltr" }, v.route_reason) : null],
    ["fact.visa_status", ltr(v.status)],
    ["fact.status_changed_at", time(v.status_changed_at)],
    ["fact.status_mismatch", v.status_mismatch ? h("span", { class: "badge warn" }, t("common.yes")) : yesNo(false)],
    ["fact.refund_id", v.refund_id ? caseButton("refund", { refund_id: v.refund_id }, v.refund_id) : null],
    ["fact.refund_state", code("state", v.refund_state)],
    ["fact.refunded_at", time(v.refunded_at)],
    ["fact.bank_reference", ltr(v.bank_reference)],
  ]);
}

function refundFacts(r, linked) {
  const decision = decisionOf(r);
  const failed = r.state === "FAILED" || r.failed_at || r.failure_reason;
  return facts([
    ["fact.refund_id", linked ? caseButton("refund", { refund_id: r.refund_id }, r.refund_id) : ltr(r.refund_id)],
    ["fact.refund_state", stateBadge(r.state)],
    ["fact.route", code("route", r.route)],
    ["fact.route_owner", code("agency", r.route_owner)],
    ["fact.request_channel", code("channel", r.channel)],
    ["fact.requested_at", time(r.requested_at)],
    ["fact.amount", money(r.amount)],
    ["fact.agency", code("agency", r.agency)],
    ["fact.service", code("service", r.service_code)],
    ["fact.beneficiary", beneficiary(r.beneficiary_id)],
    ["fact.iban", ltr(r.iban)],
    ["fact.bank", bank(r.bank_name, r.bank_code)],
    ["fact.third_party", r.third_party_payer === undefined ? undefined : yesNo(r.third_party_payer)],
    ["fact.ordered_at", r.ordered_at === undefined ? undefined : time(r.ordered_at)],
    ["fact.decision", r.decided_at === undefined ? undefined : (decision ? t(`decision.${decision}`) : t("decision.none"))],
    ["fact.first_approval", r.first_approved_by ? h("span", {}, ltr(r.first_approved_by), " \u00b7 ", time(r.first_approved_at),
      r.awaiting_second_approval ? [" ", h("span", { class: "badge warn" }, t("four_eyes.waiting"))] : null) : undefined],
    ["fact.decided_by", r.decided_by ? ltr(r.decided_by) : undefined],
    ["fact.decided_at", r.decided_at ? time(r.decided_at) : undefined],
    ["fact.rejection_rule", r.rejection_rule ? ltr(r.rejection_rule) : undefined],
    ["fact.rejection_reason", r.rejection_reason ? h("span", { dir: "auto" }, r.rejection_reason) : undefined],
    ["fact.completed_at", r.completed_at === undefined ? undefined : time(r.completed_at)],
    ["fact.bank_reference", r.bank_reference === undefined ? undefined : ltr(r.bank_reference)],
    ["fact.failed_at", failed ? time(r.failed_at) : undefined],
    ["fact.failure_reason", failed ? (r.failure_reason ? h("span", { dir: "auto" }, r.failure_reason) : null) : undefined],
    ["fact.reference", r.reference && Object.keys(r.reference).length ? references(r.reference) : undefined],
    ["fact.rules_version", r.rules_version ? ltr(r.rules_version) : undefined],
  ]);
}

function references(reference) {
  return h("ul", { class: "plain" }, Object.entries(reference).map(([key, value]) =>
    h("li", {}, h("span", { class: "muted", title: key }, label("ref", key)), " ", ltr(value))));
}

function bank(name, bankCode) {
  if (!name && !bankCode) return NONE;
  return h("span", {}, name ? h("bdi", { dir: "ltr" }, name) : null, bankCode ? [" ", ltr(`(${bankCode})`, "ltr muted")] : null);
}

function beneficiary(id) {
  if (!id) return NONE;
  if (/^[12][0-9]{9}$/.test(id)) return caseButton("balances", { beneficiary_id: id }, id);
  return ltr(id); // masked for this role: the balances cannot be opened by a masked ID
}

function timeline(entries) {
  if (!entries.length) return h("p", { class: "note" }, t("timeline.empty"));
  return table([
    { head: "timeline.type", cell: (e) => ltr(e.type, "ltr code") },
    { head: "timeline.source", cell: (e) => ltr(e.source) },
    { head: "timeline.time", cell: (e) => time(e.time) },
    { head: "timeline.recorded_at", cell: (e) => time(e.recorded_at) },
    { head: "timeline.message", cell: (e) => toldWhat(e.message) },
  ], entries);
}

/** What the notifier told whom (ledger.notification.* entries): channel, masked address, the words. */
function toldWhat(message) {
  if (!message) return "";
  const to = [message.channel ? code("notice_channel", message.channel) : t("timeline.no_channel"),
    message.address ? ltr(message.address) : null];
  const words = message.body
    ? h("div", { class: "message-body", dir: "auto" }, message.subject ? `${message.subject}\n\n${message.body}` : message.body)
    : h("div", { class: "note" }, message.reason || "");
  return h("div", { class: "message" }, h("div", { class: "note" }, to.filter(Boolean).map((p, i) => [i ? " · " : "", p])), words);
}

function balancesTable(data) {
  const rows = Array.isArray(data.balances) ? data.balances : [];
  if (!rows.length) return h("p", { class: "note" }, t("list.empty"));
  return table([
    { head: "fact.agency", cell: (b) => code("agency", b.agency) },
    { head: "fact.service", cell: (b) => code("service", b.service_code) },
    { head: "balance.credited", cell: (b) => money(b.credited) },
    { head: "balance.charged", cell: (b) => money(b.charged) },
    { head: "balance.held", cell: (b) => money(b.held) },
    { head: "balance.refunded", cell: (b) => money(b.refunded) },
    { head: "balance.available", cell: (b) => money(b.available) },
    { head: "balance.updated_at", cell: (b) => time(b.updated_at) },
  ], rows);
}

// ---- lists --------------------------------------------------------------------------------------

const refundColumns = [
  { head: "fact.refund_id", cell: (r) => caseButton("refund", { refund_id: r.refund_id }, r.refund_id) },
  { head: "fact.requested_at", cell: (r) => time(r.requested_at) },
  { head: "fact.amount", cell: (r) => money(r.amount) },
  { head: "fact.agency", cell: (r) => code("agency", r.agency) },
  { head: "fact.route", cell: (r) => code("route", r.route) },
  { head: "fact.refund_state", cell: (r) => stateBadge(r.state) },
  { head: "fact.sla", cell: (r) => h("span", {}, slaBadge(r.sla), " ", time(r.sla?.deadline)) },
  { head: "fact.next_owner", cell: (r) => code("agency", r.next_step_owner) },
  { head: "fact.beneficiary", cell: (r) => ltr(r.beneficiary_id) },
];

/** Four eyes: who made the first approval of a case waiting for a second, different employee. */
const approvalsColumn = {
  head: "list.approvals",
  cell: (r) => (r.awaiting_second_approval
    ? h("span", { class: "badge warn four-eyes" }, t("four_eyes.awaiting", { who: r.first_approved_by ?? "?" }))
    : null),
};

const LISTS = {
  overdue: {
    title: "nav.overdue", help: "list.overdue_help", endpoint: "refunds", query: { status: "overdue" }, columns: refundColumns,
    csv: ["refundsCsv", { status: "overdue" }, "overdue-refunds.csv"],
  },
  unreflected: {
    title: "nav.unreflected", help: "list.unreflected_help", endpoint: "unreflected", query: {},
    csv: ["unreflectedCsv", {}, "unreflected-payments.csv"],
    columns: [
      { head: "fact.payment_id", cell: (p) => caseButton("payment", { payment_id: p.payment_id }, p.payment_id) },
      { head: "fact.paid_at", cell: (p) => time(p.paid_at) },
      { head: "fact.unreflected_since", cell: (p) => time(p.unreflected_since) },
      { head: "fact.responsible_agency", cell: (p) => code("agency", p.responsible_agency) },
      { head: "fact.service", cell: (p) => code("service", p.service_code) },
      { head: "fact.amount", cell: (p) => money(p.amount) },
      { head: "fact.payment_channel", cell: (p) => code("channel", p.channel) },
      { head: "fact.beneficiary", cell: (p) => ltr(p.beneficiary_id) },
    ],
  },
  mismatches: {
    title: "nav.mismatches", help: "list.mismatches_help", endpoint: "mismatches", query: {},
    csv: ["mismatchesCsv", {}, "status-mismatches.csv"],
    columns: [
      { head: "fact.visa", cell: (v) => {
        const key = [v.sponsor_id, v.export_number, v.serial_number].join(" / ");
        const params = visaParams(v);
        return params ? caseButton("visa", params, key) : h("span", { title: t("list.masked_link") }, ltr(key));
      } },
      { head: "fact.flagged_at", cell: (v) => time(v.flagged_at) },
      { head: "fact.visa_status", cell: (v) => ltr(v.status) },
      { head: "fact.status_changed_at", cell: (v) => time(v.status_changed_at) },
      { head: "fact.route", cell: (v) => code("route", v.route) },
    ],
  },
  jawazat: { title: "nav.jawazat", help: "list.jawazat_help", endpoint: QUEUES.jawazat.list, query: {}, queue: "jawazat", columns: [...refundColumns, approvalsColumn] },
  reviews: { title: "nav.reviews", help: "list.reviews_help", endpoint: QUEUES.reviews.list, query: {}, queue: "reviews", columns: refundColumns },
};

async function loadList(view, generation, more = false) {
  const spec = LISTS[view.list];
  if (!spec) return go({ name: "search" }, { push: false });
  if (!more) state.listModel = { view, spec, items: [], cursor: null, done: false, error: null, busy: true, sent: {}, notice: null };
  const model = state.listModel;
  model.busy = true;
  model.error = null;
  renderList();
  try {
    const page = await api(spec.endpoint, { query: { ...spec.query, cursor: more ? model.cursor : null } });
    if (generation !== state.generation || state.listModel !== model) return;
    model.items.push(...(Array.isArray(page.items) ? page.items : []));
    model.cursor = page.next_cursor ?? null;
    model.done = !model.cursor;
  } catch (error) {
    if (generation !== state.generation || state.listModel !== model) return;
    model.error = error;
  }
  model.busy = false;
  renderList();
}

function renderList() {
  const model = state.listModel;
  if (!model) return;
  const { spec } = model;
  $("list-title").textContent = t(spec.title);
  const parts = [h("p", { class: "help" }, t(spec.help))];
  if (spec.csv) {
    const [endpoint, query, filename] = spec.csv;
    parts.push(h("p", {}, csvButton(endpoint, query, filename, (shown) => {
      model.notice = shown;
      renderList();
    })));
  }
  if (!FULL_PII_ROLES.includes(role())) parts.push(h("p", { class: "note" }, t("case.masked_note")));
  if (model.notice) parts.push(model.notice);
  const columns = [...spec.columns];
  if (spec.queue && mayDecide(spec.queue)) {
    columns.push({ head: "list.actions", cell: (r) => decisionButtons(spec.queue, r, model) });
  }
  if (model.items.length) {
    parts.push(h("p", { class: "count" }, t("list.count", { n: model.items.length })));
    parts.push(table(columns, model.items, (r) => (model.sent[r.refund_id] ? "decided" : null)));
  } else if (!model.busy && !model.error) {
    parts.push(h("p", { class: "note" }, t("list.empty")));
  }
  if (model.error) {
    const shown = errorBox(model.error, () => loadList(model.view, state.generation, model.items.length > 0));
    if (!shown) return;
    parts.push(shown);
  }
  if (model.busy) parts.push(loading());
  else if (model.cursor) {
    parts.push(h("button", { type: "button", class: "more", onclick: () => loadList(model.view, state.generation, true) }, t("list.load_more")));
  } else if (model.items.length && !model.error) parts.push(h("p", { class: "note" }, t("list.end")));
  $("list-body").replaceChildren(...parts);
}

function decisionButtons(queueName, row, model) {
  const sent = model.sent[row.refund_id];
  if (sent === "sending") return h("span", { role: "status" }, t("decision.sending"));
  if (sent) return h("span", { class: "badge done" }, t(`sent.${sent}`));
  const ownApproval = row.first_approved_by && row.first_approved_by === state.claims?.sub;
  return h("span", { class: "actions" },
    ownApproval ? h("span", { class: "note four-eyes-own" }, t("four_eyes.own"))
      : h("button", { type: "button", class: "approve", onclick: () => decide(queueName, "approve", row, model) }, t("action.approve")),
    h("button", { type: "button", class: "reject", onclick: () => decide(queueName, "reject", row, model) }, t("action.reject")));
}

async function decide(queueName, action, row, model) {
  const answer = await askDecision(action, row.refund_id);
  if (!answer) return;
  const queue = QUEUES[queueName];
  model.sent[row.refund_id] = "sending";
  model.notice = null;
  renderList();
  try {
    const accepted = await api(action === "approve" ? queue.approve : queue.reject, {
      params: { refund_id: row.refund_id },
      body: action === "reject" ? { reason: answer.reason } : undefined,
    });
    const firstOfTwo = action === "approve" && accepted.second_approval_needed === true;
    model.sent[row.refund_id] = firstOfTwo ? "first_approved" : action === "approve" ? "approved" : "rejected";
    model.notice = h("p", { class: "ok", role: "status" },
      t(firstOfTwo ? "decision.first_recorded" : "decision.sent", { id: row.refund_id }));
  } catch (error) {
    delete model.sent[row.refund_id];
    const shown = errorBox(error, () => decide(queueName, action, row, model), { forbiddenKey: "error.forbidden_action" });
    if (!shown) return;
    model.notice = shown;
  }
  if (state.listModel === model) renderList();
}

/** The confirm dialog: resolves {reason} (reject), {} (approve) or null when cancelled. */
function askDecision(action, refundId) {
  const dialog = $("decision-dialog");
  const form = $("decision-form");
  const reason = $("decision-reason");
  const problem = $("decision-problem");
  $("decision-title").textContent = t(action === "approve" ? "decision.approve_title" : "decision.reject_title", { id: refundId });
  $("decision-text").textContent = t(action === "approve" ? "decision.approve_text" : "decision.reject_text");
  $("decision-reason-field").hidden = action !== "reject";
  reason.value = "";
  reason.required = action === "reject";
  reason.disabled = action !== "reject";
  problem.hidden = true;
  return new Promise((resolve) => {
    const finish = (value) => {
      form.removeEventListener("submit", onSubmit);
      $("decision-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      if (action !== "reject") return finish({});
      const text = reason.value.trim();
      const min = Number(reason.getAttribute("minlength"));
      if (text.length < min) {
        problem.textContent = t("decision.reason_short", { n: min });
        problem.hidden = false;
        reason.focus();
        return;
      }
      finish({ reason: text });
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    form.addEventListener("submit", onSubmit);
    $("decision-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    (action === "reject" ? reason : $("decision-confirm")).focus();
  });
}

// ---- charts -------------------------------------------------------------------------------------
// Hand-drawn inline SVG (no library, no build step); colours come from classes in app.css (the CSP
// forbids inline styles). Every chart has a text alternative: its numbers in a table below it.

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART_WINDOWS = {
  month: { days: 30, bucket: "day" },
  half: { days: 182, bucket: "week" },
  year: { days: 365, bucket: "month" },
};
const STATE_ORDER = ["COMPLETED", "ORDERED", "AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW", "REJECTED", "FAILED"];
const ROUTE_ORDER = ["BANK", "AUTOMATIC", "MOFA", "JAWAZAT", "MANUAL_REVIEW"];
const SLA_PARTS = ["met", "missed", "overdue", "open_on_time"];

/** An SVG element; string children become text nodes (never markup). */
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function loadCharts(view, generation) {
  const windowName = CHART_WINDOWS[view.window] ? view.window : "month";
  const spec = CHART_WINDOWS[windowName];
  const to = new Date();
  const from = new Date(to.getTime() - spec.days * 86400000);
  const model = { view, windowName, busy: true, error: null, refunds: null, sla: null };
  state.chartsModel = model;
  renderCharts();
  try {
    const query = { from: from.toISOString(), to: to.toISOString() };
    const [refunds, sla] = await Promise.all([
      api("statsRefunds", { query: { ...query, bucket: spec.bucket } }),
      api("statsSla", { query }),
    ]);
    if (generation !== state.generation || state.chartsModel !== model) return;
    model.refunds = Array.isArray(refunds.items) ? refunds.items : [];
    model.sla = Array.isArray(sla.items) ? sla.items : [];
  } catch (error) {
    if (generation !== state.generation || state.chartsModel !== model) return;
    model.error = error;
  }
  model.busy = false;
  renderCharts();
}

function renderCharts() {
  const model = state.chartsModel;
  if (!model) return;
  const choices = h("div", { class: "chart-windows", role: "group", "aria-label": t("charts.window") },
    Object.keys(CHART_WINDOWS).map((name) => h("button", {
      type: "button", "aria-pressed": name === model.windowName ? "true" : "false",
      onclick: () => go({ name: "charts", window: name }, { push: false }),
    }, t(`charts_window.${name}`))));
  const parts = [h("p", { class: "help" }, t("charts.help")), choices];
  if (model.busy) parts.push(loading());
  else if (model.error) {
    const shown = errorBox(model.error, () => show(model.view));
    if (!shown) return;
    parts.push(shown);
  } else {
    parts.push(section("charts.by_state", stackedBars(model.refunds, "state", STATE_ORDER)));
    parts.push(section("charts.by_route", stackedBars(model.refunds, "route", ROUTE_ORDER)));
    parts.push(section("charts.sla", h("p", { class: "help" }, t("charts.sla_help")), slaChart(model.sla)));
  }
  $("charts-body").replaceChildren(...parts);
}

/** Periods (x) of stacked bars, one colour per state or route, with a legend and a table of the numbers. */
function stackedBars(items, key, order) {
  if (!items.length) return h("p", { class: "note" }, t("charts.none"));
  const periods = [...new Set(items.map((i) => i.period))].sort();
  const seen = new Set(items.map((i) => i[key]));
  const series = [...order.filter((k) => seen.has(k)), ...[...seen].filter((k) => !order.includes(k)).sort()];
  const count = {};
  for (const item of items) {
    const cell = `${item.period}|${item[key]}`;
    count[cell] = (count[cell] ?? 0) + item.count;
  }
  const totals = periods.map((p) => series.reduce((sum, k) => sum + (count[`${p}|${k}`] ?? 0), 0));
  const max = Math.max(1, ...totals);
  const width = 720;
  const height = 240;
  const left = 44;
  const bottom = 28;
  const plotW = width - left - 8;
  const plotH = height - bottom - 10;
  const step = plotW / periods.length;
  const barW = Math.min(48, Math.max(2, step * 0.75));
  const kind = key === "state" ? "state" : "route";
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": t(key === "state" ? "charts.by_state" : "charts.by_route"), direction: "ltr" });
  for (const tick of [...new Set([0, Math.round(max / 2), max])]) {
    const y = 10 + plotH - (tick / max) * plotH;
    chart.append(svg("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }),
      svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, String(tick)));
  }
  const labelEvery = Math.ceil(periods.length / 10);
  periods.forEach((period, index) => {
    let y = 10 + plotH;
    const x = left + index * step + (step - barW) / 2;
    series.forEach((name, seriesIndex) => {
      const n = count[`${period}|${name}`] ?? 0;
      if (!n) return;
      const barH = (n / max) * plotH;
      y -= barH;
      chart.append(svg("rect", { x, y, width: barW, height: Math.max(barH, 0.5), class: `bar series-${seriesIndex % 8}` },
        svg("title", {}, `${period} \u00b7 ${label(kind, name)}: ${n}`)));
    });
    if (index % labelEvery === 0) {
      chart.append(svg("text", { x: x + barW / 2, y: height - 10, "text-anchor": "middle", class: "tick" }, period.slice(5)));
    }
  });
  const legend = h("ul", { class: "legend" }, series.map((name, seriesIndex) => h("li", {},
    h("span", { class: `swatch series-${seriesIndex % 8}`, "aria-hidden": "true" }), label(kind, name))));
  const numbers = h("details", { class: "chart-numbers" }, h("summary", {}, t("charts.numbers")),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("charts.period")),
        series.map((name) => h("th", { scope: "col" }, label(kind, name))))),
      h("tbody", {}, periods.map((period) => h("tr", {}, h("td", {}, ltr(period)),
        series.map((name) => h("td", {}, String(count[`${period}|${name}`] ?? 0)))))))));
  return h("div", { class: "chart-box", dir: "ltr" }, chart, legend, numbers);
}

/** One bar per agency: met, missed, overdue and still open on time, as shares of its cases; compliance beside it. */
function slaChart(items) {
  if (!items.length) return h("p", { class: "note" }, t("charts.none"));
  const width = 720;
  const rowH = 30;
  const labelW = 190;
  const barW = width - labelW - 110;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${items.length * rowH + 6}`, class: "chart", role: "img",
    "aria-label": t("charts.sla"), direction: "ltr" });
  items.forEach((item, index) => {
    const y = index * rowH + 4;
    const total = SLA_PARTS.reduce((sum, part) => sum + (item[part] ?? 0), 0) || 1;
    chart.append(svg("text", { x: 0, y: y + 17, class: "tick name" }, label("agency", item.agency)));
    let x = labelW;
    for (const part of SLA_PARTS) {
      const n = item[part] ?? 0;
      if (!n) continue;
      const w = (n / total) * barW;
      chart.append(svg("rect", { x, y, width: w, height: rowH - 8, class: `bar sla-part-${part.replace(/_/g, "-")}` },
        svg("title", {}, `${label("agency", item.agency)} \u00b7 ${t(`sla_part.${part}`)}: ${n}`)));
      x += w;
    }
    const text = item.compliance === null || item.compliance === undefined ? t("charts.no_due")
      : t("charts.compliance", { n: Math.round(item.compliance * 1000) / 10 });
    chart.append(svg("text", { x: labelW + barW + 8, y: y + 17, class: "tick" }, text));
  });
  const legend = h("ul", { class: "legend" }, SLA_PARTS.map((part) => h("li", {},
    h("span", { class: `swatch sla-part-${part.replace(/_/g, "-")}`, "aria-hidden": "true" }), t(`sla_part.${part}`))));
  const numbers = h("details", { class: "chart-numbers" }, h("summary", {}, t("charts.numbers")), table([
    { head: "fact.agency", cell: (i) => code("agency", i.agency) },
    ...SLA_PARTS.map((part) => ({ head: `sla_part.${part}`, cell: (i) => String(i[part] ?? 0) })),
    { head: "charts.compliance_head", cell: (i) => (i.compliance === null ? t("charts.no_due")
      : t("charts.compliance", { n: Math.round(i.compliance * 1000) / 10 })) },
  ], items));
  return h("div", { class: "chart-box", dir: "ltr" }, chart, legend, numbers);
}

// ---- start --------------------------------------------------------------------------------------

function setLanguage(lang) {
  state.lang = LANGS[lang] ? lang : "ar";
  try {
    localStorage.setItem(LANG_KEY, state.lang);
  } catch {
    // private mode: the choice lasts for this page only
  }
  applyStaticWords();
  renderUser();
  rerender();
}

function wire() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value);
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.view?.name !== "search") go({ name: "search" });
    runSearch($("search-input").value);
  });
  $("lang").addEventListener("click", () => setLanguage(state.lang === "ar" ? "en" : "ar"));
  $("signout").addEventListener("click", () => signOut());
  for (const button of document.querySelectorAll("[data-nav]")) {
    button.addEventListener("click", () => {
      const target = button.dataset.nav;
      go(LISTS[target] ? { name: "list", list: target } : { name: target === "charts" ? "charts" : "search" });
    });
  }
  window.addEventListener("hashchange", () => {
    // a list typed into the address bar (pushState itself never fires this)
    const hash = location.hash.replace(/^#/, "");
    if (state.token && LISTS[hash]) go({ name: "list", list: hash }, { push: false });
    else if (state.token && hash === "charts") go({ name: "charts" }, { push: false });
  });
  window.addEventListener("popstate", (event) => {
    if (!state.token) return;
    const view = event.state;
    show(view && VIEWS.includes(view.name) ? view : { name: "search" });
  });
}

function viewFromLocation() {
  const saved = history.state;
  if (saved && VIEWS.includes(saved.name) && (saved.name !== "case" || saved.endpoint)) return saved;
  const hash = location.hash.replace(/^#/, "");
  if (hash === "charts") return { name: "charts" };
  return LISTS[hash] ? { name: "list", list: hash } : { name: "search" };
}

async function start() {
  try {
    const response = await fetch(new URL("./i18n.json", import.meta.url), { cache: "no-cache" });
    state.strings = await response.json();
  } catch (error) {
    console.error(error);
    $("boot-error").hidden = false;
    return;
  }
  let saved = null;
  try {
    saved = localStorage.getItem(LANG_KEY);
  } catch {
    saved = null;
  }
  state.lang = LANGS[saved] ? saved : "ar";
  applyStaticWords();
  wire();
  const token = sessionStorage.getItem(TOKEN_KEY);
  const claims = token ? decodeClaims(token) : null;
  if (claims && !isExpired(claims)) {
    state.token = token;
    state.claims = claims;
    enterApp();
    go(viewFromLocation(), { push: false });
  } else {
    signOut(token ? "signin.session_ended" : null);
  }
}

start();
