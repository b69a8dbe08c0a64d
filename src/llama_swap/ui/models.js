// Models: every configured model with its live state (modelStatus events), Load / Unload
// buttons, Unload all, and a link to each model's own log stream; below them, what else a
// request may name (from /v1/models): selectors and peers' models.

import { get, idPath, post } from "./api.js";
import { store } from "./store.js";
import { fmtBytes, fmtInt, h, prefs, setChildren, spinner, toast } from "./util.js";

const STATE_TEXT = { stopped: "stopped", starting: "starting", ready: "ready", stopping: "stopping", failed: "failed" };
const loading = new Set(); // model ids with a Load request in flight (survives page switches)
const unloading = new Set();
let showUnlisted = prefs.get("showUnlisted") === "1";

export function mount(view) {
  const rows = new Map(); // id → {tr, update}
  const tbody = h("tbody");
  const summary = h("span.sub");
  const unlistedToggle = h("input", { type: "checkbox", checked: showUnlisted });
  const unlistedLabel = h("label.check", { hidden: true }, unlistedToggle, "Show unlisted");
  const unloadAll = h("button.danger", { type: "button", onclick: () => doUnloadAll(unloadAll) }, "Unload all");
  const emptyRow = h("tr", h("td.empty", { colSpan: 5 }, "Loading models…"));

  const table = h(
    "div.card.table-wrap",
    h(
      "table.models",
      h("thead", h("tr", h("th", "State"), h("th", "Model"), h("th", "Aliases"), h("th", "Capabilities"), h("th.num", ""))),
      tbody,
    ),
  );
  const elsewhere = h("div.elsewhere");
  view.append(
    h("div.page-head", h("h1", "Models"), summary, h("div.actions", unlistedLabel, unloadAll)),
    table,
    elsewhere,
  );
  get("v1/models").then((listing) => setChildren(elsewhere, routedCards(listing && listing.data)), () => {});

  unlistedToggle.addEventListener("change", () => {
    showUnlisted = unlistedToggle.checked;
    prefs.set("showUnlisted", showUnlisted ? "1" : "0");
    render(store.models);
  });

  function render(list) {
    const all = Array.isArray(list) ? list : [];
    const unlistedCount = all.filter((m) => m.unlisted).length;
    unlistedLabel.hidden = unlistedCount === 0;
    const visible = all.filter((m) => showUnlisted || !m.unlisted || m.state !== "stopped");
    const running = all.filter((m) => m.state === "ready" || m.state === "starting").length;
    summary.textContent = store.modelsLoaded ? `${running} of ${all.length} running` : "";
    unloadAll.disabled = !all.some((m) => m.state !== "stopped" && m.state !== "failed");

    if (!visible.length) {
      emptyRow.firstChild.textContent = store.modelsLoaded ? "No models configured." : "Loading models…";
      setChildren(tbody, emptyRow);
      rows.clear();
      return;
    }
    emptyRow.remove();
    const seen = new Set();
    let prev = null;
    for (const model of visible) {
      seen.add(model.id);
      let row = rows.get(model.id);
      if (!row) {
        row = makeRow(model.id);
        rows.set(model.id, row);
      }
      row.update(model);
      // keep DOM order = list order without re-creating rows
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== row.tr) tbody.insertBefore(row.tr, want);
      prev = row.tr;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
  }

  function makeRow(id) {
    const stateCell = h("td.state-cell");
    const modelCell = h("td.model-cell");
    const aliasCell = h("td.alias-cell");
    const capsCell = h("td.caps-cell");
    const loadBtn = h("button.small.btn-load", { type: "button", onclick: () => doLoad(id) });
    const unloadBtn = h("button.small.btn-unload", { type: "button", onclick: () => doUnload(id) }, "Unload");
    const logsLink = h("a.btn.small.ghost.btn-logs", { href: `#/logs/model/${encodeURIComponent(id)}`, title: `Logs of ${id}` }, "Logs");
    const tr = h("tr", { dataset: { model: id } }, stateCell, modelCell, aliasCell, capsCell, h("td.actions", loadBtn, unloadBtn, logsLink));
    let last = "";

    function update(m) {
      const isLoading = loading.has(id);
      const isUnloading = unloading.has(id);
      const key = JSON.stringify([m, isLoading, isUnloading]);
      if (key === last) return;
      last = key;
      const state = STATE_TEXT[m.state] ? m.state : String(m.state || "unknown");
      tr.dataset.state = state;

      const badge = h("span.state", { dataset: { state } }, h("span.dot"), h("span.state-text", state));
      if (state === "failed" && m.error) {
        badge.title = m.error;
        setChildren(stateCell, h("details", h("summary", badge), h("pre.model-error", m.error)));
      } else {
        if (m.pid) badge.title = `pid ${m.pid}`;
        setChildren(stateCell, badge);
      }

      const name = m.name && m.name !== m.id ? h("div.model-name", m.name) : null;
      setChildren(
        modelCell,
        h("div.model-id", m.id, m.unlisted ? [" ", h("span.tag.unlisted", "unlisted")] : null),
        name,
        m.description ? h("div.model-desc", m.description) : null,
      );
      const aliases = Array.isArray(m.aliases) ? m.aliases : [];
      setChildren(aliasCell, aliases.length ? h("div.chips", aliases.map((a) => h("span.chip", a))) : h("span.faint", "-"));
      const caps = (Array.isArray(m.capabilities) ? m.capabilities : []).map((c) => h("span.tag", c.replace(/_/g, " ")));
      if (m.context_length) caps.push(h("span.chip", { title: "context length" }, `ctx ${fmtInt(m.context_length)}`));
      if (typeof m.warm_cache_bytes === "number") {
        const saved = m.warm_cache_bytes > 0 ? `warm cache ${fmtBytes(m.warm_cache_bytes)}` : "warm swaps";
        caps.push(h("span.chip.warm", { title: "KV cache saved on disk for its next start (warmSwap)" }, saved));
      }
      setChildren(capsCell, caps.length ? h("div.chips", caps) : h("span.faint", "-"));

      const busyLoading = isLoading || state === "starting";
      loadBtn.classList.toggle("busy", busyLoading);
      loadBtn.disabled = busyLoading || state === "ready" || state === "stopping";
      setChildren(loadBtn, busyLoading ? [spinner(), "Loading"] : "Load");
      loadBtn.title = state === "ready" ? `${id} is loaded` : `Start ${id}`;
      unloadBtn.disabled = isUnloading || state === "stopped" || state === "failed" || state === "stopping";
      setChildren(unloadBtn, isUnloading || state === "stopping" ? [spinner(), "Unload"] : "Unload");
    }
    return { tr, update };
  }

  const refresh = () => render(store.models);

  async function doLoad(id) {
    loading.add(id);
    refresh();
    try {
      const res = await get(`upstream/${idPath(id)}/load`);
      if (res && res.message) toast(res.message, "ok", 3000);
    } catch (err) {
      toast(`Load ${id}: ${err.message}`, "error");
    } finally {
      loading.delete(id);
      refresh();
    }
  }

  async function doUnload(id) {
    unloading.add(id);
    refresh();
    try {
      await post(`api/models/unload/${idPath(id)}`);
    } catch (err) {
      toast(`Unload ${id}: ${err.message}`, "error");
    } finally {
      unloading.delete(id);
      refresh();
    }
  }

  async function doUnloadAll(btn) {
    btn.disabled = true;
    setChildren(btn, spinner(), "Unload all");
    try {
      await post("api/models/unload");
    } catch (err) {
      toast(`Unload all: ${err.message}`, "error");
    } finally {
      setChildren(btn, "Unload all");
      refresh();
    }
  }

  const off = store.on("models", render);
  render(store.models);
  if (!store.modelsLoaded) {
    // Before the first event arrives (or if the event stream is down) ask directly.
    get("api/models").then(
      (list) => {
        if (!store.modelsLoaded && Array.isArray(list)) {
          store.models = list;
          store.modelsLoaded = true;
          render(list);
        }
      },
      () => {},
    );
  }
  return () => off();
}

/** Cards for the selectors and the peers' models of a /v1/models listing (none: nothing). */
function routedCards(records) {
  const meta = (r) => (r && r.meta && r.meta.llamaswap) || {};
  const list = Array.isArray(records) ? records : [];
  const cards = [];
  const selectors = list.filter((r) => meta(r).type === "selector");
  if (selectors.length) {
    cards.push(
      h(
        "div.card.routed.selectors",
        h("h2", "Selectors"),
        h(
          "ul",
          selectors.map((r) => {
            const m = meta(r);
            const how = m.strategy === "spillover" ? `spillover ${m.spillover}` : m.strategy;
            return h("li", { dataset: { selector: r.id } }, h("span.model-id", r.id), " ", h("span.tag", how), " → ",
              (m.targets || []).join(", "), r.name ? h("span.faint", ` — ${r.name}`) : null);
          }),
        ),
      ),
    );
  }
  const byPeer = new Map();
  for (const r of list.filter((r) => meta(r).type === "peer")) {
    const peer = meta(r).peerID;
    if (!byPeer.has(peer)) byPeer.set(peer, []);
    byPeer.get(peer).push(r.id);
  }
  if (byPeer.size) {
    cards.push(
      h(
        "div.card.routed.peers",
        h("h2", "Peer models"),
        h("p.faint", "Served by other servers; requests for them are forwarded there and never start a model here."),
        [...byPeer].map(([peer, ids]) =>
          h("div", { dataset: { peer } }, h("strong", peer), ": ", h("div.chips", ids.map((id) => h("span.chip", id))))),
      ),
    );
  }
  return cards;
}
