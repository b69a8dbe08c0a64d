// The live state of the service, fed by one EventSource on /api/events.
//
// Each SSE frame is `data: {"type": T, "data": "<JSON document as a string>"}`. The store
// keeps the latest models, the proxy and upstream log tails (bounded), the in-flight
// requests and the connection state, and re-dispatches each update as a DOM event:
//   "models"     detail: list of models
//   "log"        detail: {source, text, reset}   (reset: text replaces the pane)
//   "activity"   detail: one finished activity row
//   "inflight"   detail: Map id → request
//   "connection" detail: "connecting" | "connected" | "reconnecting" | "disconnected"
//   "uiConfig", "profile"

import { url } from "./api.js";

export const LOG_CAP = 200 * 1024; // characters kept per log pane

/** Keep the last `cap` characters of `text`, cut at a line start when one is near. */
export function capText(text, cap = LOG_CAP) {
  if (text.length <= cap) return text;
  const cut = text.length - cap;
  const nl = text.indexOf("\n", cut);
  return nl >= 0 && nl - cut < 4096 ? text.slice(nl + 1) : text.slice(cut);
}

class Store extends EventTarget {
  constructor() {
    super();
    this.models = [];
    this.modelsLoaded = false;
    this.logs = { proxy: "", upstream: "" };
    this.inflight = new Map();
    this.connection = "connecting";
    this.uiConfig = null;
    this.profile = null;
    this.source = null;
    this.retry = 0;
    this.retryTimer = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Subscribe; returns the unsubscribe function. */
  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  setConnection(state) {
    if (this.connection === state) return;
    this.connection = state;
    this.emit("connection", state);
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    const source = new EventSource(url("api/events"));
    this.source = source;
    this.freshLogs = new Set(); // sources whose history has not arrived yet on this connection
    source.addEventListener("open", () => {
      this.retry = 0;
      this.freshLogs = new Set(["proxy", "upstream"]);
      this.setConnection("connected");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a non-SSE answer): retry ourselves, backing off.
        this.setConnection("disconnected");
        const delay = Math.min(1000 * 2 ** this.retry++, 15000);
        this.retryTimer = setTimeout(() => this.connect(), delay);
      } else {
        this.setConnection("reconnecting");
      }
    });
    source.addEventListener("message", (e) => this.handle(e.data));
  }

  handle(raw) {
    let type, data;
    try {
      const frame = JSON.parse(raw);
      type = frame.type;
      data = typeof frame.data === "string" ? JSON.parse(frame.data) : frame.data;
    } catch (err) {
      console.warn("llama-swap: unreadable event", raw, err);
      return;
    }
    switch (type) {
      case "modelStatus":
        this.models = Array.isArray(data) ? data : [];
        this.modelsLoaded = true;
        this.emit("models", this.models);
        break;
      case "logData": {
        const source = data && data.source === "upstream" ? "upstream" : "proxy";
        const text = String((data && data.data) || "");
        // The first logData of each source after (re)connecting is its history.
        const reset = this.freshLogs.delete(source);
        this.logs[source] = capText(reset ? text : this.logs[source] + text);
        this.emit("log", { source, text, reset });
        break;
      }
      case "activity":
        this.emit("activity", data);
        break;
      case "inflight":
        this.applyInflight(data || {});
        break;
      case "uiConfig":
        this.uiConfig = data;
        this.emit("uiConfig", data);
        break;
      case "profileChanged":
        this.profile = data ? data.active : null;
        this.emit("profile", this.profile);
        break;
      default:
        break;
    }
  }

  applyInflight(msg) {
    if (msg.operation === "snapshot") {
      this.inflight = new Map((msg.requests || []).map((r) => [r.id, r]));
    } else if (msg.operation === "upsert" && msg.request) {
      this.inflight.set(msg.request.id, msg.request);
    } else if (msg.operation === "remove") {
      this.inflight.delete(msg.id);
    } else {
      return;
    }
    this.emit("inflight", this.inflight);
  }
}

export const store = new Store();
