// The live state from /api/events: models, in-flight requests, the queue, the profile.
import { liveStream, sseParser } from "./api.js";

/** What /api/events has told us so far; pages read it and subscribe to changes. */
export const state = {
  connected: false,
  models: [],          // modelStatus entries
  inflight: new Map(), // id -> in-flight entry
  inflightAt: new Map(), // id -> performance.now() when its elapsed_ms was read
  queue: null,         // the scheduler's snapshot
  startingSince: new Map(), // id -> performance.now() when this page saw it start
  profile: null,       // active profile name
  uiConfig: {},
  proxyLog: "",
  upstreamLog: "",
};

const subscribers = new Map(); // type -> Set(fn)

/** Call ``fn(payload)`` for each event of ``type`` ("*" for every change). */
export function subscribe(type, fn) {
  if (!subscribers.has(type)) subscribers.set(type, new Set());
  subscribers.get(type).add(fn);
  return () => subscribers.get(type).delete(fn);
}

function emit(type, payload) {
  for (const fn of subscribers.get(type) || []) fn(payload);
  for (const fn of subscribers.get("*") || []) fn(type, payload);
}

const LOG_KEEP = 200000;

function apply(type, data) {
  if (type === "modelStatus") {
    state.models = data;
    const now = performance.now();
    for (const m of data) {
      if (m.state === "starting" && !state.startingSince.has(m.id)) state.startingSince.set(m.id, now);
      if (m.state !== "starting") state.startingSince.delete(m.id);
    }
  }
  else if (type === "queue") state.queue = data.scheduler ? data : { ...(state.queue || {}), ...data };
  else if (type === "profileChanged") state.profile = data.active ?? null;
  else if (type === "uiConfig") state.uiConfig = data;
  else if (type === "logData") {
    const key = data.source === "upstream" ? "upstreamLog" : "proxyLog";
    state[key] = (state[key] + data.data).slice(-LOG_KEEP);
  } else if (type === "inflight") {
    const now = performance.now();
    if (data.operation === "snapshot") {
      state.inflight = new Map((data.requests || []).map((r) => [r.id, r]));
      state.inflightAt = new Map((data.requests || []).map((r) => [r.id, now]));
    } else if (data.operation === "upsert") {
      state.inflight.set(data.request.id, data.request);
      state.inflightAt.set(data.request.id, now);
    } else if (data.operation === "remove") {
      state.inflight.delete(data.id);
      state.inflightAt.delete(data.id);
    }
  }
  emit(type, data);
}

/** How long an in-flight request has run now, in milliseconds. */
export function elapsedMs(entry) {
  const at = state.inflightAt.get(entry.id);
  return entry.elapsed_ms + (at === undefined ? 0 : performance.now() - at);
}

let stream = null;

/** Open /api/events (again); it reconnects by itself after llamaswap restarts. */
export function connect() {
  if (stream) stream.close();
  let feed = null;
  stream = liveStream("/api/events", {
    onOpen() {
      state.proxyLog = ""; state.upstreamLog = "";
      feed = sseParser(({ data }) => {
        let message;
        try { message = JSON.parse(data); } catch { return; }
        let payload = message.data;
        if (typeof payload === "string") {
          try { payload = JSON.parse(payload); } catch { /* keep the string */ }
        }
        apply(message.type, payload);
      });
    },
    onText(text) { if (feed) feed(text); },
    onState(value) {
      state.connected = value === "open";
      emit("connection", value);
    },
  });
}

/** Close the event stream. */
export function disconnect() {
  if (stream) stream.close();
  stream = null;
  state.connected = false;
}
