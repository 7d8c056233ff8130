// Activity: recent requests with their figures and captures, and the requests in flight now.
import { call, errorMessage, json } from "./api.js";
import { dialog, fmtBytes, fmtMs, fmtNum, fmtTime, h, replace, statusClass } from "./dom.js";
import { elapsedMs, state, subscribe } from "./events.js";

const LIMIT = 200;

/** Decode a base64 body to bytes. */
function bytesOf(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) out[i] = raw.charCodeAt(i);
  return out;
}

/** Pretty JSON when ``text`` is JSON, else the text itself. */
function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

/** A body shown as text: pretty JSON, SSE as one block per event, binary as its size. */
export function bodyView(b64, headers) {
  if (b64 === null || b64 === undefined) return h("p", { class: "muted" }, "not kept");
  const bytes = bytesOf(b64);
  if (!bytes.length) return h("p", { class: "muted" }, "empty");
  let text;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch {
    return h("p", { class: "muted" }, `${fmtBytes(bytes.length)} of binary data`);
  }
  const type = Object.entries(headers || {}).find(([k]) => k.toLowerCase() === "content-type")?.[1] || "";
  if (type.includes("text/event-stream") || /^(data|event):/m.test(text.slice(0, 200))) {
    const events = text.split(/\r?\n\r?\n/).filter((e) => e.trim());
    return h("div", { class: "block pre-events", "data-role": "sse" }, h("p", { class: "muted small" },
      `${events.length} server-sent event(s)`),
      h("pre", { class: "block" }, events.map((event) => h("div", { class: "sse-event" },
        event.split(/\r?\n/).map((line) => {
          const match = /^data: ?(.*)$/.exec(line);
          return match && match[1].startsWith("{") ? `data: ${JSON.stringify(JSON.parse(match[1]))}\n` : `${line}\n`;
        })))));
  }
  return h("pre", { class: "block" }, pretty(text));
}

function headersView(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return h("p", { class: "muted" }, "none");
  return h("div", { class: "kv" }, entries.map(([k, v]) => [h("span", {}, k), h("span", {}, String(v))]));
}

async function openCapture(row) {
  const box = dialog(`Request ${row.id}: ${row.model} ${row.req_path}`);
  box.body.append(h("p", { class: "muted" }, "Loading capture…"));
  try {
    const capture = await json(`/api/captures/${row.id}`);
    replace(box.body,
      h("div", { class: "row small muted" }, h("span", {}, fmtTime(row.timestamp)),
        h("span", {}, `status ${row.resp_status_code}`), h("span", {}, `duration ${fmtMs(row.duration_ms)}`)),
      row.error_msg ? h("p", { class: "notice error" }, row.error_msg) : null,
      h("h3", {}, "Request headers"), headersView(capture.req_headers),
      h("h3", {}, "Request body"), bodyView(capture.req_body, capture.req_headers),
      h("h3", {}, "Response headers"), headersView(capture.resp_headers),
      h("h3", {}, "Response body"), bodyView(capture.resp_body, capture.resp_headers));
  } catch (e) {
    replace(box.body, h("p", { class: "notice error" }, `No capture: ${e.message || e}`));
  }
}

/** Render the Activity page into ``root``; returns its cleanup. */
export function mount(root) {
  const params = new URLSearchParams(location.search);
  const model = h("select", { "aria-label": "Model", onchange: () => { setQuery(); load(); } },
    h("option", { value: "" }, "all models"));
  const status = h("select", { "aria-label": "Status", onchange: () => { setQuery(); renderRows(); } },
    h("option", { value: "" }, "any status"), h("option", { value: "ok" }, "succeeded"),
    h("option", { value: "error" }, "failed"));
  status.value = params.get("status") || "";
  const notice = h("p", { class: "notice error", hidden: true });
  const inflightBody = h("tbody", { id: "inflight" });
  const rowsBody = h("tbody", { id: "activity-rows" });
  const total = h("span", { class: "muted small" });
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Activity"), model, status, total),
    notice,
    h("section", { class: "panel" }, h("h2", {}, "In flight now"),
      h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["id", "model", "request", "started", "running", "state", "sent", ""]
          .map((t) => h("th", { class: ["running", "sent"].includes(t) ? "num" : "" }, t)))),
        inflightBody))),
    h("section", { class: "panel" }, h("h2", {}, "Recent requests"),
      h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {},
          h("th", {}, "time"), h("th", {}, "model"), h("th", { class: "hide-narrow" }, "endpoint"),
          h("th", {}, "status"), h("th", { class: "num" }, "prompt"), h("th", { class: "num" }, "generated"),
          h("th", { class: "num hide-narrow", title: "time to first token: from arrival to the answer's first byte (queueing and loading included)" }, "TTFT"),
          h("th", { class: "num" }, "tok/s"), h("th", { class: "num" }, "duration"))),
        rowsBody))));

  let rows = [];
  let timer = 0;
  let wanted = params.get("model") || "";

  function setQuery() {
    wanted = model.value;
    const query = new URLSearchParams();
    if (model.value) query.set("model", model.value);
    if (status.value) query.set("status", status.value);
    history.replaceState(null, "", `/ui/activity${query.size ? `?${query}` : ""}`);
  }

  function fillModels() {
    const ids = state.models.filter((m) => !m.peerID).map((m) => m.id);
    if (model.options.length !== ids.length + 1) {
      replace(model, h("option", { value: "" }, "all models"), ids.map((id) => h("option", { value: id }, id)));
    }
    const before = model.value;
    model.value = ids.includes(wanted) ? wanted : "";
    if (model.value !== before) load();
  }

  async function load() {
    const query = new URLSearchParams({ limit: String(LIMIT) });
    if (model.value) query.set("model", model.value);
    try {
      const page = await json(`/api/metrics/activity?${query}`);
      rows = page.data || [];
      total.textContent = `${page.total} recorded`;
      notice.hidden = true;
      renderRows();
    } catch (e) {
      notice.hidden = false;
      notice.textContent = `Activity is not available: ${e.message || e}`;
    }
  }

  function renderRows() {
    const shown = rows.filter((r) => !status.value
      || (status.value === "ok" ? r.resp_status_code > 0 && r.resp_status_code < 400
        : !(r.resp_status_code > 0 && r.resp_status_code < 400)));
    replace(rowsBody, shown.length ? shown.map((r) => {
      const t = r.tokens || {};
      return h("tr", { class: r.has_capture ? "clickable" : "", "data-row": r.id,
        title: r.has_capture ? "open the capture" : r.error_msg || "",
        tabindex: r.has_capture ? "0" : null,
        onclick: r.has_capture ? () => openCapture(r) : null,
        onkeydown: r.has_capture ? (e) => { if (e.key === "Enter") openCapture(r); } : null },
      h("td", {}, fmtTime(r.timestamp)), h("td", { class: "mono" }, r.model),
      h("td", { class: "mono hide-narrow" }, r.req_path),
      h("td", {}, h("span", { class: `badge ${statusClass(r.resp_status_code)}` }, r.resp_status_code || "none")),
      h("td", { class: "num" }, fmtNum(t.input_tokens, 0)), h("td", { class: "num" }, fmtNum(t.output_tokens, 0)),
      h("td", { class: "num hide-narrow", "data-role": "ttft" }, fmtMs(r.ttft_ms)), h("td", { class: "num" }, fmtNum(t.tokens_per_second)),
      h("td", { class: "num" }, fmtMs(r.duration_ms)));
    }) : h("tr", {}, h("td", { colspan: "9", class: "muted" }, "No requests yet.")));
  }

  async function cancel(id, button) {
    button.disabled = true;
    try {
      const response = await call(`/api/inflight/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      if (!response.ok) throw new Error(await errorMessage(response));
    } catch (e) {
      notice.hidden = false;
      notice.textContent = `Cancel failed: ${e.message || e}`;
      button.disabled = false;
    }
  }

  function renderInflight() {
    const entries = [...state.inflight.values()];
    replace(inflightBody, entries.length ? entries.map((r) => {
      const answering = Object.keys(r.resp_headers || {}).length > 0;
      const button = h("button", { type: "button", class: "danger" }, "Cancel");
      button.addEventListener("click", () => cancel(r.id, button));
      return h("tr", { "data-inflight": r.id },
        h("td", {}, r.id), h("td", { class: "mono" }, r.model), h("td", { class: "mono" }, `${r.method} ${r.req_path}`),
        h("td", {}, fmtTime(r.timestamp)), h("td", { class: "num", "data-role": "elapsed" }, fmtMs(elapsedMs(r))),
        h("td", {}, answering ? "answering" : "waiting for the model"),
        h("td", { class: "num" }, fmtBytes(r.resp_bytes)), h("td", {}, button));
    }) : h("tr", {}, h("td", { colspan: "8", class: "muted" }, "Nothing in flight.")));
  }

  function tick() {
    for (const el of inflightBody.querySelectorAll("[data-inflight]")) {
      const entry = state.inflight.get(el.dataset.inflight);
      if (entry) el.querySelector("[data-role=elapsed]").textContent = fmtMs(elapsedMs(entry));
    }
  }

  fillModels();
  if (!model.value) load();
  renderInflight();
  const undo = [
    subscribe("modelStatus", fillModels),
    subscribe("inflight", renderInflight),
    subscribe("activity", () => { clearTimeout(timer); timer = setTimeout(load, 250); }),
    subscribe("connection", (value) => { if (value === "open") load(); }),
  ];
  const ticker = setInterval(tick, 500);
  return () => { undo.forEach((u) => u()); clearInterval(ticker); clearTimeout(timer); };
}
