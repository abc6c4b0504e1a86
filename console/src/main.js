// The auditor's console: one page per URL under /console/, every datum read through the HTTP API with
// the signed-in principal's Bearer token (kept in this tab's sessionStorage only).
import { verifyEntry, parseNote, parseCheckpoint } from "./verify.js";
import { drawLineage, isFocus, overview } from "./graph.js";

const TOKEN = "ledger.console.token";
const PINNED = "ledger.console.verifier-key";
const API = "/api/v1";
const main = () => document.getElementById("main");

// --- DOM helpers: text is always set as text, never parsed as HTML ------------------------------
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const link = (href, ...children) => el("a", { href }, ...children);
const code = (text) => el("code", {}, text);
const when = (iso) => (iso ? el("time", { datetime: iso, title: iso }, iso.replace("T", " ").replace(/\.\d+Z$/, "Z")) : "—");
const enc = encodeURIComponent;

function table(headers, rows, { caption, empty } = {}) {
  if (!rows.length) return el("p", { class: "empty" }, empty || "Nothing here yet.");
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      {},
      caption ? el("caption", {}, caption) : null,
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))),
    ),
  );
}

function section(title, ...children) {
  return el("section", { "aria-label": title }, el("h2", {}, title), ...children);
}

const badge = (ok, yes = "ok", no = "failed") => el("span", { class: `badge ${ok ? "ok" : "bad"}` }, ok ? yes : no);
const tagChip = (t) => el("span", { class: `tag tag-${/^[a-z0-9_-]+$/.test(t) ? t : "other"}` }, t);

// --- the API ------------------------------------------------------------------------------------
export class Problem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

const token = () => sessionStorage.getItem(TOKEN);

async function api(path, { method = "GET", body, text = false, blob = false } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit", cache: "no-store" });
  } catch (e) {
    throw new Problem(0, { title: "Network error", detail: `the service did not answer (${e.message})` });
  }
  if (!resp.ok) {
    let problem = { title: resp.statusText, detail: `HTTP ${resp.status}` };
    try {
      problem = await resp.json();
    } catch {
      /* not JSON: keep the status line */
    }
    if (resp.status === 401 && t) {
      sessionStorage.removeItem(TOKEN);
      renderWho();
    }
    throw new Problem(resp.status, problem);
  }
  if (blob) return resp.blob();
  return text ? resp.text() : resp.json();
}

function problemBox(e) {
  const p = e.problem || { title: "Error", detail: e.message };
  return el(
    "div",
    { class: "problem", role: "alert" },
    el("strong", {}, `${p.title || "Error"}${e.status ? ` (${e.status})` : ""}: `),
    p.detail || e.message,
    p.field ? el("span", { class: "field" }, " — field ", code(p.field)) : null,
    e.status === 401 ? el("p", {}, "Sign in again with a valid token.") : null,
    e.status === 403 ? el("p", {}, "Your principal's role does not allow this page; ask an admin for a token with the role it needs.") : null,
  );
}

// --- routing ------------------------------------------------------------------------------------
const routes = [
  [/^\/console\/?$/, () => pageLog()],
  [/^\/console\/log\/?$/, () => pageLog()],
  [/^\/console\/entries\/(\d+)$/, (m) => pageEntry(Number(m[1]))],
  [/^\/console\/models\/?$/, () => pageModels()],
  [/^\/console\/models\/([^/]+)\/versions\/([^/]+)$/, (m) => pageModelVersion(decodeURIComponent(m[1]), decodeURIComponent(m[2]))],
  [/^\/console\/lineage\/?$/, () => pageLineage()],
  [/^\/console\/violations\/?$/, () => pageViolations()],
];

let generation = 0;

async function route() {
  const gen = ++generation;
  const path = location.pathname;
  for (const a of document.querySelectorAll("#nav a")) {
    if (path.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const m = main();
  if (!token()) {
    m.replaceChildren(signIn());
    document.title = "Sign in · Ledger console";
    return;
  }
  m.replaceChildren(el("p", { class: "loading", role: "status" }, "Loading…"));
  let content;
  try {
    let found = null;
    for (const [re, page] of routes) {
      const hit = path.match(re);
      if (hit) {
        found = await page(hit);
        break;
      }
    }
    content = found || el("div", {}, el("h1", {}, "No such page"), el("p", {}, "Try the ", link("/console/log", "log"), " or the ", link("/console/models", "models"), "."));
  } catch (e) {
    content = el("div", {}, el("h1", {}, "Could not load this page"), problemBox(e));
  }
  if (gen !== generation) return; // a later navigation won
  m.replaceChildren(content);
  const h1 = m.querySelector("h1");
  document.title = `${h1 ? h1.textContent : "Console"} · Ledger console`;
  m.dispatchEvent(new CustomEvent("console:rendered"));
  m.setAttribute("data-ready", path + location.search);
}

export function go(href) {
  history.pushState(null, "", href);
  route().then(() => main().focus({ preventScroll: true }));
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[href^='/console/']");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || a.hasAttribute("download")) return;
  if (a.getAttribute("href").startsWith("/console/assets/")) return;
  ev.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", () => route());

// --- sign-in ------------------------------------------------------------------------------------
function signIn() {
  const input = el("input", { id: "token", type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false", "aria-describedby": "token-help" });
  const err = el("div", { "aria-live": "assertive" });
  const form = el(
    "form",
    {
      class: "card signin",
      method: "post",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const t = input.value.trim();
        input.value = "";
        if (!t) return;
        sessionStorage.setItem(TOKEN, t);
        try {
          await api("/log/entries?limit=1");
        } catch (e) {
          sessionStorage.removeItem(TOKEN);
          err.replaceChildren(problemBox(e));
          input.focus();
          return;
        }
        renderWho();
        route();
      },
    },
    el("h1", {}, "Sign in"),
    el("label", { for: "token" }, "API token"),
    input,
    el("p", { id: "token-help", class: "help" }, "The token stays in this tab's session storage and is sent only as an Authorization header to this service. Get one from an admin: ", code("ledger principals add NAME --role auditor"), "."),
    el("button", { type: "submit" }, "Sign in"),
    err,
  );
  queueMicrotask(() => input.focus());
  return form;
}

function renderWho() {
  const who = document.getElementById("who");
  if (!token()) {
    who.replaceChildren();
    return;
  }
  who.replaceChildren(
    el(
      "button",
      {
        type: "button",
        class: "link",
        onclick: () => {
          sessionStorage.removeItem(TOKEN);
          renderWho();
          route();
        },
      },
      "Sign out",
    ),
  );
}

// --- Log ----------------------------------------------------------------------------------------
const KINDS = [
  "openlineage.run_event", "openlineage.dataset_event", "openlineage.job_event", "model.version", "validation.result", "approval",
  "promotion.decision", "deployment", "dataset.classification", "access.decision", "policy.bundle", "payload.erasure",
];

function checkpointView(note) {
  const { text, sigs } = parseNote(note);
  const cp = parseCheckpoint(text);
  const log = sigs.filter((s) => s.name === cp.origin);
  const witnesses = sigs.filter((s) => s.name !== cp.origin);
  return { cp, log, witnesses };
}

async function pageLog() {
  const q = new URLSearchParams(location.search);
  const kind = q.get("kind") || "";
  const subject = q.get("subject") || "";
  const [note, keys] = await Promise.all([api("/log/checkpoint", { text: true }), api("/log/keys")]);
  const { cp, log, witnesses } = checkpointView(note);
  const filtered = Boolean(kind || subject);
  const after = q.has("after") ? Number(q.get("after")) : filtered ? -1 : Math.max(-1, cp.size - 51);
  const params = new URLSearchParams({ limit: "50", after: String(after) });
  if (kind) params.set("kind", kind);
  if (subject) params.set("subject", subject);
  const page = await api(`/log/entries?${params}`);
  const entries = page.entries;
  const pageHref = (a) => {
    const p = new URLSearchParams();
    if (kind) p.set("kind", kind);
    if (subject) p.set("subject", subject);
    p.set("after", String(a));
    return `/console/log?${p}`;
  };
  const kindSel = el("select", { id: "kind", name: "kind" }, el("option", { value: "" }, "every kind"), KINDS.map((k) => el("option", { value: k, selected: k === kind }, k)));
  const subj = el("input", { id: "subject", name: "subject", value: subject, placeholder: "e.g. model:churn@3 or dataset:s3://lake:raw/customers", size: 44 });
  const filter = el(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (ev) => {
        ev.preventDefault();
        const p = new URLSearchParams();
        if (kindSel.value) p.set("kind", kindSel.value);
        if (subj.value.trim()) p.set("subject", subj.value.trim());
        go(`/console/log${p.size ? `?${p}` : ""}`);
      },
    },
    el("label", { for: "kind" }, "Kind"),
    kindSel,
    el("label", { for: "subject" }, "Subject"),
    subj,
    el("button", { type: "submit" }, "Filter"),
    filtered ? link("/console/log", "Clear") : null,
  );
  const rows = [...entries].reverse().map((e) => [
    link(`/console/entries/${e.header.seq}`, String(e.header.seq)),
    code(e.header.kind),
    e.header.kind.startsWith("model") || e.header.subject.startsWith("model:") ? subjectLink(e.header.subject) : subjectLink(e.header.subject),
    when(e.header.integrated_time),
    e.header.principal,
    e.erased ? el("span", { class: "badge muted" }, "erased") : e.withheld ? el("span", { class: "badge muted" }, "withheld") : "",
  ]);
  const nav = el(
    "nav",
    { class: "pager", "aria-label": "Entry pages" },
    after > -1 ? link(pageHref(Math.max(-1, after - 50)), "← Older") : null,
    page.next_after !== null && page.next_after !== undefined ? link(pageHref(page.next_after), "Newer →") : null,
  );
  return el(
    "div",
    { class: "page-log" },
    el("h1", {}, "Log"),
    el(
      "div",
      { class: "cards" },
      el("div", { class: "card stat" }, el("div", { class: "num", id: "log-size" }, cp.size.toLocaleString("en")), el("div", {}, "entries")),
      el("div", { class: "card stat" }, el("div", { class: "num" }, String(witnesses.length)), el("div", {}, "witness cosignatures")),
      el("div", { class: "card stat" }, el("div", { class: "num" }, String(keys.keys.length)), el("div", {}, "signing keys")),
    ),
    section(
      "Current checkpoint",
      el("pre", { class: "note", id: "checkpoint" }, note),
      el("p", {}, "Origin ", code(cp.origin), `, tree size ${cp.size}, signed by ${log.length} log key(s). Check it with your pinned key on any entry's page.`),
      witnesses.length
        ? table(["witness", "key id", "cosigned at"], witnesses.map((w) => [w.name, code(w.keyId), w.time === null ? "—" : when(new Date(w.time * 1000).toISOString())]), { caption: "Witness cosignatures on this checkpoint (check them with `ledger verify --witness`)" })
        : el("p", { class: "empty" }, "No witness has cosigned this checkpoint. Once witnesses are configured their cosignatures show here."),
    ),
    section(
      "Signing keys",
      table(
        ["key", "verifier key", "valid from", "valid until", ""],
        keys.keys.map((k) => [code(k.key_id), el("code", { class: "wrap" }, k.verifier_key), when(k.valid_from), k.valid_until ? when(k.valid_until) : "—", k.current ? el("span", { class: "badge ok" }, "current") : el("span", { class: "badge muted" }, "retired")]),
      ),
    ),
    section(
      "Entries",
      filter,
      table(["seq", "kind", "subject", "integrated", "principal", ""], rows, {
        caption: filtered ? "Matching entries, oldest first within this page" : "Most recent entries, newest first",
        empty: filtered ? "No entry matches this filter. Clear it, or check the subject's spelling (e.g. model:<name>@<version>)." : "The log is empty. Post an OpenLineage event or run `ledger demo` to fill it.",
      }),
      nav,
    ),
  );
}

function subjectLink(subject) {
  const m = subject.match(/^model:(.+)@([^@]+)$/);
  if (m) return link(`/console/models/${enc(m[1])}/versions/${enc(m[2])}`, subject);
  if (/^(dataset|job|run):/.test(subject)) return link(`/console/lineage?node=${enc(subject)}`, subject);
  const e = subject.match(/^entry:(\d+)$/);
  if (e) return link(`/console/entries/${e[1]}`, subject);
  return subject;
}

// --- Entry --------------------------------------------------------------------------------------
async function pageEntry(seq) {
  const [entry, note] = await Promise.all([api(`/log/entries/${seq}`), api("/log/checkpoint", { text: true })]);
  const { cp } = checkpointView(note);
  const proof = await api(`/log/proof/inclusion?seq=${seq}&tree_size=${cp.size}`);
  const h = entry.header;
  const pinned = localStorage.getItem(PINNED) || "";
  const vkeyInput = el("textarea", { id: "vkey", rows: 2, spellcheck: "false", placeholder: "ledger.local/…+1a2b3c4d+AX… (from `ledger keys verifier`, obtained out of band)" }, pinned);
  const status = el("p", { class: "help", "aria-live": "polite" }, pinned ? "Using your pinned verifier key." : "Paste the verifier key you obtained out of band; pin it to keep it for this browser.");
  const results = el("ol", { class: "steps", id: "steps", "aria-live": "polite" });
  const verifyBtn = el(
    "button",
    {
      type: "button",
      id: "verify",
      onclick: async () => {
        verifyBtn.disabled = true;
        results.replaceChildren(el("li", { class: "loading", role: "status" }, "Verifying…"));
        try {
          // Fresh from the service each time: what it serves now is what is checked.
          const [e2, n2] = await Promise.all([api(`/log/entries/${seq}`), api("/log/checkpoint", { text: true })]);
          const size = checkpointView(n2).cp.size;
          const p2 = await api(`/log/proof/inclusion?seq=${seq}&tree_size=${size}`);
          const steps = await verifyEntry({ entry: e2, checkpoint: n2, proof: p2, vkey: vkeyInput.value });
          results.replaceChildren(
            ...steps.map((s) =>
              el(
                "li",
                { class: `step ${s.status.replace(/ /g, "-")}`, "data-step": s.id, "data-status": s.status },
                el("span", { class: "mark", "aria-hidden": "true" }, s.status === "passed" ? "✓" : s.status === "failed" ? "✗" : "–"),
                el("strong", {}, s.title),
                el("span", { class: "status" }, ` ${s.status}`),
                el("div", { class: "detail" }, s.detail),
              ),
            ),
          );
          const failed = steps.filter((s) => s.status === "failed").length;
          results.append(
            el(
              "li",
              { class: `summary ${failed ? "bad" : "ok"}`, role: "status" },
              failed
                ? `${failed} of ${steps.length} checks failed: what the service serves for entry ${seq} is not what its signed log commits to.`
                : `Every check passed: entry ${seq} is in the log that the key you trust signed.${steps.some((s) => s.status === "not applicable") ? " Its payload was not served, so only its header was checked." : ""}`,
            ),
          );
          results.setAttribute("data-result", failed ? "failed" : "passed");
        } catch (e) {
          results.replaceChildren(el("li", {}, problemBox(e)));
          results.setAttribute("data-result", "error");
        } finally {
          verifyBtn.disabled = false;
        }
      },
    },
    "Verify in this browser",
  );
  const pin = el(
    "button",
    {
      type: "button",
      class: "secondary",
      onclick: () => {
        localStorage.setItem(PINNED, vkeyInput.value.trim());
        status.textContent = "Pinned: this browser will use this verifier key on every entry.";
      },
    },
    "Pin this key",
  );
  let payloadView;
  if (entry.payload !== null && entry.payload !== undefined) payloadView = el("pre", { class: "json", id: "payload" }, JSON.stringify(entry.payload, null, 2));
  else if (entry.erased) {
    // `erasure_seq` names the payload.erasure entry where the service serves it; else the log finds it.
    const by = Number.isInteger(entry.erasure_seq)
      ? link(`/console/entries/${entry.erasure_seq}`, `entry ${entry.erasure_seq}`)
      : link(`/console/log?${new URLSearchParams({ kind: "payload.erasure", subject: `entry:${seq}` })}`, "its payload.erasure entry");
    payloadView = el("p", { class: "notice", id: "payload" }, "The payload was erased: see ", by, ". Its digest stays in the header, so the proofs still hold.");
  }
  else if (entry.withheld) payloadView = el("p", { class: "notice", id: "payload" }, `The payload is withheld from you: ${entry.withheld}. The header and proofs are still yours to check.`);
  else payloadView = el("p", { class: "notice", id: "payload" }, "No payload was served for this entry.");
  return el(
    "div",
    { class: "page-entry" },
    el("h1", {}, `Entry ${seq}`),
    el("p", { class: "sub" }, code(h.kind), " · ", subjectLink(h.subject)),
    el(
      "div",
      { class: "grid2" },
      section(
        "Header",
        el(
          "dl",
          { class: "kv", id: "header" },
          Object.entries(h).map(([k, v]) => [el("dt", {}, k), el("dd", {}, k === "integrated_time" ? when(v) : k === "subject" ? subjectLink(v) : code(String(v)))]),
          el("dt", {}, "leaf_hash"),
          el("dd", {}, code(entry.leaf_hash)),
          entry.salt ? [el("dt", {}, "salt"), el("dd", {}, code(entry.salt))] : null,
        ),
      ),
      section(
        "Verify",
        el("label", { for: "vkey" }, "Log verifier key"),
        vkeyInput,
        status,
        el("div", { class: "actions" }, verifyBtn, pin),
        results,
      ),
    ),
    section("Payload", payloadView),
    section(
      "Receipt",
      el("p", {}, `Inclusion of entry ${seq} in the current signed checkpoint (tree size ${cp.size}), as RFC 9162 proof hashes, leaf side first.`),
      el("pre", { class: "note" }, note),
      el("ol", { class: "hashes", start: 1 }, proof.hashes.map((x) => el("li", {}, code(x)))),
    ),
  );
}

// --- Models -------------------------------------------------------------------------------------
async function pageModels() {
  const { models } = await api("/models");
  if (!models.length) {
    return el("div", {}, el("h1", {}, "Models"), el("p", { class: "empty" }, "No model is registered yet. A pipeline registers one with ", code("POST /api/v1/models/<name>/versions"), " (see ", code("ledger demo"), ")."));
  }
  const pairs = models.flatMap((m) => m.versions.map((v) => [m.name, v])).slice(0, 200);
  const details = await Promise.all(pairs.map(([n, v]) => api(`/models/${enc(n)}/versions/${enc(v)}`).then((r) => r.model, (e) => ({ error: e }))));
  const envs = [...new Set(details.flatMap((d) => Object.keys(d.current_stage || {})))].sort();
  const rows = pairs.map(([n, v], i) => {
    const d = details[i];
    if (d.error) return [n, v, el("span", { class: "badge bad" }, d.error.message), ...envs.map(() => ""), ""];
    return [
      el("strong", {}, n),
      link(`/console/models/${enc(n)}/versions/${enc(v)}`, `version ${v}`),
      el("span", {}, ["reproducible", "traceable", "verifiable"].map((k) => el("span", { class: `badge ${d.verdicts?.[k]?.ok ? "ok" : "bad"}`, title: `${k}: ${d.verdicts?.[k]?.ok ? "ok" : "something is missing"}` }, `${d.verdicts?.[k]?.ok ? "✓" : "✗"} ${k}`))),
      ...envs.map((env) => (d.current_stage?.[env] ? el("span", { class: "badge stage" }, d.current_stage[env].stage) : el("span", { class: "muted" }, "—"))),
      when(d.registered_at),
    ];
  });
  return el(
    "div",
    {},
    el("h1", {}, "Models"),
    el("p", {}, `${models.length} model(s), ${pairs.length} version(s) shown. Stage per environment is the latest recorded deployment.`),
    table(["model", "version", "verdicts", ...envs.map((e) => `stage in ${e}`), "registered"], rows, { caption: "Model registry" }),
    envs.length ? null : el("p", { class: "empty" }, "No version is deployed anywhere yet: a deployment needs an allowed promotion first."),
  );
}

// --- Model version ------------------------------------------------------------------------------
async function pageModelVersion(name, version) {
  const base = `/provenance/models/${enc(name)}/versions/${enc(version)}`;
  const [p, keys] = await Promise.all([api(base), api("/log/keys")]);
  const current = keys.keys.find((k) => k.current) || keys.keys[0];
  const file = `bundle-${name.replace(/[^A-Za-z0-9._-]/g, "_")}-${version.replace(/[^A-Za-z0-9._-]/g, "_")}.json`;
  const dlStatus = el("span", { class: "help", "aria-live": "polite" });
  const download = el(
    "button",
    {
      type: "button",
      id: "bundle",
      onclick: async () => {
        download.disabled = true;
        dlStatus.textContent = "Building the bundle…";
        try {
          const blob = await api(`${base}/bundle`, { blob: true });
          const url = URL.createObjectURL(blob);
          const a = el("a", { href: url, download: file });
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
          dlStatus.textContent = `Saved ${file} (${blob.size.toLocaleString("en")} bytes).`;
        } catch (e) {
          dlStatus.replaceChildren(problemBox(e));
        } finally {
          download.disabled = false;
        }
      },
    },
    "Download the audit bundle",
  );
  const verdicts = ["reproducible", "traceable", "verifiable"].map((k) => {
    const v = p.verdicts[k];
    return el(
      "div",
      { class: `card verdict ${v.ok ? "ok" : "bad"}`, "data-verdict": k },
      el("h3", {}, el("span", { "aria-hidden": "true" }, v.ok ? "✓ " : "✗ "), k),
      v.ok ? el("p", {}, "Nothing missing.") : el("ul", {}, v.missing.map((m) => el("li", {}, m))),
    );
  });
  const thresholds = (t) =>
    Object.entries(t || {}).map(([metric, b]) => el("div", {}, code(metric), " ", [b.min !== undefined ? `≥ ${b.min}` : null, b.max !== undefined ? `≤ ${b.max}` : null].filter(Boolean).join(" and ")));
  const metrics = (m) => Object.entries(m || {}).map(([k, v]) => el("div", {}, code(k), ` ${v}`));
  const seqLink = (s) => (s === null || s === undefined ? "—" : link(`/console/entries/${s}`, `#${s}`));
  const m = p.model;
  return el(
    "div",
    { class: "page-model" },
    el("h1", {}, `${name} · version ${version}`),
    el(
      "p",
      { class: "sub" },
      "Registered by ", m.registered_by, " ", when(m.registered_at), " in ", seqLink(m.seq), ". Artifact ", code(m.artifact?.uri), " ", code(m.artifact?.digest || "no digest"), ". ",
      link(`/console/lineage?node=${enc(`run:${m.training_run_id}`)}&direction=upstream`, "Lineage of its training run"),
      (m.tags || []).length ? [" · tags ", m.tags.map(tagChip)] : null,
    ),
    el("div", { class: "cards verdicts" }, verdicts),
    section(
      "Audit bundle",
      el("div", { class: "actions" }, download, dlStatus),
      el("p", {}, "Verify it offline, trusting only the log's verifier key (obtained out of band):"),
      el("pre", { class: "cmd", id: "verify-cmd" }, `ledger verify ${file} --key '${current ? current.verifier_key : "<verifier key>"}'`),
    ),
    section(
      "Validations",
      table(
        ["type", "metrics", "thresholds", "result", "report", "recorded", "entry"],
        p.validations.map((v) => [el("strong", {}, v.type), metrics(v.metrics), thresholds(v.thresholds), badge(v.passed, "passed", "failed"), v.report ? el("span", {}, code(v.report.uri), el("br"), code(v.report.digest || "")) : "—", [v.recorded_by, el("br"), when(v.recorded_at)], seqLink(v.seq)]),
        { empty: "No validation is recorded. A pipeline records one with POST …/validations (performance and bias are needed for production)." },
      ),
    ),
    section(
      "Approvals",
      table(["stage", "approver", "comment", "recorded", "entry"], p.approvals.map((a) => [a.stage, a.approver, a.comment || "", when(a.recorded_at), seqLink(a.seq)]), {
        empty: "No approval is recorded. An approver who neither registered nor trained the model approves with POST …/approvals.",
      }),
    ),
    section(
      "Promotion decisions",
      table(
        ["stage", "requested by", "decision", "violations", "warnings", "recorded", "entry"],
        p.decisions.map((d) => [d.stage, d.requested_by, badge(d.allowed, "allowed", "denied"), d.violations.length ? el("ul", { class: "violations" }, d.violations.map((x) => el("li", {}, x))) : "none", (d.warnings || []).length ? el("ul", {}, d.warnings.map((x) => el("li", {}, x))) : "", when(d.recorded_at), seqLink(d.seq)]),
        { empty: "No promotion was asked for yet." },
      ),
    ),
    section(
      "Deployments",
      table(
        ["environment", "stage", "endpoint", "outcome", "by", "recorded", "entry"],
        p.deployments.map((d) => [d.environment, d.stage, d.endpoint ? code(d.endpoint) : "—", d.refused ? el("span", {}, badge(false, "", "refused"), " ", d.reason || "") : el("span", {}, badge(true, "deployed"), " after decision ", seqLink(d.decision_seq)), d.deployed_by, when(d.recorded_at), seqLink(d.seq)]),
        { empty: "Not deployed. A deployment is recorded after an allowed promotion to its stage." },
      ),
    ),
    section(
      "Classifications upstream",
      table(
        ["dataset", "effective tags", "approved by security", "declared, unapproved", "classification entries"],
        (p.classifications || []).map((c) => [
          link(`/console/lineage?node=${enc(`dataset:${c.namespace}:${c.name}`)}`, `${c.namespace}:${c.name}`),
          (c.tags || []).length ? c.tags.map(tagChip) : el("span", { class: "badge declass" }, "none (declassified)"),
          c.classified ? badge(true, "approved") : badge(false, "", "not approved"),
          (c.unapproved || []).map(tagChip),
          (c.entries || []).map((s) => [seqLink(s), " "]),
        ]),
        { empty: "No dataset upstream of this model is classified." },
      ),
    ),
    section(
      "Erasures",
      table(["erased entry", "kind", "subject", "reason", "by", "when", "erasure entry"], (p.erasures || []).map((e) => [seqLink(e.seq), code(e.kind), e.subject, e.reason || "", e.erased_by || "", when(e.erased_at), seqLink(e.erasure_seq)]), {
        empty: "No payload in this model's provenance has been erased.",
      }),
    ),
    section(
      "Upstream",
      table(
        ["dataset", "version", "produced by run", "source"],
        p.upstream.datasets.map((d) => [link(`/console/lineage?node=${enc(`dataset:${d.namespace}:${d.name}`)}`, `${d.namespace}:${d.name}`), d.version || el("span", { class: "badge bad" }, "unversioned"), d.produced_by_run ? link(`/console/lineage?node=${enc(`run:${d.produced_by_run}`)}`, d.produced_by_run) : "—", d.source ? "declared source" : ""]),
        { empty: "No upstream dataset is recorded." },
      ),
      table(
        ["run", "job", "state", "code version", "entries"],
        p.upstream.runs.map((r) => [link(`/console/lineage?node=${enc(`run:${r.id}`)}`, r.id), r.job, r.state, r.code_version || el("span", { class: "badge bad" }, "none"), (r.entries || []).map((s) => [seqLink(s), " "])]),
        { empty: "No upstream run is recorded." },
      ),
    ),
  );
}

// --- Lineage ------------------------------------------------------------------------------------
async function pageLineage() {
  const q = new URLSearchParams(location.search);
  const node = q.get("node") || "";
  const depth = q.get("depth") || "5";
  const direction = q.get("direction") || "both";
  const nodeInput = el("input", { id: "node", name: "node", value: node, size: 50, placeholder: "dataset:<namespace>:<name>, job:<namespace>:<name> or run:<id>", required: true });
  const depthSel = el("select", { id: "depth" }, ["1", "2", "3", "5", "10", "20", "50", "100"].map((d) => el("option", { value: d, selected: d === depth }, d)));
  const dirSel = el("select", { id: "direction" }, ["both", "upstream", "downstream"].map((d) => el("option", { value: d, selected: d === direction }, d)));
  const form = el(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (ev) => {
        ev.preventDefault();
        go(`/console/lineage?${new URLSearchParams({ node: nodeInput.value.trim(), depth: depthSel.value, direction: dirSel.value })}`);
      },
    },
    el("label", { for: "node" }, "Node"),
    nodeInput,
    el("label", { for: "depth" }, "Depth"),
    depthSel,
    el("label", { for: "direction" }, "Direction"),
    dirSel,
    el("button", { type: "submit" }, "Draw"),
  );
  const head = [el("h1", {}, "Lineage"), form];
  if (!node) {
    return el("div", {}, head, el("p", { class: "empty" }, "Name a dataset, job or run above, or open one from a model version's page or the log. A model's lineage is its training run's: ", code("run:<training run id>"), "."));
  }
  const g = await api(`/lineage?${new URLSearchParams({ nodeId: node, depth, direction })}`);
  if (!g.graph.length) return el("div", {}, head, el("p", { class: "empty" }, "Nothing is recorded around this node (or it is outside your scope)."));
  const panel = el("aside", { class: "card node-panel", id: "node-panel", "aria-live": "polite" }, el("p", { class: "help" }, "Click a node, or pick one from the list below, to see it here. Drag to pan, scroll to zoom."));
  const canvas = el("div", { class: "graph", id: "graph", role: "img", "aria-label": `Lineage graph of ${g.graph.length} nodes around ${node}` });
  const show = (n) => panel.replaceChildren(nodePanel(n, depth, direction));
  const legend = el(
    "div",
    { class: "legend", "aria-label": "Legend" },
    el("span", { class: "lg dataset" }, "dataset"),
    el("span", { class: "lg job" }, "job"),
    el("span", { class: "lg run" }, "run"),
    ["pii", "phi", "confidential"].map(tagChip),
    el("span", { class: "badge declass" }, "declassified output"),
    el("span", { class: "lg focus" }, "this node"),
  );
  const list = el(
    "details",
    { class: "node-list" },
    el("summary", {}, `All ${g.graph.length} nodes as a list`),
    el("ul", {}, g.graph.map((n) => el("li", {}, el("button", { type: "button", class: "link", onclick: () => show(n) }, n.id), " ", nodeTags(n).map(tagChip)))),
  );
  let cy = null;
  const zoomBy = (f) => cy && cy.zoom({ level: cy.zoom() * f, renderedPosition: { x: cy.width() / 2, y: cy.height() / 2 } });
  const controls = el(
    "div",
    { class: "actions graph-controls", role: "group", "aria-label": "Graph view" },
    el("button", { type: "button", class: "secondary", onclick: () => cy && cy.fit(undefined, 30) }, "Fit all"),
    el("button", { type: "button", class: "secondary", onclick: () => cy && overview(cy, node) }, "Back to this node"),
    el("button", { type: "button", class: "secondary", "aria-label": "Zoom in", onclick: () => zoomBy(1.4) }, "+"),
    el("button", { type: "button", class: "secondary", "aria-label": "Zoom out", onclick: () => zoomBy(1 / 1.4) }, "−"),
    el("span", { class: "help" }, `${g.graph.length} nodes. Drag to pan, scroll or use the buttons to zoom; labels appear when zoomed in.`),
  );
  const out = el("div", { class: "page-lineage" }, head, legend, controls, el("div", { class: "lineage-layout" }, canvas, panel), list);
  // Drawn once the page is in the document, so the graph is laid out in its real size.
  main().addEventListener(
    "console:rendered",
    () => {
      if (!canvas.isConnected) return; // another page won the race
      const t0 = performance.now();
      cy = drawLineage(canvas, g.graph, node, (n) => show(n));
      canvas.setAttribute("data-layout-ms", String(Math.round(performance.now() - t0)));
      canvas.setAttribute("data-nodes", String(cy.nodes().length));
      canvas.setAttribute("data-edges", String(cy.edges().length));
      const focus = g.graph.find((n) => isFocus(n, node));
      if (focus) show(focus);
    },
    { once: true },
  );
  return out;
}

export function nodeTags(n) {
  const c = n.data?.classification;
  return c ? c.effective || [] : n.data?.tags || [];
}

function nodePanel(n, depth, direction) {
  const d = n.data || {};
  const c = d.classification || {};
  const rows = [];
  if (n.type === "DATASET") {
    rows.push(["namespace", d.namespace], ["name", d.name], ["current version", d.currentVersion || "—"], ["declared source", d.declaredSource ? "yes" : "no"]);
    if (c.own?.length) rows.push(["classified", c.own.map(tagChip)]);
    if (c.declassified?.length) rows.push(["declassified", c.declassified.map((t) => el("span", { class: "badge declass" }, t))]);
    if (c.unapproved?.length) rows.push(["declared, unapproved", c.unapproved.map(tagChip)]);
    if (d.withheld?.length) rows.push(["withheld from you", d.withheld.join(", ")]);
    rows.push(["facets", Object.keys(d.facets || {}).join(", ") || "none"]);
    if ((d.fields || []).length) rows.push(["schema", d.fields.map((f) => `${f.name}: ${f.type}`).join(", ")]);
  } else {
    for (const k of ["namespace", "name", "type", "state", "latestRun", "currentVersion"]) {
      if (d[k] && typeof d[k] !== "object") rows.push([k, String(d[k])]);
    }
    if (d.latestRun?.id) rows.push(["latest run", d.latestRun.id]);
  }
  return el(
    "div",
    {},
    el("h3", {}, n.type.toLowerCase(), ": ", el("span", { class: "wrap" }, n.id)),
    el("p", {}, "Effective tags: ", nodeTags(n).length ? nodeTags(n).map(tagChip) : "none"),
    el("dl", { class: "kv" }, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("p", {}, link(`/console/lineage?${new URLSearchParams({ node: n.id, depth, direction })}`, "Centre the graph here"), " · ", link(`/console/log?${new URLSearchParams({ subject: n.id })}`, "Its log entries")),
  );
}

// --- Violations ---------------------------------------------------------------------------------
async function pageViolations() {
  const { violations } = await api("/violations");
  const head = [el("h1", {}, "Violations"), el("p", {}, "Runs that read classified data beyond their principal's clearance. Each blocks the promotion of every model downstream until a security principal resolves it.")];
  if (!violations.length) return el("div", {}, head, el("p", { class: "empty" }, "No open violation. Nothing blocks a promotion on access grounds."));
  const rows = violations.map((v) => {
    const reason = el("input", { "aria-label": `Reason for resolving violation ${v.seq}`, placeholder: "why this access is acceptable", size: 28 });
    const msg = el("div", { "aria-live": "polite" });
    const btn = el(
      "button",
      {
        type: "button",
        onclick: async () => {
          if (!reason.value.trim()) {
            msg.replaceChildren(el("span", { class: "problem" }, "Say why, for the record."));
            reason.focus();
            return;
          }
          btn.disabled = true;
          try {
            const r = await api(`/violations/${v.seq}/resolution`, { method: "POST", body: { reason: reason.value.trim() } });
            msg.replaceChildren(el("span", { class: "badge ok" }, "resolved"), " in ", link(`/console/entries/${r.receipt.seq}`, `entry ${r.receipt.seq}`));
          } catch (e) {
            msg.replaceChildren(problemBox(e));
            btn.disabled = false;
          }
        },
      },
      "Resolve",
    );
    return [
      link(`/console/entries/${v.seq}`, `#${v.seq}`),
      v.principal || "",
      link(`/console/lineage?node=${enc(`dataset:${v.dataset}`)}`, v.dataset),
      v.run_id ? link(`/console/lineage?node=${enc(`run:${v.run_id}`)}`, `${v.job || "run"} ${v.run_id.slice(0, 8)}`) : v.job || "—",
      (v.reasons || []).join("; "),
      when(v.recorded_at),
      el("div", { class: "resolve" }, reason, btn, msg),
    ];
  });
  return el("div", {}, head, table(["decision", "principal", "dataset", "run", "reasons", "recorded", "resolve"], rows, { caption: `${violations.length} open` }));
}

// --- start --------------------------------------------------------------------------------------
renderWho();
route();
