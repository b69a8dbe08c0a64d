// The capture of one activity row (GET /api/captures/{id}) in a dialog: the request and the
// answer, headers and bodies. JSON is pretty-printed; a server-sent-events answer is shown
// as its events, each one's JSON pretty-printed.

import { get } from "./api.js";
import { h, setChildren, toast } from "./util.js";

/** Open the capture of activity row `id`. */
export async function showCapture(id) {
  let capture;
  try {
    capture = await get(`api/captures/${encodeURIComponent(id)}`);
  } catch (err) {
    toast(`Capture ${id}: ${err.message}`, "error");
    return;
  }
  const dialog = h(
    "dialog.capture",
    { "aria-label": `Capture ${id}` },
    h(
      "div.capture-head",
      h("h2", `Request ${id}`),
      h("span.method", "POST"),
      h("span.path", capture.req_path || ""),
      h("button.small", { type: "button", onclick: () => dialog.close() }, "Close"),
    ),
    part("Request", null, capture.req_headers, decode(capture.req_body)),
    part("Response", capture.resp_status_code, capture.resp_headers, decode(capture.resp_body)),
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

function part(title, status, headers, text) {
  const list = Object.entries(headers || {});
  const contentType = (list.find(([name]) => name.toLowerCase() === "content-type") || [, ""])[1];
  return h(
    "section.capture-part",
    { "aria-label": title },
    h("h3", title, status ? h("span.faint", ` ${status}`) : null),
    h(
      "details",
      h("summary", `Headers (${list.length})`),
      h("table.capture-headers", h("tbody", list.map(([name, value]) => h("tr", h("th", name), h("td.mono", value))))),
    ),
    bodyView(text, contentType),
  );
}

function decode(b64) {
  if (!b64) return "";
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8").decode(bytes);
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function bodyView(text, contentType) {
  if (!text) return h("p.faint", "No body.");
  if (!/event-stream/i.test(contentType)) return h("pre.capture-body", pretty(text));
  const events = text.split(/\r?\n\r?\n/).filter((e) => e.trim());
  const list = h("ol.capture-events");
  setChildren(
    list,
    events.map((event) => {
      const lines = event.split(/\r?\n/).map((line) => {
        const m = /^data: ?(.*)$/s.exec(line);
        return m ? `data: ${pretty(m[1])}` : line;
      });
      return h("li", h("pre.capture-body", lines.join("\n")));
    }),
  );
  return h("div", h("p.faint", `${events.length} events`), list);
}
