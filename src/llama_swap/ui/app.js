// Entry point: header (navigation, connection state, version, theme) and a hash router.
// Routes: #/models, #/logs[/proxy|/upstream|/model/<id>], #/activity, #/playground.

import * as activity from "./activity.js";
import { api, get } from "./api.js";
import * as logs from "./logs.js";
import * as models from "./models.js";
import * as playground from "./playground.js";
import { store } from "./store.js";
import { h, prefs, toast } from "./util.js";

const PAGES = { models, logs, activity, playground };
const DEFAULT = "models";
const TITLES = { models: "Models", logs: "Logs", activity: "Activity", playground: "Playground" };

const view = document.getElementById("view");
let unmount = null;
let current = null;

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const name = PAGES[parts[0]] ? parts[0] : null;
  return { name, rest: parts.slice(1).map((p) => { try { return decodeURIComponent(p); } catch { return p; } }) };
}

function render() {
  const { name, rest } = parseRoute();
  if (!name) {
    location.replace(`#/${DEFAULT}`);
    return;
  }
  const key = `${name}/${rest.join("/")}`;
  if (key === current) return;
  current = key;
  if (unmount) unmount();
  unmount = null;
  view.replaceChildren();
  const page = PAGES[name];
  view.className = page.fill ? "fill" : "";
  for (const a of document.querySelectorAll(".nav a")) {
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${TITLES[name]} · llama-swap`;
  unmount = page.mount(view, rest) || null;
}

// A deep link such as /ui/logs (no hash) opens that page.
(function pathToHash() {
  const m = /\/ui\/([^.]+?)\/?$/.exec(location.pathname);
  if (m && !location.hash && PAGES[m[1].split("/")[0]]) {
    history.replaceState(null, "", `${document.baseURI}#/${m[1]}`);
  }
})();

// ---------------------------------------------------------------- header

const CONN_LABELS = { connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…", disconnected: "Disconnected" };

function showConnection(state) {
  const el = document.getElementById("conn");
  const label = CONN_LABELS[state] || state;
  el.dataset.state = state;
  el.querySelector(".conn-label").textContent = label;
  el.title = `${label} (live updates from /api/events)`; // in words also where a narrow screen shows only the dot
}

function showInflightCount(map) {
  const badge = document.getElementById("inflight-count");
  badge.textContent = String(map.size);
  badge.hidden = map.size === 0;
}

// The profile picker: shown when the config has profiles; choosing one makes it active for
// every client (PUT /api/profiles/active); the `profileChanged` event keeps it in step.
async function showProfile(active) {
  const el = document.getElementById("profile");
  let list;
  try {
    list = await get("api/profiles");
  } catch {
    return;
  }
  const options = [h("option", { value: "" }, "no profile")];
  for (const p of list.profiles) options.push(h("option", { value: p.id, title: p.description || "" }, `profile: ${p.id}`));
  el.replaceChildren(...options);
  el.value = active ?? list.active ?? "";
  el.hidden = list.profiles.length === 0;
}

function setupProfile() {
  const el = document.getElementById("profile");
  el.addEventListener("change", async () => {
    try {
      await api("PUT", "api/profiles/active", { body: { name: el.value || null } });
    } catch (err) {
      toast(`cannot switch profile: ${err.message}`, "error");
    }
  });
}

function showVersion(v) {
  const el = document.getElementById("version");
  if (!v || !v.version) return;
  el.textContent = `v${String(v.version).replace(/^v/, "")}`;
  const known = (x) => x && x !== "unknown";
  const bits = [known(v.commit) && `commit ${v.commit}`, known(v.build_date) && `built ${v.build_date}`].filter(Boolean);
  el.title = bits.join(" · ") || "llama-swap version";
}

const THEMES = ["system", "light", "dark"];
const THEME_ICONS = {
  system: '<svg viewBox="0 0 16 16" fill="none" stroke="currentColor" stroke-width="1.5"><circle cx="8" cy="8" r="6"/><path d="M8 2a6 6 0 0 0 0 12z" fill="currentColor"/></svg>',
  light: '<svg viewBox="0 0 16 16" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round"><circle cx="8" cy="8" r="3"/><path d="M8 1v1.5M8 13.5V15M1 8h1.5M13.5 8H15M3 3l1 1M12 12l1 1M3 13l1-1M12 4l1-1"/></svg>',
  dark: '<svg viewBox="0 0 16 16" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linejoin="round"><path d="M13.5 9.5A5.5 5.5 0 0 1 6.5 2.5a5.5 5.5 0 1 0 7 7z"/></svg>',
};

const SYSTEM_DARK = matchMedia("(prefers-color-scheme: dark)");
const systemTheme = () => (SYSTEM_DARK.matches ? "dark" : "light");

// The page's `data-theme` is always "light" or "dark" (the CSS has one set of colours for
// each); "system" follows the system's setting, also when it changes.
function applyTheme(theme) {
  const btn = document.getElementById("theme-toggle");
  const shown = theme === "system" ? systemTheme() : theme;
  document.documentElement.dataset.theme = shown;
  btn.innerHTML = THEME_ICONS[theme]; // static markup from this file
  const now = theme === "system" ? `${shown}, as the system` : shown;
  btn.title = `Theme: ${now} (click for ${shown === "dark" ? "light" : "dark"})`;
}

// Every click shows the other palette, so no click is without effect. A choice that is the
// system's own setting is not kept as a choice: the page follows the system again.
function setupTheme() {
  let theme = prefs.get("theme") || "system";
  if (!THEMES.includes(theme)) theme = "system";
  applyTheme(theme);
  SYSTEM_DARK.addEventListener("change", () => applyTheme(theme));
  document.getElementById("theme-toggle").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    theme = next === systemTheme() ? "system" : next;
    prefs.set("theme", theme);
    applyTheme(theme);
  });
}

// ---------------------------------------------------------------- start

setupTheme();
setupProfile();
store.on("connection", showConnection);
store.on("inflight", showInflightCount);
store.on("profile", showProfile);
store.on("uiConfig", (c) => {
  if (c && c.version && !document.getElementById("version").textContent) showVersion({ version: c.version });
});
store.connect();
get("api/version").then(showVersion, () => {});
window.addEventListener("hashchange", render);
render();
