// Small DOM helpers: every piece of text goes in as a text node, never as HTML.

/** Build an element: h("td", {class: "num", onclick: fn}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected") el[key] = Boolean(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children (strings become text nodes; arrays are flattened; null skipped). */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** "1.2 s", "340 ms", "2 m 05 s" for a millisecond count. */
export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `${m} m ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
}

/** A number with at most ``digits`` decimals, or "–". */
export function fmtNum(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value) || value < 0) return "–";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** Bytes as "12.3 MB". */
export function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = bytes, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** Local time of an ISO timestamp ("14:03:22"), with the date when not today. */
export function fmtTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? "");
  const time = d.toLocaleTimeString(undefined, { hour12: false });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

/** The CSS class for an HTTP status. */
export function statusClass(code) {
  if (!code) return "status-warn";
  return code < 400 ? "status-ok" : "status-bad";
}

/** A modal dialog; returns {root, body, close}. Escape and the backdrop close it. */
export function dialog(title, onClose) {
  const body = h("div");
  const closeButton = h("button", { type: "button", "aria-label": "Close" }, "Close");
  const box = h("div", { class: "dialog", role: "dialog", "aria-modal": "true", "aria-label": title },
    h("div", { class: "dialog-head" }, h("h2", {}, title), closeButton), body);
  const root = h("div", { class: "dialog-back" }, box);
  const onKey = (e) => { if (e.key === "Escape") close(); };
  function close() {
    root.remove();
    document.removeEventListener("keydown", onKey);
    if (onClose) onClose();
  }
  closeButton.addEventListener("click", close);
  root.addEventListener("click", (e) => { if (e.target === root) close(); });
  document.addEventListener("keydown", onKey);
  document.body.append(root);
  closeButton.focus();
  return { root, body, close };
}
