// Logs: the proxy log, all upstream output, or one model's, live; filter, follow or pause.
import { liveStream } from "./api.js";
import { h, replace } from "./dom.js";
import { state, subscribe } from "./events.js";

const MAX_LINES = 3000;

/** Render the Logs page into ``root``; returns its cleanup. */
export function mount(root) {
  const params = new URLSearchParams(location.search);
  const source = h("select", { "aria-label": "Log",
    onchange: () => { chosen = source.value; setQuery(); open(); } });
  const filter = h("input", { type: "search", placeholder: "filter text", "aria-label": "Filter",
    oninput: () => { rebuild(); setQuery(); } });
  const pause = h("button", { type: "button", onclick: togglePause }, "Pause");
  const clear = h("button", { type: "button", onclick: () => { lines = []; rebuild(); } }, "Clear");
  const info = h("span", { class: "muted small", "data-role": "info" });
  const view = h("div", { class: "log", id: "log-view", role: "log", "aria-live": "off" });
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Logs"), source, filter, pause, clear, info),
    view);
  filter.value = params.get("q") || "";

  let chosen = params.get("source") || "proxy";
  let streaming = null;
  let lines = [];
  let partial = "";
  let paused = false;
  let missed = 0;
  let stream = null;
  let pending = [];
  let frame = 0;

  function fillSources() {
    const models = state.models.filter((m) => !m.peerID).map((m) => m.id);
    const options = [["proxy", "proxy (llamaswap)"], ["upstream", "upstream (all models)"],
      ...models.map((id) => [id, `model: ${id}`])];
    if (source.options.length !== options.length) {
      replace(source, options.map(([value, label]) => h("option", { value }, label)));
    }
    source.value = options.some(([v]) => v === chosen) ? chosen : "proxy";
    if (streaming !== source.value) open();
  }

  function setQuery() {
    const query = new URLSearchParams({ source: source.value });
    if (filter.value) query.set("q", filter.value);
    history.replaceState(null, "", `/ui/logs?${query}`);
  }

  function matches(line) {
    const needle = filter.value.toLowerCase();
    return !needle || line.toLowerCase().includes(needle);
  }

  function lineNode(text) {
    return h("div", { class: "line" }, text);
  }

  function rebuild() {
    replace(view, lines.filter(matches).map(lineNode));
    missed = 0;
    status();
    if (!paused) view.scrollTop = view.scrollHeight;
  }

  function status() {
    info.textContent = paused ? `paused, ${missed} new line(s)` : `${lines.length} line(s), following`;
  }

  function flush() {
    frame = 0;
    const fresh = pending;
    pending = [];
    if (paused) { missed += fresh.length; status(); return; }
    const nodes = fresh.filter(matches).map(lineNode);
    view.append(...nodes);
    while (view.childElementCount > MAX_LINES) view.firstElementChild.remove();
    view.scrollTop = view.scrollHeight;
    status();
  }

  function take(text) {
    const parts = (partial + text).split("\n");
    partial = parts.pop();
    if (!parts.length) return;
    lines.push(...parts);
    if (lines.length > MAX_LINES) lines.splice(0, lines.length - MAX_LINES);
    pending.push(...parts);
    if (pending.length > MAX_LINES) pending.splice(0, pending.length - MAX_LINES);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function open() {
    if (stream) stream.close();
    streaming = source.value;
    lines = []; partial = ""; pending = [];
    replace(view);
    const name = source.value.split("/").map(encodeURIComponent).join("/");
    stream = liveStream(`/logs/stream/${name}`, {
      onOpen() { lines = []; partial = ""; pending = []; replace(view); },
      onText: take,
    });
  }

  function togglePause() {
    paused = !paused;
    pause.textContent = paused ? "Follow" : "Pause";
    pause.classList.toggle("primary", paused);
    if (!paused) rebuild(); else status();
  }

  fillSources();
  const undo = subscribe("modelStatus", fillSources);
  return () => {
    undo();
    if (stream) stream.close();
    if (frame) cancelAnimationFrame(frame);
  };
}
