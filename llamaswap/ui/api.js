// Talking to llamaswap: the API key, JSON calls and streamed responses read with fetch.

const KEY_NAME = "llamaswap.apiKey";

/** Raised when llamaswap answers 401: the key is missing or wrong. */
export class AuthError extends Error {}

/** The stored API key ("" when none). */
export function getKey() {
  try { return localStorage.getItem(KEY_NAME) || ""; } catch { return ""; }
}

/** Keep ``key`` in this browser (an empty key forgets it). */
export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_NAME, key); else localStorage.removeItem(KEY_NAME);
  } catch { /* storage unavailable: the key lives for this page only */ }
}

const listeners = new Set();
/** Call ``fn`` whenever a request is refused for want of a valid key. */
export function onAuthFailure(fn) { listeners.add(fn); return () => listeners.delete(fn); }

/** fetch() with the key in a header; credentials are omitted so no browser login box appears. */
export async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = getKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let body = options.body;
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(options.json);
  }
  const response = await fetch(path, {
    method: options.method || "GET", headers, body, signal: options.signal,
    credentials: "omit", cache: "no-store",
  });
  if (response.status === 401) {
    for (const fn of listeners) fn();
    throw new AuthError("a valid API key is needed");
  }
  return response;
}

/** The message of an error answer: the OpenAI envelope's, else the text. */
export async function errorMessage(response) {
  const text = await response.text().catch(() => "");
  try {
    const parsed = JSON.parse(text);
    const message = parsed?.error?.message ?? parsed?.error ?? parsed?.message;
    if (message) return `${response.status}: ${typeof message === "string" ? message : JSON.stringify(message)}`;
  } catch { /* not JSON */ }
  return `${response.status}: ${text.trim() || response.statusText}`;
}

/** A JSON call: the parsed body, or an Error carrying llamaswap's message. */
export async function json(path, options = {}) {
  const response = await call(path, options);
  if (!response.ok) throw new Error(await errorMessage(response));
  const text = await response.text();
  return text.trim() ? JSON.parse(text) : null;
}

/** Read a streamed body, calling ``onText`` with each decoded piece. */
export async function readText(response, onText) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    onText(decoder.decode(value, { stream: true }));
  }
  const rest = decoder.decode();
  if (rest) onText(rest);
}

/** A parser of server-sent events: feed it text, it calls ``onEvent({event, data})``. */
export function sseParser(onEvent) {
  let buffer = "";
  let event = "", data = [];
  return (text) => {
    buffer += text;
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      let line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length) onEvent({ event: event || "message", data: data.join("\n") });
        event = ""; data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
    }
  };
}

/**
 * A long-lived stream that reconnects: ``onText`` gets its text, ``onState`` gets
 * "open" / "closed" / "auth". Returns {close()}.
 */
export function liveStream(path, { onText, onState, onOpen }) {
  let stopped = false;
  let controller = null;
  let delay = 500;
  let timer = null;
  async function run() {
    if (stopped) return;
    controller = new AbortController();
    try {
      const response = await call(path, { signal: controller.signal });
      if (!response.ok) throw new Error(await errorMessage(response));
      delay = 500;
      if (onOpen) onOpen();
      onState?.("open");
      await readText(response, onText);
      onState?.("closed");
    } catch (error) {
      if (stopped) return;
      if (error instanceof AuthError) { onState?.("auth"); return; }
      onState?.("closed", error);
    }
    if (stopped) return;
    timer = setTimeout(run, delay);
    delay = Math.min(delay * 2, 5000);
  }
  run();
  return {
    close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (controller) controller.abort();
    },
  };
}
