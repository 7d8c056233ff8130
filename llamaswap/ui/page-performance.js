// Performance: CPU, memory and GPU charts; requests/s, tokens/s and swaps; the scheduler's queue.
import { call, json } from "./api.js";
import { drawChart, PALETTE } from "./chart.js";
import { fmtMs, fmtNum, h, replace } from "./dom.js";
import { state, subscribe } from "./events.js";

const WINDOW_MS = 15 * 60 * 1000;
const POLL_MS = 5000;

/** Sum of each metric's samples by name (labels folded), from Prometheus text. */
export function parseMetrics(text) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (!Number.isFinite(value)) continue;
    const key = match[1];
    sums[key] = (sums[key] || 0) + value;
    const result = /result="(\w+)"/.exec(match[2] || "");
    if (result) sums[`${key}:${result[1]}`] = (sums[`${key}:${result[1]}`] || 0) + value;
  }
  return sums;
}

/** Per-model figures of the swap series: {model: {started, ok, failed, seconds, count}}. */
export function swapsByModel(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const match = /^llamaswap_swap(s_total|_duration_seconds_sum|_duration_seconds_count)\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!match) continue;
    const model = /model="((?:[^"\\]|\\.)*)"/.exec(match[2])?.[1];
    if (model === undefined) continue;
    const entry = out[model] || (out[model] = { started: 0, ok: 0, failed: 0, seconds: 0, count: 0 });
    const value = Number(match[3]);
    if (match[1] === "s_total") {
      const result = /result="(\w+)"/.exec(match[2])?.[1];
      if (result in entry) entry[result] += value;
    } else if (match[1] === "_duration_seconds_sum") entry.seconds += value;
    else entry.count += value;
  }
  return out;
}

/** Render the Performance page into ``root``; returns its cleanup. */
export function mount(root) {
  const notice = h("p", { class: "notice", hidden: true });
  const stats = h("div", { class: "stats-grid", id: "perf-stats" });
  const charts = h("div", { class: "charts", id: "perf-charts" });
  const queue = h("div", { id: "perf-queue" });
  const starts = h("div", { id: "perf-swaps" });
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Performance"),
      h("span", { class: "muted small" }, "last 15 minutes, sampled every few seconds")),
    notice, stats, h("h2", {}, "Charts"), charts,
    h("h2", {}, "Model starts"), starts,
    h("h2", {}, "Scheduler"), queue);

  const series = { cpu: [], mem: [], load: [], rps: [], tps: [], swaps: [] };
  const gpus = new Map(); // id -> {name, util: [], mem: [], temp: []}
  let after = null;
  let lastCounters = null;
  let lastTotals = {};
  let stopped = false;
  const boxes = new Map();

  function trim(points) {
    const cut = Date.now() - WINDOW_MS;
    while (points.length && points[0][0] < cut) points.shift();
  }

  function chartBox(id, title, unit) {
    if (!boxes.has(id)) {
      const now = h("span", { class: "now", "data-role": "now" }, "–");
      const canvas = h("canvas", { role: "img", "aria-label": title });
      const box = h("div", { class: "panel chart", "data-chart": id }, h("h3", {}, h("span", {}, title), now), canvas);
      boxes.set(id, { box, canvas, now, unit });
    }
    return boxes.get(id);
  }

  function latest(points) { return points.length ? points[points.length - 1][1] : null; }

  function render() {
    const items = [
      ["cpu", "CPU (all cores)", "%", [{ points: series.cpu }], 100],
      ["mem", "Memory used", "%", [{ points: series.mem }], 100],
      ["load", "Load average (1 min)", "", [{ points: series.load }], null],
      ["rps", "Requests per second", "", [{ points: series.rps }], null],
      ["tps", "Generated tokens per second", "", [{ points: series.tps }], null],
      ["swaps", "Model swaps per minute", "", [{ points: series.swaps }], null],
    ];
    for (const [id, gpu] of gpus) {
      items.push([`gpu${id}-util`, `GPU ${id} ${gpu.name}: utilisation`, "%", [{ points: gpu.util }], 100]);
      items.push([`gpu${id}-mem`, `GPU ${id}: memory used`, "%", [{ points: gpu.mem }], 100]);
      items.push([`gpu${id}-temp`, `GPU ${id}: temperature`, "°C", [{ points: gpu.temp }], null]);
    }
    const shown = [];
    for (const [id, title, unit, lines, max] of items) {
      const { box, canvas, now } = chartBox(id, title, unit);
      shown.push(box);
      lines.forEach((line, i) => { line.color = PALETTE[i]; });
      const value = latest(lines[0].points);
      now.textContent = value === null ? "–" : `${fmtNum(value, 2)}${unit}`;
      requestAnimationFrame(() => drawChart(canvas, lines, { windowMs: WINDOW_MS, max, unit }));
    }
    if (charts.childElementCount !== shown.length) replace(charts, shown);
  }

  function renderStats() {
    const t = lastTotals;
    const cells = [
      ["requests", fmtNum(t.requests, 0)], ["prompt tokens", fmtNum(t.input, 0)],
      ["generated tokens", fmtNum(t.output, 0)], ["swaps", fmtNum(t.swaps, 0)],
      ["failed swaps", fmtNum(t.failedSwaps, 0)], ["queued now", fmtNum(t.queue, 0)],
      ["generation p50", t.p50 ? `${fmtNum(t.p50)} tok/s` : "–"],
      ["GPUs", gpus.size ? String(gpus.size) : "none seen"],
    ];
    replace(stats, cells.map(([k, v]) => h("div", { class: "stat", "data-stat": k },
      h("div", { class: "v" }, v), h("div", { class: "k" }, k))));
  }

  function renderStarts(byModel) {
    const rows = Object.entries(byModel).sort(([a], [b]) => a.localeCompare(b));
    replace(starts, rows.length ? h("div", { class: "panel table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "model"), h("th", { class: "num" }, "started"),
        h("th", { class: "num" }, "ready"), h("th", { class: "num" }, "failed"),
        h("th", { class: "num", title: "stopping what had to make room, starting, health check" }, "mean time to ready"))),
      h("tbody", {}, rows.map(([model, e]) => h("tr", { "data-swaps": model },
        h("td", { class: "mono" }, model), h("td", { class: "num" }, fmtNum(e.started, 0)),
        h("td", { class: "num" }, fmtNum(e.ok, 0)), h("td", { class: "num" }, fmtNum(e.failed, 0)),
        h("td", { class: "num" }, e.count ? fmtMs((1000 * e.seconds) / e.count) : "–"))))))
      : h("p", { class: "muted" }, "No model has been started yet."));
  }

  function renderQueue() {
    const snap = state.queue;
    if (!snap) { replace(queue, h("p", { class: "muted" }, "The scheduler reports no snapshot.")); return; }
    const waiting = snap.queue || [];
    const starting = state.models.filter((m) => m.state === "starting" || m.state === "stopping");
    const inFlight = new Map();
    for (const r of state.inflight.values()) inFlight.set(r.model, (inFlight.get(r.model) || 0) + 1);
    const name = snap.scheduler?.scheduler || snap.scheduler || "?";
    replace(queue, h("div", { class: "panel" },
      h("div", { class: "muted small" }, `scheduler: ${name}`),
      h("h3", {}, `Queue (${waiting.length})`),
      waiting.length ? h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "model"), h("th", {}, "priority"))),
        h("tbody", {}, waiting.map((q) => h("tr", {}, h("td", {}, q.position), h("td", { class: "mono" }, q.model),
          h("td", {}, q.priority ?? "–"))))))
        : h("p", { class: "muted" }, "Nobody is waiting."),
      h("h3", {}, "Starting or stopping"),
      starting.length ? h("div", {}, starting.map((m) => h("span", { class: "chip" }, `${m.id}: ${m.state}`)))
        : h("p", { class: "muted" }, "No model is starting or stopping."),
      h("h3", {}, "In flight by model"),
      inFlight.size ? h("div", {}, [...inFlight].map(([m, n]) => h("span", { class: "chip" }, `${m}: ${n}`)))
        : h("p", { class: "muted" }, "None.")));
  }

  async function pollPerformance() {
    const query = after ? `?after=${encodeURIComponent(after)}` : "";
    const response = await call(`/api/performance${query}`);
    if (response.status === 503) { notice.hidden = false; notice.textContent = "System sampling is disabled (performance.disabled)."; return; }
    if (!response.ok) return;
    const data = await response.json();
    for (const s of data.sys_stats || []) {
      const t = Date.parse(s.timestamp);
      const cores = s.cpu_util_per_core || [];
      if (cores.length) series.cpu.push([t, cores.reduce((a, b) => a + b, 0) / cores.length]);
      if (s.mem_total_mb) series.mem.push([t, (100 * s.mem_used_mb) / s.mem_total_mb]);
      series.load.push([t, s.load_avg_1]);
      after = s.timestamp;
    }
    for (const g of data.gpu_stats || []) {
      const t = Date.parse(g.timestamp);
      if (!gpus.has(g.id)) gpus.set(g.id, { name: g.name || "", util: [], mem: [], temp: [] });
      const gpu = gpus.get(g.id);
      if (g.gpu_util_pct !== null) gpu.util.push([t, g.gpu_util_pct]);
      if (g.mem_total_mb) gpu.mem.push([t, (100 * g.mem_used_mb) / g.mem_total_mb]);
      if (g.temp_c !== null) gpu.temp.push([t, g.temp_c]);
    }
  }

  async function pollMetrics() {
    const response = await call("/metrics");
    if (!response.ok) return;
    const text = await response.text();
    const sums = parseMetrics(text);
    renderStarts(swapsByModel(text));
    const now = Date.now();
    const counters = {
      t: now, requests: sums.llamaswap_requests_total || 0,
      tokens: sums.llamaswap_completion_tokens_total || 0,
      swaps: sums["llamaswap_swaps_total:ok"] || 0,
    };
    if (lastCounters) {
      const seconds = (now - lastCounters.t) / 1000;
      if (seconds > 0) {
        series.rps.push([now, Math.max(0, counters.requests - lastCounters.requests) / seconds]);
        series.tps.push([now, Math.max(0, counters.tokens - lastCounters.tokens) / seconds]);
        series.swaps.push([now, (60 * Math.max(0, counters.swaps - lastCounters.swaps)) / seconds]);
      }
    }
    lastCounters = counters;
    lastTotals = { ...lastTotals, requests: counters.requests, swaps: counters.swaps,
      failedSwaps: sums["llamaswap_swaps_total:failed"] || 0, queue: sums.llamaswap_queue_depth || 0,
      output: counters.tokens, input: sums.llamaswap_prompt_tokens_total || 0 };
  }

  async function pollStats() {
    try {
      const s = await json("/api/metrics/stats");
      lastTotals = { ...lastTotals, p50: s.gen_histogram?.p50 };
    } catch { /* the figures above still show */ }
  }

  async function poll() {
    if (stopped) return;
    try {
      await Promise.all([pollPerformance(), pollMetrics(), pollStats()]);
    } catch { /* disconnected: the header says so; try again on the next tick */ }
    for (const points of [...Object.values(series), ...[...gpus.values()].flatMap((g) => [g.util, g.mem, g.temp])]) trim(points);
    if (stopped) return;
    render();
    renderStats();
  }

  renderQueue();
  renderStats();
  render();
  poll();
  const timer = setInterval(poll, POLL_MS);
  const onResize = () => render();
  window.addEventListener("resize", onResize);
  const undo = ["queue", "modelStatus", "inflight"].map((type) => subscribe(type, renderQueue));
  return () => { stopped = true; clearInterval(timer); undo.forEach((u) => u()); window.removeEventListener("resize", onResize); };
}
