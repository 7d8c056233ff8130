// Models: every model and peer model with its live state; load, unload, in-flight and queue.
import { call, errorMessage } from "./api.js";
import { fmtMs, h, replace } from "./dom.js";
import { elapsedMs, state, subscribe } from "./events.js";

/** Path of a model for use in a URL (ids may hold "/"). */
function modelPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

/** Render the Models page into ``root``; returns its cleanup. */
export function mount(root) {
  const notice = h("p", { class: "notice", hidden: true });
  const showUnlisted = h("input", { type: "checkbox", onchange: render });
  const unloadAll = h("button", { class: "danger", type: "button", onclick: onUnloadAll }, "Unload all");
  const list = h("div", { class: "models", id: "model-list" });
  const peers = h("div");
  const groups = h("div");
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Models"),
      h("label", {}, showUnlisted, "Show unlisted"), unloadAll),
    notice, list, peers, groups);

  const busy = new Map(); // id -> "loading" | "unloading"

  function say(text, error = false) {
    notice.hidden = !text;
    notice.className = error ? "notice error" : "notice";
    notice.textContent = text || "";
  }

  async function load(id) {
    busy.set(id, "loading"); render();
    try {
      const response = await call(`/upstream/${modelPath(id)}/`);
      if (response.status >= 500 || response.status === 404 || response.status === 409) {
        say(`Loading ${id} failed: ${await errorMessage(response)}`, true);
      } else {
        await response.body?.cancel();
      }
    } catch (e) {
      say(`Loading ${id} failed: ${e.message || e}`, true);
    } finally {
      busy.delete(id); render();
    }
  }

  async function unload(id) {
    busy.set(id, "unloading"); render();
    try {
      const response = await call(`/api/models/unload/${modelPath(id)}`, { method: "POST" });
      if (!response.ok) say(`Unloading ${id} failed: ${await errorMessage(response)}`, true);
    } catch (e) {
      say(`Unloading ${id} failed: ${e.message || e}`, true);
    } finally {
      busy.delete(id); render();
    }
  }

  async function onUnloadAll() {
    unloadAll.disabled = true;
    try {
      const response = await call("/api/models/unload", { method: "POST" });
      if (!response.ok) say(`Unload all failed: ${await errorMessage(response)}`, true);
      else say("Every model is stopped.");
    } catch (e) {
      say(`Unload all failed: ${e.message || e}`, true);
    } finally {
      unloadAll.disabled = false;
    }
  }

  function load_info(id) {
    const entries = [...state.inflight.values()].filter((r) => r.model === id);
    const answering = entries.filter((r) => Object.keys(r.resp_headers || {}).length > 0);
    const waiting = entries.filter((r) => Object.keys(r.resp_headers || {}).length === 0);
    const queued = (state.queue?.queue || []).filter((q) => q.model === id);
    const parts = [`${answering.length} in flight`, `${waiting.length} waiting`];
    const since = state.startingSince.get(id);
    if (since !== undefined) parts.unshift(`starting for ${fmtMs(performance.now() - since)}`);
    if (waiting.length) parts.push(`oldest ${fmtMs(Math.max(...waiting.map(elapsedMs)))}`);
    if (queued.length) parts.push(`queue #${queued.map((q) => q.position).join(", #")}`);
    return parts.join(" · ");
  }

  function card(model) {
    const stateName = model.state || "stopped";
    const doing = busy.get(model.id);
    const running = ["starting", "ready"].includes(stateName);
    const badge = h("span", { class: `badge state-${doing === "loading" && stateName === "stopped" ? "starting" : stateName}`,
      "data-role": "state" }, doing === "loading" && stateName === "stopped" ? "requested" : stateName);
    return h("article", { class: "panel model", "data-model": model.id },
      h("div", { class: "title" }, h("span", { class: "id" }, model.id), badge,
        model.unlisted ? h("span", { class: "badge state-peer" }, "unlisted") : null),
      model.name ? h("div", {}, model.name) : null,
      model.description ? h("div", { class: "desc" }, model.description) : null,
      model.aliases?.length ? h("div", {}, h("span", { class: "muted small" }, "aliases "),
        model.aliases.map((a) => h("span", { class: "chip" }, a))) : null,
      model.context_length ? h("div", { class: "muted small" }, `context ${model.context_length.toLocaleString()}`) : null,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary", disabled: Boolean(doing) || running || stateName === "stopping",
          onclick: () => load(model.id) }, doing === "loading" ? "Loading…" : "Load"),
        h("button", { type: "button", disabled: Boolean(doing) || stateName === "stopped",
          onclick: () => unload(model.id) }, doing === "unloading" ? "Unloading…" : "Unload"),
        h("span", { class: "load-info grow", "data-role": "load" }, load_info(model.id)),
        h("a", { href: `/ui/logs?source=${encodeURIComponent(model.id)}`, "data-nav": true, class: "small" }, "logs")));
  }

  function renderGroups() {
    const routing = state.uiConfig?.routing;
    if (!routing) { replace(groups); return; }
    const items = [];
    for (const group of routing.groups || []) {
      const rules = [group.swap ? "one at a time" : "members run together",
        group.exclusive ? "stops other groups" : "runs beside other groups"];
      if (group.persistent) rules.push("never stopped by others");
      items.push(h("div", { class: "panel", "data-group": group.id },
        h("h3", {}, `group ${group.id}`), h("div", { class: "muted small" }, rules.join(" · ")),
        h("div", {}, group.members.map((m) => h("span", { class: "chip" }, m)))));
    }
    for (const [name, expression] of routing.matrix?.sets || []) {
      items.push(h("div", { class: "panel", "data-set": name },
        h("h3", {}, `set ${name}`), h("div", { class: "mono" }, expression)));
    }
    const title = `What may run together (router: ${routing.router}, scheduler: ${routing.scheduler})`;
    replace(groups, items.length ? [h("h2", {}, title), h("div", { class: "groups" }, items)] : []);
  }

  function render() {
    const local = state.models.filter((m) => !m.peerID && (showUnlisted.checked || !m.unlisted));
    const hidden = state.models.filter((m) => !m.peerID && m.unlisted).length;
    replace(list, local.length ? local.map(card)
      : h("p", { class: "muted" }, state.connected ? "No models are configured." : "Waiting for llamaswap…"));
    showUnlisted.parentElement.hidden = hidden === 0;
    const remote = state.models.filter((m) => m.peerID);
    replace(peers, remote.length ? [h("h2", {}, "Peer models"), h("div", { class: "table-wrap" },
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "model"), h("th", {}, "peer"))),
        h("tbody", {}, remote.map((m) => h("tr", { "data-peer-model": m.id },
          h("td", { class: "mono" }, m.id), h("td", {}, m.peerID))))))] : []);
    renderGroups();
  }

  function refreshLoad() {
    for (const el of list.querySelectorAll("[data-model]")) {
      const info = el.querySelector("[data-role=load]");
      if (info) info.textContent = load_info(el.dataset.model);
    }
  }

  render();
  const undo = [
    subscribe("modelStatus", render), subscribe("uiConfig", render), subscribe("connection", render),
    subscribe("inflight", refreshLoad), subscribe("queue", refreshLoad),
  ];
  const ticker = setInterval(refreshLoad, 1000);
  return () => { undo.forEach((u) => u()); clearInterval(ticker); };
}
