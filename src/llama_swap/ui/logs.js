// Logs: the proxy's and the upstreams' output live from /api/events (history included),
// side by side or one at a time, and one model's own output streamed from
// GET /logs/stream/<model-id> (history first, then live) with fetch + ReadableStream.
// Routes: #/logs, #/logs/proxy, #/logs/upstream, #/logs/model/<id>.

import { idPath, url } from "./api.js";
import { LogView } from "./logview.js";
import { store } from "./store.js";
import { h, setChildren } from "./util.js";

export const fill = true;

export function mount(view, rest) {
  const mode = rest[0] === "model" && rest[1] ? "model" : rest[0] === "proxy" || rest[0] === "upstream" ? rest[0] : "both";
  const modelId = mode === "model" ? rest.slice(1).join("/") : null;
  const cleanups = [];

  const select = h("select", { "aria-label": "Model logs" });
  const fillSelect = (list) => {
    const ids = (list || []).map((m) => m.id);
    if (modelId && !ids.includes(modelId)) ids.unshift(modelId);
    setChildren(
      select,
      h("option", { value: "" }, "Model logs…"),
      ids.map((id) => h("option", { value: id, selected: id === modelId }, id)),
    );
    select.value = modelId || "";
  };
  fillSelect(store.models);
  cleanups.push(store.on("models", fillSelect));
  select.addEventListener("change", () => {
    location.hash = select.value ? `#/logs/model/${encodeURIComponent(select.value)}` : "#/logs";
  });

  const tab = (href, label, on) => h("a", { href, "aria-current": on ? "page" : null }, label);
  view.append(
    h(
      "div.page-head",
      h("h1", "Logs"),
      h(
        "nav.segmented",
        { "aria-label": "Log source" },
        tab("#/logs", "Proxy + upstream", mode === "both"),
        tab("#/logs/proxy", "Proxy", mode === "proxy"),
        tab("#/logs/upstream", "Upstream", mode === "upstream"),
      ),
      h("div.actions", select),
    ),
  );

  const grid = h(`div.logs-grid${mode === "both" ? "" : ".single"}`);
  view.append(grid);

  if (mode === "model") {
    cleanups.push(mountModelStream(grid, modelId));
  } else {
    const panes = {};
    for (const source of ["proxy", "upstream"]) {
      if (mode !== "both" && mode !== source) continue;
      const pane = new LogView({
        title: source === "proxy" ? "Proxy" : "Upstream",
        subtitle: source === "proxy" ? "llama-swap" : "all models",
        testid: `log-${source}`,
        empty: source === "proxy" ? "No proxy output yet." : "No upstream output yet — load a model to see its output here.",
      });
      pane.set(store.logs[source]);
      panes[source] = pane;
      grid.append(pane.el);
    }
    cleanups.push(
      store.on("log", ({ source, text, reset }) => {
        const pane = panes[source];
        if (!pane) return;
        if (reset) pane.set(store.logs[source]);
        else pane.append(text);
      }),
    );
    cleanups.push(() => Object.values(panes).forEach((p) => p.dispose()));
  }
  return () => cleanups.forEach((fn) => fn());
}

function mountModelStream(grid, modelId) {
  const state = h("span.stream-state", { dataset: { state: "connecting" } }, h("span.dot"), h("span.label", "connecting"));
  const reconnect = h("button.small", { type: "button", hidden: true, onclick: () => start() }, "Reconnect");
  const pane = new LogView({
    title: modelId,
    subtitle: "model output",
    testid: "log-model",
    empty: `No output from ${modelId} yet.`,
    actions: [state, reconnect],
  });
  grid.append(pane.el);
  let controller = null;

  const setState = (s, label) => {
    state.dataset.state = s;
    state.querySelector(".label").textContent = label || s;
    reconnect.hidden = !(s === "ended" || s === "error");
  };

  async function start() {
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    pane.clear();
    setState("connecting");
    try {
      const res = await fetch(url(`logs/stream/${idPath(modelId)}`), { signal: mine.signal });
      if (!res.ok) {
        let msg = `${res.status} ${res.statusText}`;
        try {
          const body = await res.json();
          if (body && body.error) msg = typeof body.error === "string" ? body.error : body.error.message || msg;
        } catch {
          /* keep the status */
        }
        setState("error", msg);
        return;
      }
      setState("live");
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        pane.append(decoder.decode(value, { stream: true }));
      }
      pane.append(decoder.decode());
      if (controller === mine) setState("ended", "stream ended");
    } catch (err) {
      if (mine.signal.aborted) return;
      setState("error", `disconnected: ${err.message}`);
    }
  }

  start();
  return () => {
    if (controller) controller.abort();
    controller = null;
    pane.dispose();
  };
}
