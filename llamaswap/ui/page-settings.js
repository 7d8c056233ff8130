// Settings: switch the active profile, see the version, reach /metrics, forget the API key.
import { getKey, json } from "./api.js";
import { h, replace } from "./dom.js";
import { state, subscribe } from "./events.js";

/** Render the Settings page into ``root``; returns its cleanup. */
export function mount(root) {
  const notice = h("p", { class: "notice error", hidden: true });
  const profiles = h("div", { class: "profiles", id: "profiles" });
  const version = h("div", { class: "kv", id: "version" });
  const keyPanel = h("div");
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Settings")),
    notice,
    h("section", { class: "panel" }, h("h2", {}, "Profile"),
      h("p", { class: "muted small" },
        "A profile pins request names to models (PUT /api/profiles/active). None is active after a start or a reload."),
      profiles),
    h("section", { class: "panel" }, h("h2", {}, "About"), version,
      h("p", {}, h("a", { href: "/metrics", target: "_blank", rel: "noopener" }, "Prometheus metrics (/metrics)"),
        h("span", { class: "muted small" }, " · with apiKeys the browser asks for the key (any user name, the key as password)"))),
    keyPanel);

  let list = [];

  async function choose(name) {
    notice.hidden = true;
    try {
      const result = await json("/api/profiles/active", { method: "PUT", json: { name } });
      state.profile = result.active;
      renderProfiles();
    } catch (e) {
      notice.hidden = false;
      notice.textContent = `Switching profile failed: ${e.message || e}`;
    }
  }

  function renderProfiles() {
    if (!list.length) { replace(profiles, h("p", { class: "muted" }, "No profiles are configured.")); return; }
    const active = state.profile;
    const option = (name, title, description, pins) => h("div", {
      class: `profile${active === name ? " active" : ""}`, "data-profile": name ?? "" },
      h("input", { type: "radio", name: "profile", id: `profile-${name ?? ""}`, checked: active === name,
        onchange: () => choose(name) }),
      h("label", { for: `profile-${name ?? ""}`, class: "stack grow" },
        h("strong", {}, title), description ? h("span", {}, description) : null,
        pins ? h("div", {}, Object.entries(pins).map(([pin, target]) =>
          h("span", { class: "chip" }, `${pin} → ${target || "(disabled)"}`))) : null));
    replace(profiles, option(null, "No profile", "requests go to the names they ask for", null),
      list.map((p) => option(p.id, p.id, p.description, p.pins)));
  }

  async function load() {
    try {
      const data = await json("/api/profiles");
      list = data.profiles || [];
      state.profile = data.active ?? null;
      renderProfiles();
    } catch (e) {
      notice.hidden = false;
      notice.textContent = `Profiles are not available: ${e.message || e}`;
    }
    try {
      const v = await json("/api/version");
      replace(version, Object.entries(v).map(([k, value]) => [h("span", {}, k), h("span", { "data-version": k }, String(value))]));
    } catch { /* shown as empty */ }
  }

  function renderKey() {
    replace(keyPanel, getKey() ? h("section", { class: "panel" }, h("h2", {}, "API key"),
      h("p", { class: "muted small" }, "This browser keeps an API key for llamaswap (localStorage)."),
      h("button", { type: "button", class: "danger", onclick: async () => (await import("./app.js")).forgetKey() },
        "Forget key")) : null);
  }

  load();
  renderKey();
  const undo = subscribe("profileChanged", renderProfiles);
  return () => undo();
}
