// The app shell: asks for the key when one is needed, routes /ui/<page>, shows the connection.
import { AuthError, getKey, json, onAuthFailure, setKey } from "./api.js";
import { h, replace } from "./dom.js";
import { connect, disconnect, subscribe } from "./events.js";

const PAGES = {
  models: ["Models", () => import("./page-models.js")],
  logs: ["Logs", () => import("./page-logs.js")],
  activity: ["Activity", () => import("./page-activity.js")],
  playground: ["Playground", () => import("./page-playground.js")],
  performance: ["Performance", () => import("./page-performance.js")],
  settings: ["Settings", () => import("./page-settings.js")],
};

const main = document.getElementById("main");
document.getElementById("nav").append(...Object.entries(PAGES).map(([name, [title]]) =>
  h("a", { href: `/ui/${name}`, "data-nav": true, "data-page": name }, title)));
const conn = document.getElementById("conn");
let cleanup = null;
let askingForKey = false;

function pageFromPath() {
  const name = location.pathname.replace(/^\/ui\/?/, "").split("/")[0];
  return PAGES[name] ? name : "models";
}

async function show() {
  if (askingForKey) return;
  const name = pageFromPath();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${PAGES[name][0]} · llamaswap`;
  if (cleanup) { cleanup(); cleanup = null; }
  const module = await PAGES[name][1]();
  if (pageFromPath() !== name || askingForKey) return;
  const root = h("div", { class: `page page-${name}` });
  replace(main, root);
  cleanup = module.mount(root) || null;
}

function navigate(href) {
  if (href !== location.pathname + location.search) history.pushState(null, "", href);
  show();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", show);

function setConnection(value) {
  conn.classList.toggle("ok", value === "open");
  conn.classList.toggle("bad", value !== "open");
  conn.textContent = value === "open" ? "live" : value === "auth" ? "key needed" : "disconnected, reconnecting…";
}
subscribe("connection", setConnection);

function askForKey(message) {
  if (askingForKey) return;
  askingForKey = true;
  disconnect();
  if (cleanup) { cleanup(); cleanup = null; }
  setConnection("auth");
  const input = h("input", { type: "password", name: "key", autocomplete: "current-password",
    placeholder: "sk-…", required: true, "aria-label": "API key" });
  const error = h("p", { class: "notice error", hidden: !message }, message || "");
  const form = h("form", { class: "panel", onsubmit: submit },
    h("h1", {}, "API key"),
    h("p", { class: "muted" },
      "This llamaswap needs one of its apiKeys. The key is kept in this browser (localStorage) and sent " +
      "in the Authorization header of every request; it never goes into a URL."),
    input, error, h("button", { class: "primary", type: "submit" }, "Continue"));
  replace(main, h("div", { class: "keybox" }, form));
  input.focus();

  async function submit(event) {
    event.preventDefault();
    const previous = getKey();
    setKey(input.value.trim());
    try {
      await json("/api/version");
    } catch (e) {
      setKey(previous);
      error.hidden = false;
      error.textContent = e instanceof AuthError ? "That key was refused." : String(e.message || e);
      return;
    }
    askingForKey = false;
    start();
  }
}

onAuthFailure(() => askForKey(getKey() ? "The stored key was refused; enter a valid one." : ""));

/** Forget the key and ask again (the Settings page uses it). */
export function forgetKey() {
  setKey("");
  askForKey("");
}

async function start() {
  try {
    await json("/api/version");
  } catch (e) {
    if (e instanceof AuthError) return; // askForKey has taken over
    replace(main, h("p", { class: "notice error" }, `llamaswap did not answer: ${e.message || e}`));
    setTimeout(start, 2000);
    return;
  }
  connect();
  show();
}

start();
