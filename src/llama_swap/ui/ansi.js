// ANSI SGR colour codes → styled spans, incrementally: text may arrive split anywhere,
// even inside an escape sequence. Supported: reset, bold, dim, italic, underline, the 16
// colours (30–37, 90–97, 40–47, 100–107), 256 colours (38;5;n / 48;5;n) and truecolour
// (38;2;r;g;b). Other escape sequences (cursor moves, erase line, OSC titles) are dropped.
// Text is inserted as text nodes, so it is never interpreted as HTML.

const ESC = "\x1b";

function xterm256(n) {
  if (n < 16) return null; // handled as a class
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  const i = n - 16;
  const steps = [0, 95, 135, 175, 215, 255];
  return `rgb(${steps[Math.floor(i / 36)]},${steps[Math.floor(i / 6) % 6]},${steps[i % 6]})`;
}

export class AnsiParser {
  constructor() {
    this.reset();
    this.carry = "";
  }

  reset() {
    this.fg = null; // number 0–15 | css colour string | null
    this.bg = null;
    this.bold = false;
    this.dim = false;
    this.italic = false;
    this.underline = false;
  }

  sgr(params) {
    const codes = params === "" ? [0] : params.split(";").map((p) => (p === "" ? 0 : Number(p)));
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) this.reset();
      else if (c === 1) this.bold = true;
      else if (c === 2) this.dim = true;
      else if (c === 3) this.italic = true;
      else if (c === 4) this.underline = true;
      else if (c === 22) this.bold = this.dim = false;
      else if (c === 23) this.italic = false;
      else if (c === 24) this.underline = false;
      else if (c >= 30 && c <= 37) this.fg = c - 30;
      else if (c >= 90 && c <= 97) this.fg = c - 90 + 8;
      else if (c === 39) this.fg = null;
      else if (c >= 40 && c <= 47) this.bg = c - 40;
      else if (c >= 100 && c <= 107) this.bg = c - 100 + 8;
      else if (c === 49) this.bg = null;
      else if (c === 38 || c === 48) {
        let colour = null;
        if (codes[i + 1] === 5 && i + 2 < codes.length) {
          const n = codes[i + 2];
          colour = n < 16 ? n : xterm256(n);
          i += 2;
        } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
          colour = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`;
          i += 4;
        } else {
          break;
        }
        if (c === 38) this.fg = colour;
        else this.bg = colour;
      }
    }
  }

  styled() {
    return this.fg !== null || this.bg !== null || this.bold || this.dim || this.italic || this.underline;
  }

  node(text) {
    if (!this.styled()) return document.createTextNode(text);
    const span = document.createElement("span");
    const cls = [];
    if (this.bold) cls.push("ansi-b");
    if (this.dim) cls.push("ansi-d");
    if (this.italic) cls.push("ansi-i");
    if (this.underline) cls.push("ansi-u");
    if (typeof this.fg === "number") cls.push(`fg${this.fg}`);
    else if (this.fg) span.style.color = this.fg;
    if (typeof this.bg === "number") cls.push(`bg${this.bg}`);
    else if (this.bg) span.style.background = this.bg;
    if (cls.length) span.className = cls.join(" ");
    span.textContent = text;
    return span;
  }

  /** Parse more text; returns {fragment, length} (length = visible characters). */
  push(input) {
    let text = this.carry + input.replace(/\r\n/g, "\n");
    this.carry = "";
    const frag = document.createDocumentFragment();
    let length = 0;
    let pos = 0;
    const emit = (s) => {
      s = s.replace(/\r/g, "");
      if (!s) return;
      frag.append(this.node(s));
      length += s.length;
    };
    while (pos < text.length) {
      const esc = text.indexOf(ESC, pos);
      if (esc < 0) {
        emit(text.slice(pos));
        break;
      }
      emit(text.slice(pos, esc));
      const rest = text.slice(esc);
      // CSI: ESC [ params intermediates final
      const csi = /^\x1b\[([0-9;:?]*)[ -\/]*([@-~])/.exec(rest);
      if (csi) {
        if (csi[2] === "m") this.sgr(csi[1].replace(/:/g, ";"));
        pos = esc + csi[0].length;
        continue;
      }
      // OSC: ESC ] ... (BEL | ESC \)
      const osc = /^\x1b\][^\x07\x1b]*(\x07|\x1b\\)/.exec(rest);
      if (osc) {
        pos = esc + osc[0].length;
        continue;
      }
      const incomplete = /^\x1b(\[[0-9;:?]*[ -\/]*|\][^\x07\x1b]*\x1b?)?$/.test(rest);
      if (incomplete && rest.length < 256) {
        this.carry = rest; // finish it with the next chunk
        break;
      }
      pos = esc + (rest.length > 1 ? 2 : 1); // some other two-byte escape: drop it
    }
    return { fragment: frag, length };
  }
}

/** Convenience: a whole text → fragment (used by tests and one-shot renders). */
export function ansiToFragment(text) {
  return new AnsiParser().push(text).fragment;
}
