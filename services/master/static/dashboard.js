// modelfleet dashboard: polls master's JSON API with the token in an Authorization header (kept in
// sessionStorage, never in a URL) and renders with textContent only: the page's CSP enforces Trusted
// Types, so an HTML string can never reach the DOM. Actions go through the same API as fleetctl.
"use strict";

const POLL_MS = 2000;
const REQUEST_TIMEOUT_MS = 15000;
const AUDIT_LIMIT = 25;
const TOKEN_KEY = "modelfleet.token";
const PAUSABLE = new Set(["running", "baking", "waiting"]);
const FINISHED = new Set(["done", "aborted", "reverted"]);

const state = {
  token: null, role: null, session: 0, timer: null, polling: false, pollAgain: false,
  rolloutsMissing: false, lastRender: {}, selected: null,
};
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// -- DOM helpers: text only -------------------------------------------------------------------------
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else if (key === "title" || key === "type" || key === "scope" || key === "colSpan") node[key] = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function versions(list) {
  if (list === null || list === undefined) return "?";
  return list.length ? [...list].sort((a, b) => a - b).map((v) => `v${v}`).join(",") : "-";
}

function labelsText(labels) {
  const entries = Object.entries(labels || {}).sort();
  return entries.map(([name, v]) => `${name}=${v}`).join(" ");
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  return seconds < 1 ? "just now" : `${Math.round(seconds)} s ago`;
}

// -- API ----------------------------------------------------------------------------------------------
async function api(method, path, { body, ifMatch } = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch) headers["If-Match"] = ifMatch;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { detail: text.slice(0, 300) };
    }
    if (!response.ok) {
      const detail = (data && (data.detail || data.title)) || response.statusText;
      throw new ApiError(response.status, detail, response.headers.get("Retry-After"));
    }
    return { data, etag: response.headers.get("ETag") };
  } catch (error) {
    if (error instanceof ApiError) throw error;
    throw new ApiError(0, error.name === "AbortError" ? "master did not answer in time" : "master unreachable");
  } finally {
    clearTimeout(timer);
  }
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

// -- session ------------------------------------------------------------------------------------------
async function signIn(token) {
  state.session += 1;
  state.token = token;
  try {
    const { data } = await api("GET", "/v1/whoami");
    state.role = data.role;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("who").textContent = `${data.name} (${data.role === "admin" ? "admin" : "read-only"})`;
    $("signin").hidden = true;
    $("session").hidden = false;
    $("board").hidden = false;
    for (const node of document.querySelectorAll(".admin-only")) node.hidden = state.role !== "admin";
    $("read-only-note").hidden = state.role === "admin";
    for (const button of document.querySelectorAll(".admin-only button")) button.disabled = state.role !== "admin";
    showError("");
    poll();
  } catch (error) {
    signOut();
    showError(error.status === 401 ? `Token refused (401): ${error.message.replace(/^401: /, "")}` : error.message);
  }
}

function signOut() {
  clearTimeout(state.timer);
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, { token: null, role: null, session: state.session + 1, lastRender: {}, selected: null });
  $("token").value = "";
  $("signin").hidden = false;
  $("session").hidden = true;
  $("board").hidden = true;
  $("summary").textContent = "Not signed in.";
}

// -- polling ------------------------------------------------------------------------------------------
// One round at a time: a poll asked for during a round (after an action, a click) runs right after it.
async function poll() {
  clearTimeout(state.timer);
  if (!state.token) return;
  if (state.polling) {
    state.pollAgain = true;
    return;
  }
  state.polling = true;
  const session = state.session;
  const started = Date.now();
  try {
    await pollOnce(session);
  } finally {
    state.polling = false;
  }
  if (!state.token) return;
  if (state.pollAgain || session !== state.session) {
    state.pollAgain = false;
    poll();
  } else {
    state.timer = setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
  }
}

async function pollOnce(session) {
  try {
    const [cluster, models, audit, rollouts] = await Promise.all([
      api("GET", "/v1/cluster"),
      api("GET", "/v1/models").catch((error) => ({ error })),
      api("GET", `/v1/audit?limit=${AUDIT_LIMIT}`).catch((error) => ({ error })),
      fetchRollouts(),
    ]);
    if (session !== state.session) return; // signed out (or in again) meanwhile
    render(cluster.data, models, audit, rollouts);
    showError(models.error ? `models: ${models.error.message}` : audit.error ? `audit: ${audit.error.message}` : "");
  } catch (error) {
    if (session !== state.session) return;
    if (error.status === 401) {
      signOut();
      showError(`Token refused (401): ${error.message.replace(/^401: /, "")}`);
      return;
    }
    showError(`Cannot refresh: ${error.message}`);
  }
}

async function fetchRollouts() {
  if (state.rolloutsMissing) return { missing: true };
  try {
    return await api("GET", "/v1/rollouts");
  } catch (error) {
    if (error.status === 404) {
      state.rolloutsMissing = true;
      return { missing: true };
    }
    if (error.status === 401) throw error;
    return { error };
  }
}

// Re-render a part only when what it shows changed, and give focus back to the element that had it.
function renderPart(name, input, draw) {
  const key = JSON.stringify(input);
  if (state.lastRender[name] === key) return;
  state.lastRender[name] = key;
  const focused = document.activeElement && document.activeElement.dataset.key;
  draw(input);
  if (focused) {
    const again = [...document.querySelectorAll("[data-key]")].find((node) => node.dataset.key === focused);
    if (again) again.focus();
  }
}

function render(cluster, models, audit, rollouts) {
  const names = new Set(Object.keys(cluster.models));
  for (const model of models.data ? models.data.models : []) names.add(model.name);
  const modelNames = [...names].sort();
  const converged = cluster.converged ? "converged" : "NOT converged";
  $("summary").textContent =
    `Fleet ${converged}: ${cluster.nodes_healthy}/${cluster.nodes_total} nodes healthy, polled ` +
    `${ago(cluster.age_seconds)}; updated ${new Date().toLocaleTimeString()}`;
  const rolloutList = rollouts.data ? rollouts.data.rollouts || [] : [];
  renderPart("alarms", { alarms: collectAlarms(cluster, rolloutList) }, drawAlarms);
  renderPart("matrix", { nodes: matrixInput(cluster), models: modelNames }, drawMatrix);
  renderPart("details", { selected: state.selected, nodes: matrixInput(cluster) }, drawDetails);
  renderPart("choices", { models: modelNames, nodes: cluster.nodes.map((n) => n.hostname) }, drawChoices);
  renderPart("rollouts", { missing: !!rollouts.missing, error: rollouts.error ? rollouts.error.message : null,
    rollouts: rolloutList, role: state.role }, drawRollouts);
  if (audit.data) renderPart("audit", audit.data.entries, drawAudit);
}

// Node and model facts without poll times, so an unchanged fleet does not redraw every 2 s.
function matrixInput(cluster) {
  return cluster.nodes.map((node) => ({
    hostname: node.hostname,
    healthy: node.healthy,
    stale: node.stale,
    errors: Object.entries(node.sidecars).filter(([, s]) => s.last_error).map(([role, s]) => `${role}: ${s.last_error}`),
    models: node.models,
  }));
}

// -- alarms -------------------------------------------------------------------------------------------
function collectAlarms(cluster, rollouts) {
  const alarms = [];
  if (cluster.state_alarm) {
    const alarm = cluster.state_alarm;
    alarms.push({ severity: "critical", kind: alarm.kind, where: "master", message: alarm.message });
  }
  for (const node of cluster.nodes) {
    if (!node.healthy) {
      const errors = Object.entries(node.sidecars).filter(([, s]) => s.last_error).map(([r, s]) => `${r}: ${s.last_error}`);
      alarms.push({ severity: "critical", kind: "node-unhealthy", where: node.hostname, message: errors.join("; ") || "no answer" });
    }
    for (const [role, sidecar] of Object.entries(node.sidecars)) {
      for (const alarm of sidecar.alarms || []) {
        const where = alarm.model ? `${node.hostname} / ${alarm.model}` : `${node.hostname} (${role})`;
        alarms.push({ severity: alarm.severity || "warning", kind: alarm.kind, where, message: alarm.message });
      }
    }
    for (const [model, entry] of Object.entries(node.models)) {
      if (entry.drift && entry.drift.length) {
        alarms.push({ severity: "warning", kind: "drift", where: `${node.hostname} / ${model}`,
          message: `${versions(entry.drift)}: bytes changed in the bucket after install` });
      }
    }
  }
  for (const rollout of rollouts) {
    if (rollout.state === "reverted") {
      alarms.push({ severity: "critical", kind: "rollout-reverted", where: rollout.model,
        message: `v${rollout.version} reverted${rollout.reason ? `: ${rollout.reason}` : ""}` });
    }
  }
  return alarms;
}

function drawAlarms({ alarms }) {
  const list = $("alarms");
  if (!alarms.length) {
    list.replaceChildren(el("li", { class: "ok" }, "No alarms."));
    return;
  }
  list.replaceChildren(...alarms.map((a) => el("li", { class: a.severity },
    el("strong", {}, `${a.severity} · ${a.kind}`), " ", el("span", { class: "where" }, a.where), ": ", a.message)));
}

// -- matrix -------------------------------------------------------------------------------------------
function reasons(entry) {
  const out = Object.entries(entry.failed || {}).map(([v, why]) => `v${v} failed: ${why}`);
  for (const held of entry.held || []) out.push(`v${held.version} held (${held.kind}): ${held.reason}`);
  for (const c of entry.capacity || []) out.push(`v${c.version} waits for memory (~${c.bytes_needed} bytes): ${c.message}`);
  if (entry.drift && entry.drift.length) out.push(`drift: ${versions(entry.drift)} changed in the bucket after install`);
  for (const problem of entry.problems || []) out.push(problem);
  return out;
}

function drawMatrix({ nodes, models }) {
  const head = el("tr", {}, el("th", { scope: "col" }, "node"), models.map((m) => el("th", { scope: "col" }, m)));
  const rows = nodes.map((node) => {
    const health = node.healthy ? (node.stale ? "healthy (stale)" : "healthy") : "unhealthy";
    const th = el("th", { scope: "row", class: node.healthy ? "" : "bad" }, node.hostname,
      el("span", { class: "health", title: node.errors.join("; ") }, health));
    return el("tr", {}, th, models.map((model) => el("td", {}, cell(node, model))));
  });
  $("matrix").replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

function cell(node, model) {
  const entry = node.models[model];
  if (!entry) return el("span", { class: "none" }, "–");
  const why = reasons(entry);
  const states = (entry.live || []).map((v) => `v${v.version} ${v.state}`).join(", ");
  const status = entry.converged ? "converged" : `wants ${versions(entry.serve)}`;
  // Failed, held, capacity and drift need a person; other problems (a load in progress) do not.
  const serious = why.length - (entry.problems || []).length;
  const kind = serious ? "cell failing" : entry.converged && !why.length ? "cell ok" : "cell pending";
  const key = `${node.hostname}/${model}`;
  return el("button", {
    type: "button", class: kind, title: why.join("\n") || states || status,
    data: { node: node.hostname, model, key }, "aria-pressed": state.selected === key ? "true" : "false",
    onclick: () => select(key),
  },
  el("span", { class: "serving" }, versions(entry.available)),
  labelsText(entry.config_labels) ? el("span", { class: "labels" }, labelsText(entry.config_labels)) : null,
  el("span", { class: "state" }, status),
  why.length ? el("span", { class: serious ? "reason" : "note" }, serious ? `${serious} problem${serious > 1 ? "s" : ""}` : "in progress") : null);
}

function select(key) {
  state.selected = state.selected === key ? null : key;
  state.lastRender.matrix = state.lastRender.details = null;
  poll();
}

function drawDetails({ selected, nodes }) {
  const box = $("details");
  const [hostname, model] = (selected || "").split("/");
  const node = nodes.find((n) => n.hostname === hostname);
  const entry = node && node.models[model];
  box.hidden = !entry;
  if (!entry) return box.replaceChildren();
  const facts = [
    ["serving (AVAILABLE)", versions(entry.available)],
    ["wanted (serve)", versions(entry.serve)],
    ["kept on disk", versions(entry.keep)],
    ["on disk", versions(entry.on_disk)],
    ["labels in config", labelsText(entry.config_labels) || "-"],
    ["labels wanted", labelsText(entry.labels) || "-"],
    ["TF Serving states", (entry.live || []).map((v) => `v${v.version} ${v.state}${v.error_message ? `: ${v.error_message}` : ""}`).join("; ") || "-"],
    ["node health", node.healthy ? "healthy" : `unhealthy ${node.errors.join("; ")}`],
  ];
  const why = reasons(entry);
  box.replaceChildren(
    el("h3", {}, `${hostname} / ${model}`),
    el("dl", {}, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("h4", {}, why.length ? "Why" : "No failure, capacity or rejection reported"),
    why.length ? el("ul", { class: "reasons" }, why.map((r) => el("li", {}, r))) : null,
  );
}

// -- actions ------------------------------------------------------------------------------------------
function drawChoices({ models, nodes }) {
  const keep = (select, values, first) => {
    const current = select.value;
    select.replaceChildren(...first, ...values.map((v) => el("option", { value: v }, v)));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  };
  keep($("action-model"), models, []);
  keep($("action-node"), nodes, [el("option", { value: "" }, "every node")]);
}

function confirmAction(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (ok) => {
      $("confirm-ok").removeEventListener("click", yes);
      $("confirm-cancel").removeEventListener("click", no);
      dialog.removeEventListener("cancel", no);
      if (dialog.open) dialog.close();
      resolve(ok);
    };
    const yes = () => done(true);
    const no = () => done(false);
    $("confirm-ok").addEventListener("click", yes);
    $("confirm-cancel").addEventListener("click", no);
    dialog.addEventListener("cancel", no);
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

async function act(question, run, describe) {
  if (state.role !== "admin") return;
  if (!(await confirmAction(question))) return;
  const result = $("action-result");
  result.textContent = "working…";
  try {
    result.textContent = describe(await run());
    result.className = "result";
  } catch (error) {
    const retry = error.retryAfter ? ` (retry in ${error.retryAfter} s)` : "";
    result.textContent = `refused: ${error.message}${retry}`;
    result.className = "result bad";
  }
  poll();
}

// Like fleetctl: read the ETag first, send it back as If-Match.
async function withEtag(path, change) {
  const current = await api("GET", path);
  return change(current);
}

function changed({ data }) {
  const effective = data.model.effective;
  return `${data.model.name}: serve ${versions(effective.serve)}, labels ${labelsText(effective.labels) || "-"}, ` +
    `generation ${data.generation}${data.changed ? "" : " (no change)"}`;
}

function parseVersions(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (!parts.length || parts.some((p) => !/^\d+$/.test(p))) throw new ApiError(0, "versions must be whole numbers");
  return [...new Set(parts.map(Number))].sort((a, b) => a - b);
}

function updatePolicy(model, change) {
  const path = `/v1/models/${encodeURIComponent(model)}`;
  return withEtag(path, ({ data, etag }) =>
    api("PUT", path, { body: { ...(data.overrides || {}), ...change }, ifMatch: etag }));
}

function operationText({ data }) {
  const failed = data.nodes.filter((n) => !n.ok).map((n) => n.hostname);
  return `${data.operation}: ${data.nodes_ok}/${data.nodes_total} nodes ok` + (failed.length ? `; failed: ${failed.join(", ")}` : "");
}

function wireActions() {
  const model = () => $("action-model").value;
  const modelPath = () => `/v1/models/${encodeURIComponent(model())}`;
  $("do-rollback").addEventListener("click", () => act(
    `Roll back ${model()}? Every node serves the versions served before its last change.`,
    () => withEtag(modelPath(), ({ etag }) => api("POST", `${modelPath()}/rollback`, { ifMatch: etag })), changed));
  $("do-unpin").addEventListener("click", () => act(
    `Unpin ${model()}? Every node serves its latest complete version(s).`,
    () => updatePolicy(model(), { pinned: null }), changed));
  $("do-pin").addEventListener("click", () => act(
    `Pin ${model()} to ${$("pin-versions").value}? Every node serves exactly these versions.`,
    () => updatePolicy(model(), { pinned: parseVersions($("pin-versions").value), latest: null }), changed));
  const labelPath = () => `${modelPath()}/labels/${encodeURIComponent($("label-name").value.trim())}`;
  $("do-label").addEventListener("click", () => act(
    `Move label ${$("label-name").value} of ${model()} to version ${$("label-version").value}?`,
    () => withEtag(modelPath(), ({ etag }) =>
      api("PUT", labelPath(), { body: { version: parseVersions($("label-version").value)[0] }, ifMatch: etag })), changed));
  $("do-unlabel").addEventListener("click", () => act(
    `Remove label ${$("label-name").value} of ${model()}?`,
    () => withEtag(modelPath(), ({ etag }) => api("DELETE", labelPath(), { ifMatch: etag })), changed));
  const nodeOp = (operation) => () => {
    const node = $("action-node").value;
    const path = node ? `/v1/nodes/${encodeURIComponent(node)}/${operation}` : `/v1/cluster/${operation}`;
    act(`${operation === "sync" ? "Sync" : "Garbage-collect"} ${node || "every node"} now?`,
      () => api("POST", path), operationText);
  };
  $("do-sync").addEventListener("click", nodeOp("sync"));
  $("do-gc").addEventListener("click", nodeOp("gc"));
}

// -- rollouts and audit -------------------------------------------------------------------------------
function drawRollouts({ missing, error, rollouts, role }) {
  const table = $("rollouts");
  $("rollouts-note").textContent = missing ? "No rollouts on this master (it has no /v1/rollouts)." :
    error ? `rollouts: ${error}` : rollouts.length ? "" : "No rollouts.";
  if (missing || !rollouts.length) return table.replaceChildren();
  const head = el("tr", {}, ["model", "version", "previous", "state", "wave", "waves", "bake left", "waiting for", "reason", "updated"]
    .map((c) => el("th", { scope: "col" }, c)), role === "admin" ? el("th", { scope: "col" }, "actions") : null);
  const rows = rollouts.map((r) => el("tr", { class: r.state },
    el("td", {}, r.model), el("td", {}, `v${r.version}`), el("td", {}, versions(r.previous)), el("td", {}, r.state),
    el("td", {}, `${r.wave}/${(r.waves || []).length}`),
    el("td", {}, (r.waves || []).map((w, i) => `${i + 1}: ${w.state} (${(w.nodes || []).join(", ")})`).join("; ")),
    el("td", {}, r.bake_remaining_seconds ? `${Math.round(r.bake_remaining_seconds)} s` : "-"),
    el("td", {}, r.waiting_for || "-"), el("td", {}, r.reason || "-"), el("td", {}, r.updated_at || "-"),
    role === "admin" ? el("td", {}, rolloutButtons(r)) : null));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

function rolloutButtons(rollout) {
  const buttons = [];
  const add = (verb, question) => buttons.push(el("button", {
    type: "button", data: { key: `rollout/${rollout.model}/${verb}` },
    onclick: () => act(question, async () => {
      const { data, etag } = await api("GET", "/v1/rollouts");
      const path = `/v1/rollouts/${encodeURIComponent(rollout.model)}/${verb}`;
      return api("POST", path, { ifMatch: etag || `"${data.generation}"` });
    }, () => `${verb} ${rollout.model}: done`),
  }, verb));
  if (PAUSABLE.has(rollout.state)) add("pause", `Pause the rollout of ${rollout.model} v${rollout.version}?`);
  if (rollout.state === "paused") add("resume", `Resume the rollout of ${rollout.model} v${rollout.version}?`);
  if (!FINISHED.has(rollout.state)) {
    add("abort", `Abort the rollout of ${rollout.model} v${rollout.version}? Nodes go back to the previous version.`);
  }
  return buttons;
}

function drawAudit(entries) {
  const head = el("tr", {}, ["at", "actor", "model", "action", "served before", "generation"].map((c) => el("th", { scope: "col" }, c)));
  const when = (at) => String(at).replace("T", " ").replace(/\.\d+/, "");
  const rows = entries.map((e) => el("tr", {}, el("td", {}, when(e.at)), el("td", {}, e.actor), el("td", {}, e.model),
    el("td", {}, e.action), el("td", {}, versions(e.serving_before)), el("td", {}, String(e.generation ?? "-"))));
  $("audit").replaceChildren(el("thead", {}, head), el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colSpan: 6 }, "No changes yet."))));
}

// -- start --------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) signIn(token);
  });
  $("signout").addEventListener("click", () => { signOut(); showError(""); });
  wireActions();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
});
