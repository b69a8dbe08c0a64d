// Small DOM and formatting helpers. Text always goes in as text nodes: nothing from the
// service is ever parsed as HTML.

/** h("tag.class#id", {attr: value, onclick: fn}, ...children) → element */
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || "div");
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === ".") el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export const spinner = () => h("span.spinner", { "aria-hidden": "true" });

// ---------------------------------------------------------------- formatting

export const DASH = "-";
const isNum = (v) => typeof v === "number" && Number.isFinite(v) && v >= 0;

export function fmtInt(v) {
  return isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH;
}

export function fmtRate(v) {
  if (!isNum(v)) return DASH;
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

export function fmtMs(v) {
  if (!isNum(v)) return DASH;
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
  const m = Math.floor(v / 60000);
  return `${m}m ${Math.floor((v % 60000) / 1000)}s`;
}

export function fmtBytes(v) {
  if (!isNum(v)) return DASH;
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KB`;
  return `${(v / 1024 / 1024).toFixed(1)} MB`;
}

const pad = (n) => String(n).padStart(2, "0");

export function fmtTime(ts) {
  if (!ts) return DASH;
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.toLocaleDateString("en-US", { month: "short", day: "numeric" })} ${time}`;
}

// ---------------------------------------------------------------- preferences

/** Settings kept in localStorage; when storage is unavailable the defaults apply. */
export const prefs = {
  get(key, fallback = null) {
    try {
      const value = localStorage.getItem(`llama-swap.${key}`);
      return value === null ? fallback : value;
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`llama-swap.${key}`, value);
    } catch {
      /* storage disabled */
    }
  },
};

// ---------------------------------------------------------------- toasts

export function toast(message, kind = "info", ms = 5000) {
  const box = document.getElementById("toasts");
  const el = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status", title: "Click to dismiss", onclick: () => el.remove() }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? Math.max(ms, 8000) : ms);
}

/** Is a scrollable element scrolled to (within a few pixels of) its bottom? */
export function atBottom(el, slack = 8) {
  return el.scrollHeight - el.scrollTop - el.clientHeight <= slack;
}
