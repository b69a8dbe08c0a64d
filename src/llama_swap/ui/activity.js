// Activity: the requests in flight (live from `inflight` events, elapsed time ticking
// locally, cancellable) and the history of finished requests
// (GET /api/metrics/activity, paged; new rows arrive through `activity` events), each
// with its capture when one is kept (`capture.js`).

import { ApiError, get, post } from "./api.js";
import { showCapture } from "./capture.js";
import { store } from "./store.js";
import { DASH, fmtBytes, fmtInt, fmtMs, fmtRate, fmtTime, h, setChildren, toast } from "./util.js";

const LIMIT = 50;

export function mount(view) {
  const cleanups = [];
  view.append(h("div.page-head", h("h1", "Activity")));
  cleanups.push(mountInflight(view));
  cleanups.push(mountHistory(view));
  return () => cleanups.forEach((fn) => fn());
}

// ---------------------------------------------------------------- in flight

function mountInflight(view) {
  const tbody = h("tbody");
  const count = h("span.sub");
  const sessionTh = h("th", "Session");
  view.append(
    h(
      "section",
      { "aria-label": "In flight" },
      h("div.section-head", h("h2", "In flight"), count),
      h(
        "div.card.table-wrap",
        h(
          "table.inflight",
          h(
            "thead",
            h("tr", h("th.num", "ID"), h("th", "Model"), h("th", "Path"), h("th", "Client"), sessionTh,
              h("th.num", "Elapsed"), h("th.num", "Bytes"), h("th.num", "")),
          ),
          tbody,
        ),
      ),
    ),
  );

  const rows = new Map(); // id → {tr, elapsed, bytes, started}
  const cancelling = new Set();

  function render(map) {
    const list = [...map.values()].sort((a, b) => a.started - b.started || a.id - b.id);
    count.textContent = list.length ? `${list.length} running` : "";
    const showSession = list.some((r) => r.session_id);
    sessionTh.hidden = !showSession;
    if (!list.length) {
      rows.clear();
      setChildren(tbody, h("tr", h("td.empty", { colSpan: 8 }, "No requests in flight.")));
      return;
    }
    const seen = new Set();
    const ordered = [];
    for (const r of list) {
      seen.add(r.id);
      let row = rows.get(r.id);
      if (!row) {
        row = makeRow(r);
        rows.set(r.id, row);
      }
      row.update(r, showSession);
      ordered.push(row.tr);
    }
    for (const id of rows.keys()) if (!seen.has(id)) rows.delete(id);
    setChildren(tbody, ordered);
    tick();
  }

  function makeRow(r) {
    const elapsed = h("td.num");
    const bytes = h("td.num");
    const session = h("td.mono.faint");
    const cancel = h("button.small.danger", { type: "button", onclick: () => doCancel(r.id, cancel) }, "Cancel");
    const tr = h(
      "tr",
      { dataset: { id: r.id } },
      h("td.num.faint", String(r.id)),
      h("td.nowrap", r.model || DASH),
      h("td", h("span.method", r.method || ""), h("span.path", r.path || "")),
      h("td.faint.nowrap", r.client || DASH),
      session,
      elapsed,
      bytes,
      h("td.actions", cancel),
    );
    const row = {
      tr,
      started: r.started,
      elapsed,
      update(req, showSession) {
        row.started = req.started;
        bytes.textContent = fmtBytes(req.bytes);
        session.hidden = !showSession;
        session.textContent = req.session_id || DASH;
        cancel.disabled = cancelling.has(req.id);
      },
    };
    return row;
  }

  function tick() {
    const now = Date.now();
    for (const row of rows.values()) {
      row.elapsed.textContent = typeof row.started === "number" ? fmtMs(Math.max(0, now - row.started)) : DASH;
    }
  }

  async function doCancel(id, btn) {
    cancelling.add(id);
    btn.disabled = true;
    try {
      await post(`api/inflight/${encodeURIComponent(id)}/cancel`);
      toast(`Request ${id} cancelled`, "ok", 2500);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) toast(`Request ${id} had already finished`, "info", 3000);
      else toast(`Cancel ${id}: ${err.message}`, "error");
      btn.disabled = false;
    } finally {
      cancelling.delete(id);
    }
  }

  render(store.inflight);
  const off = store.on("inflight", render);
  const timer = setInterval(tick, 250);
  return () => {
    off();
    clearInterval(timer);
  };
}

// ---------------------------------------------------------------- history

const COLUMNS = [
  ["Time", ""],
  ["Model", ""],
  ["Path", ""],
  ["Status", ""],
  ["Prompt", "num"],
  ["Generated", "num"],
  ["Cached", "num"],
  ["Prompt t/s", "num"],
  ["Gen t/s", "num"],
  ["TTFB", "num"],
  ["Duration", "num"],
  ["Capture", "num"],
];

function statusBadge(code, error) {
  if (typeof code !== "number") return h("span.faint", DASH);
  // A 2xx that still went wrong (e.g. cancelled mid-stream) is a warning, its reason on hover.
  const kind = code >= 400 || code === 0 ? "err" : code >= 200 && code < 300 && !error ? "ok" : "warn";
  return h(`span.status.${kind}`, { title: error || null }, String(code), error && kind !== "err" ? " !" : null);
}

function historyRow(r, fresh) {
  const cell = (cls, content) => h(cls ? `td.${cls}` : "td", content);
  return h(
    `tr${fresh ? ".fresh" : ""}`,
    { dataset: { id: r.id } },
    h("td.nowrap", { title: r.timestamp || "" }, fmtTime(r.timestamp)),
    h("td.nowrap", r.model || DASH),
    h("td", h("span.method", r.method || ""), h("span.path", r.req_path || DASH)),
    h("td", statusBadge(r.resp_status_code, r.error_msg)),
    cell("num", fmtInt(r.prompt_tokens)),
    cell("num", fmtInt(r.generated_tokens)),
    cell("num", fmtInt(r.cached_tokens)),
    cell("num", fmtRate(r.prompt_per_second)),
    cell("num", fmtRate(r.generation_per_second)),
    cell("num", fmtMs(r.ttfb_ms)),
    cell("num", fmtMs(r.duration_ms)),
    h(
      "td.actions",
      r.has_capture
        ? h("button.small", { type: "button", "aria-label": `View capture ${r.id}`, onclick: () => showCapture(r.id) }, "View")
        : h("span.faint", DASH),
    ),
  );
}

function mountHistory(view) {
  const tbody = h("tbody");
  const info = h("span.sub");
  const prev = h("button.small", { type: "button", "aria-label": "Newer" }, "‹ Newer");
  const next = h("button.small", { type: "button", "aria-label": "Older" }, "Older ›");
  const pageLabel = h("span");
  view.append(
    h(
      "section",
      { "aria-label": "History" },
      h("div.section-head", h("h2", "History"), info, h("div.actions.pager", prev, pageLabel, next)),
      h(
        "div.card.table-wrap",
        h("table.history", h("thead", h("tr", COLUMNS.map(([t, cls]) => h(cls ? `th.${cls}` : "th", t)))), tbody),
      ),
    ),
  );

  let page = 1;
  let total = 0;
  let totalPages = 1;
  let rows = []; // rows on the current page
  let loaded = false;
  let seq = 0;
  const buffered = []; // live rows that arrived before the first page did

  function render(freshIds = new Set()) {
    info.textContent = loaded ? `${fmtInt(total)} request${total === 1 ? "" : "s"}` : "";
    pageLabel.textContent = `Page ${page} of ${Math.max(1, totalPages)}`;
    prev.disabled = page <= 1;
    next.disabled = page >= totalPages;
    if (!rows.length) {
      setChildren(tbody, h("tr", h("td.empty", { colSpan: COLUMNS.length }, loaded ? "No requests yet." : "Loading…")));
      return;
    }
    setChildren(tbody, rows.map((r) => historyRow(r, freshIds.has(r.id))));
  }

  async function load(p) {
    const mine = ++seq;
    try {
      const res = await get(`api/metrics/activity?limit=${LIMIT}&page=${p}`);
      if (mine !== seq) return;
      page = typeof res.page === "number" ? res.page : p;
      total = typeof res.total === "number" ? res.total : (res.data || []).length;
      totalPages = Math.max(1, typeof res.total_pages === "number" ? res.total_pages : Math.ceil(total / LIMIT));
      rows = Array.isArray(res.data) ? res.data : [];
      loaded = true;
      const fresh = new Set();
      if (page === 1) {
        for (const r of buffered.splice(0)) {
          if (!rows.some((x) => x.id === r.id)) {
            rows.unshift(r);
            total += 1;
            fresh.add(r.id);
          }
        }
        rows = rows.slice(0, LIMIT);
      }
      render(fresh);
    } catch (err) {
      if (mine !== seq) return;
      loaded = true;
      rows = [];
      render();
      setChildren(tbody, h("tr", h("td.empty", { colSpan: COLUMNS.length }, `Cannot load the history: ${err.message}`)));
    }
  }

  prev.addEventListener("click", () => load(page - 1));
  next.addEventListener("click", () => load(page + 1));

  const off = store.on("activity", (row) => {
    if (!row || typeof row !== "object") return;
    if (!loaded) {
      buffered.push(row);
      return;
    }
    if (rows.some((x) => x.id === row.id)) return;
    total += 1;
    totalPages = Math.max(1, Math.ceil(total / LIMIT));
    if (page === 1) {
      rows = [row, ...rows].slice(0, LIMIT);
      render(new Set([row.id]));
    } else {
      render(); // counts only; the new row is on page 1
    }
  });

  render();
  load(1);
  return off;
}
