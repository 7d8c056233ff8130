// Playground: chat with any model (streamed), embeddings, speech and transcription.
import { call, errorMessage, json, readText, sseParser } from "./api.js";
import { fmtMs, fmtNum, h, replace } from "./dom.js";
import { subscribe } from "./events.js";
import { render as markdown } from "./markdown.js";

const conversation = []; // kept while the app is open: [{role, content}]

/** Render the Playground into ``root``; returns its cleanup. */
export function mount(root) {
  const params = new URLSearchParams(location.search);
  const model = h("select", { "aria-label": "Model", onchange: () => { setQuery(); showTabs(); } });
  const system = h("textarea", { rows: 3, "aria-label": "System prompt", placeholder: "You are a helpful assistant." });
  const temperature = h("input", { type: "number", min: 0, max: 2, step: 0.1, value: "0.7", "aria-label": "Temperature" });
  const maxTokens = h("input", { type: "number", min: 1, step: 1, placeholder: "model default", "aria-label": "Max tokens" });
  const extra = h("textarea", { rows: 3, class: "mono", "aria-label": "Extra parameters",
    placeholder: '{"top_p": 0.9}' });
  const notice = h("p", { class: "notice error", hidden: true });
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const panel = h("div", { class: "grow" });
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Playground")),
    notice,
    h("div", { class: "play" },
      h("div", { class: "settings panel" },
        h("label", { class: "stack" }, h("span", {}, "Model"), model),
        h("label", { class: "stack" }, h("span", {}, "System prompt"), system),
        h("div", { class: "row" },
          h("label", { class: "stack grow" }, h("span", {}, "Temperature"), temperature),
          h("label", { class: "stack grow" }, h("span", {}, "Max tokens"), maxTokens)),
        h("details", {}, h("summary", { class: "small muted" }, "Extra parameters (JSON)"),
          h("label", { class: "stack" }, h("span", {}, "merged into the request body"), extra))),
      h("div", {}, tabs, panel)));

  let models = [];
  let tab = params.get("tab") || "chat";
  let active = null; // the AbortController of a running request

  function say(text) { notice.hidden = !text; notice.textContent = text || ""; }

  function current() { return models.find((m) => m.id === model.value) || {}; }

  function setQuery() {
    const query = new URLSearchParams({ model: model.value, tab });
    history.replaceState(null, "", `/ui/playground?${query}`);
  }

  async function loadModels() {
    try {
      const list = await json("/v1/models");
      models = list.data || [];
    } catch (e) { say(`Models are not available: ${e.message || e}`); return; }
    const wanted = model.value || params.get("model");
    replace(model, models.map((m) => h("option", { value: m.id }, m.name && m.name !== m.id ? `${m.id} (${m.name})` : m.id)));
    if (models.some((m) => m.id === wanted)) model.value = wanted;
    showTabs();
  }

  function extraParams() {
    const text = extra.value.trim();
    if (!text) return {};
    const parsed = JSON.parse(text);
    if (typeof parsed !== "object" || Array.isArray(parsed) || parsed === null) throw new Error("extra parameters must be a JSON object");
    return parsed;
  }

  function showTabs() {
    const caps = current().capabilities || {};
    const available = [["chat", "Chat"], ["embeddings", "Embeddings"]];
    if (caps.audio_speech) available.push(["speech", "Speech"]);
    if (caps.audio_transcriptions) available.push(["transcription", "Transcription"]);
    if (!available.some(([id]) => id === tab)) tab = "chat";
    replace(tabs, available.map(([id, label]) => h("button", { type: "button", role: "tab",
      "aria-selected": String(id === tab), onclick: () => { tab = id; setQuery(); showTabs(); } }, label)));
    const builders = { chat: chatPanel, embeddings: embeddingsPanel, speech: speechPanel, transcription: transcriptionPanel };
    if (panel.dataset.tab !== tab) { panel.dataset.tab = tab; replace(panel, builders[tab]()); }
  }

  // Chat

  function chatPanel() {
    const msgs = h("div", { class: "msgs", id: "messages" });
    const input = h("textarea", { rows: 3, "aria-label": "Message", placeholder: "Say something (Ctrl+Enter sends)" });
    const send = h("button", { type: "submit", class: "primary" }, "Send");
    const stop = h("button", { type: "button", disabled: true, onclick: () => active?.abort() }, "Stop");
    const clear = h("button", { type: "button", onclick: () => { conversation.length = 0; replace(msgs); } }, "Clear");
    input.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
    const form = h("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); sendChat(); } },
      input, h("div", { class: "row" }, send, stop, clear));
    for (const m of conversation) msgs.append(m.role === "user" ? userBubble(m.content) : answerBubble(m.content).node);

    function userBubble(text) {
      return h("div", { class: "msg user" }, h("div", { class: "who" }, "you"), text);
    }

    function answerBubble(text = "") {
      const reasoning = h("div", { class: "reasoning", hidden: true, "data-role": "reasoning" });
      const body = h("div", { "data-role": "answer" });
      const stats = h("div", { class: "stats", "data-role": "stats" });
      const node = h("div", { class: "msg assistant" }, h("div", { class: "who" }, model.value || "assistant"), reasoning, body, stats);
      if (text) body.append(markdown(text));
      return { node, reasoning, body, stats };
    }

    async function sendChat() {
      const text = input.value.trim();
      if (!text || active) return;
      let body;
      try {
        const messages = [];
        if (system.value.trim()) messages.push({ role: "system", content: system.value.trim() });
        messages.push(...conversation, { role: "user", content: text });
        body = { model: model.value, messages, stream: true, stream_options: { include_usage: true },
          temperature: Number(temperature.value), ...extraParams() };
        if (maxTokens.value) body.max_tokens = Number(maxTokens.value);
      } catch (e) { say(`Extra parameters: ${e.message || e}`); return; }
      say("");
      conversation.push({ role: "user", content: text });
      msgs.append(userBubble(text));
      input.value = "";
      const bubble = answerBubble();
      msgs.append(bubble.node);
      let answer = "", thinking = "", usage = null, timings = null, frame = 0;
      const started = performance.now();
      let firstToken = 0;
      const paint = () => {
        frame = 0;
        replace(bubble.body, markdown(answer));
        bubble.reasoning.hidden = !thinking;
        bubble.reasoning.textContent = thinking;
        bubble.node.scrollIntoView({ block: "end" });
      };
      active = new AbortController();
      send.disabled = true; stop.disabled = false;
      bubble.node.dataset.state = "streaming";
      let outcome = "done";
      try {
        const response = await call("/v1/chat/completions", { method: "POST", json: body, signal: active.signal });
        if (!response.ok) throw new Error(await errorMessage(response));
        const feed = sseParser(({ data }) => {
          if (data === "[DONE]") return;
          let chunk;
          try { chunk = JSON.parse(data); } catch { return; }
          if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
          const delta = chunk.choices?.[0]?.delta || {};
          if (delta.reasoning_content) thinking += delta.reasoning_content;
          if (delta.content) { if (!firstToken) firstToken = performance.now(); answer += delta.content; }
          if (chunk.usage) usage = chunk.usage;
          if (chunk.timings) timings = chunk.timings;
          if (!frame) frame = requestAnimationFrame(paint);
        });
        await readText(response, feed);
      } catch (e) {
        outcome = e.name === "AbortError" ? "stopped" : "error";
        if (outcome === "error") say(`Chat failed: ${e.message || e}`);
      } finally {
        if (frame) cancelAnimationFrame(frame);
        paint();
        active = null;
        send.disabled = false; stop.disabled = true;
        bubble.node.dataset.state = outcome;
        const seconds = (performance.now() - started) / 1000;
        const generated = usage?.completion_tokens ?? timings?.predicted_n;
        const speed = timings?.predicted_per_second ?? (generated && firstToken ? generated / ((performance.now() - firstToken) / 1000) : null);
        const parts = [outcome === "stopped" ? "stopped" : outcome === "error" ? "failed" : "done", fmtMs(seconds * 1000)];
        if (firstToken) parts.push(`first token after ${fmtMs(firstToken - started)}`);
        if (generated) parts.push(`${generated} tokens`);
        if (speed) parts.push(`${fmtNum(speed)} tokens/s`);
        bubble.stats.textContent = parts.join(" · ");
        if (answer) conversation.push({ role: "assistant", content: answer });
      }
    }

    return h("div", { class: "chat" }, msgs, form);
  }

  // Embeddings

  function embeddingsPanel() {
    const input = h("textarea", { rows: 4, "aria-label": "Text to embed", placeholder: "One text per line" });
    const out = h("div", { "data-role": "embeddings-result" });
    const go = h("button", { type: "submit", class: "primary" }, "Embed");
    async function run(e) {
      e.preventDefault();
      const texts = input.value.split("\n").map((t) => t.trim()).filter(Boolean);
      if (!texts.length) return;
      go.disabled = true; say("");
      try {
        const result = await json("/v1/embeddings", { method: "POST", json: { model: model.value, input: texts, ...extraParams() } });
        const vectors = result.data || [];
        replace(out, h("p", {}, `${vectors.length} vector(s) of ${vectors[0]?.embedding?.length ?? 0} dimensions`),
          vectors.map((v, n) => h("pre", { class: "block" },
            `${texts[n] ?? n}\n[${(v.embedding || []).slice(0, 8).map((x) => Number(x).toFixed(4)).join(", ")}${(v.embedding || []).length > 8 ? ", …" : ""}]`)));
      } catch (err) { say(`Embeddings failed: ${err.message || err}`); } finally { go.disabled = false; }
    }
    return h("form", { class: "chat", onsubmit: run }, input, h("div", { class: "row" }, go), out);
  }

  // Speech (text to audio)

  function speechPanel() {
    const input = h("textarea", { rows: 3, "aria-label": "Text to speak" });
    const voice = h("input", { type: "text", value: "alloy", "aria-label": "Voice" });
    const out = h("div", { "data-role": "speech-result" });
    const go = h("button", { type: "submit", class: "primary" }, "Speak");
    let url = null;
    async function run(e) {
      e.preventDefault();
      if (!input.value.trim()) return;
      go.disabled = true; say("");
      try {
        const response = await call("/v1/audio/speech", { method: "POST",
          json: { model: model.value, input: input.value, voice: voice.value, ...extraParams() } });
        if (!response.ok) throw new Error(await errorMessage(response));
        const blob = await response.blob();
        if (url) URL.revokeObjectURL(url);
        url = URL.createObjectURL(blob);
        replace(out, h("audio", { controls: true, src: url }), h("p", { class: "muted small" }, `${blob.size} bytes of ${blob.type || "audio"}`));
      } catch (err) { say(`Speech failed: ${err.message || err}`); } finally { go.disabled = false; }
    }
    return h("form", { class: "chat", onsubmit: run }, input,
      h("div", { class: "row" }, h("label", {}, "Voice", voice), go), out);
  }

  // Transcription (audio to text)

  function transcriptionPanel() {
    const file = h("input", { type: "file", accept: "audio/*", "aria-label": "Audio file" });
    const out = h("pre", { class: "block", hidden: true, "data-role": "transcription-result" });
    const go = h("button", { type: "submit", class: "primary" }, "Transcribe");
    async function run(e) {
      e.preventDefault();
      if (!file.files.length) return;
      go.disabled = true; say("");
      const form = new FormData();
      form.append("model", model.value);
      form.append("file", file.files[0]);
      try {
        const result = await json("/v1/audio/transcriptions", { method: "POST", body: form });
        out.hidden = false;
        out.textContent = result.text ?? JSON.stringify(result, null, 2);
      } catch (err) { say(`Transcription failed: ${err.message || err}`); } finally { go.disabled = false; }
    }
    return h("form", { class: "chat", onsubmit: run }, h("div", { class: "row" }, file, go), out);
  }

  loadModels();
  const undo = subscribe("modelStatus", () => { if (!models.length) loadModels(); });
  return () => { undo(); if (active) active.abort(); };
}
