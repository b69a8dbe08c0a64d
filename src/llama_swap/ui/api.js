// Talking to the service. Every URL is relative to the service's root — the parent of
// the /ui/ directory — so the UI also works behind a reverse proxy under a sub-path.

export const ROOT = new URL("../", document.baseURI);
// fetch() refuses URLs with credentials (a page opened as http://user:key@host/ui/); the
// browser answers the service's Basic challenge by itself.
ROOT.username = "";
ROOT.password = "";

export function url(path) {
  return new URL(path, ROOT).href;
}

/** A model id as URL path segments: each segment encoded, the slashes kept. */
export function idPath(id) {
  return String(id).split("/").map(encodeURIComponent).join("/");
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** The message of an error body: {"error": "..."}, {"error": {"message"}}, {"message"}, … */
export function errorText(data, fallback) {
  if (data && typeof data === "object") {
    const e = data.error;
    if (typeof e === "string" && e) return e;
    if (e && typeof e === "object") return e.message || e.msg || JSON.stringify(e);
    if (typeof data.message === "string" && data.message) return data.message;
    if (typeof data.detail === "string" && data.detail) return data.detail;
  }
  if (typeof data === "string" && data.trim()) return data.trim().slice(0, 500);
  return fallback;
}

/** fetch + JSON; throws ApiError with the service's message on a non-2xx answer. */
export async function api(method, path, { body, signal } = {}) {
  let res;
  try {
    res = await fetch(url(path), {
      method,
      signal,
      headers: body === undefined ? { Accept: "application/json" } : { Accept: "application/json", "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(`cannot reach llama-swap: ${err.message}`, 0);
  }
  const text = await res.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: keep the text */
  }
  if (!res.ok || (data && typeof data === "object" && data.status === "error")) {
    throw new ApiError(errorText(data, `${res.status} ${res.statusText}`), res.status);
  }
  return data;
}

export const get = (path, opts) => api("GET", path, opts);
export const post = (path, body, opts) => api("POST", path, { ...opts, body });
