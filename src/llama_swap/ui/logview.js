// A log pane: ANSI-coloured text appended in batches (one DOM update per animation
// frame), at most LOG_CAP characters kept, following the end while scrolled to the bottom.

import { AnsiParser } from "./ansi.js";
import { LOG_CAP } from "./store.js";
import { atBottom, h } from "./util.js";

export class LogView {
  constructor({ title, subtitle = "", empty = "No output yet.", actions = [], testid } = {}) {
    this.parser = new AnsiParser();
    this.size = 0;
    this.pending = "";
    this.frame = 0;
    this.follow = true;
    this.body = h("pre.log-body", { "data-empty": empty, tabindex: "0", "aria-label": `${title} log` });
    this.jump = h("button.jump", { type: "button", hidden: true, onclick: () => this.scrollToEnd() }, "↓ Follow");
    this.wrapToggle = h("input", { type: "checkbox", checked: true, onchange: () => this.body.classList.toggle("nowrap", !this.wrapToggle.checked) });
    this.subtitle = h("span.sub", subtitle);
    this.el = h(
      "section.card.log-pane",
      { dataset: testid ? { testid } : {} },
      h(
        "div.log-head",
        h("h2", title),
        this.subtitle,
        h("div.actions", ...actions, h("label.check", this.wrapToggle, "Wrap"), h("button.small", { type: "button", onclick: () => this.clear() }, "Clear")),
      ),
      this.body,
      this.jump,
    );
    this.body.addEventListener("scroll", () => {
      this.follow = atBottom(this.body);
      this.jump.hidden = this.follow;
    });
  }

  append(text) {
    if (!text) return;
    this.pending += text;
    if (this.pending.length > LOG_CAP * 2) {
      // Far behind (e.g. a hidden tab): drop what could never be shown.
      this.pending = this.pending.slice(-LOG_CAP);
      this.clearDom();
    }
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  /** Replace the content with `text`. */
  set(text) {
    this.clear();
    this.append(text);
  }

  clearDom() {
    this.body.replaceChildren();
    this.size = 0;
  }

  clear() {
    this.pending = "";
    this.clearDom();
    this.parser = new AnsiParser();
  }

  flush() {
    this.frame = 0;
    if (!this.pending) return;
    const follow = this.follow || atBottom(this.body);
    const { fragment, length } = this.parser.push(this.pending);
    this.pending = "";
    this.body.append(fragment);
    this.size += length;
    this.trim();
    if (follow) this.scrollToEnd();
  }

  trim() {
    let excess = this.size - LOG_CAP;
    while (excess > 0 && this.body.firstChild) {
      const node = this.body.firstChild;
      const len = node.textContent.length;
      if (len <= excess) {
        node.remove();
        this.size -= len;
        excess -= len;
      } else {
        // Cut inside this node, at the next line start if there is one nearby.
        const text = node.textContent;
        const nl = text.indexOf("\n", excess);
        const cut = nl >= 0 && nl - excess < 4096 ? nl + 1 : excess;
        node.textContent = text.slice(cut);
        this.size -= cut;
        excess = 0;
      }
    }
  }

  scrollToEnd() {
    this.body.scrollTop = this.body.scrollHeight;
    this.follow = true;
    this.jump.hidden = true;
  }

  dispose() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
  }
}
