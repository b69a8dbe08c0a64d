// Playground: chat with a model. POST /v1/chat/completions with stream: true, read the
// SSE answer (`data: {json}` … `data: [DONE]`) and append choices[0].delta.content as it
// arrives; Stop aborts the request. Errors (a non-200 JSON answer or an SSE event with
// `error`) are shown in the transcript.

import { errorText, url } from "./api.js";
import { store } from "./store.js";
import { atBottom, fmtMs, fmtRate, h, prefs, setChildren, toast } from "./util.js";

export const fill = true;

// The conversation survives switching pages (not reloads).
const chat = { messages: [], model: prefs.get("playground.model", ""), system: "" };

/** Split an SSE byte stream into events: yields {event, data} per blank-line-terminated block. */
export async function* sseEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  let event = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === "\r" && buffer[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n") };
          data = [];
          event = "";
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        } else if (line.startsWith("event:")) {
          event = line.slice(6).trim();
        } // comments (":") and other fields are ignored
      }
      if (done) {
        if (buffer.startsWith("data:")) data.push(buffer.slice(5).replace(/^ /, ""));
        if (data.length) yield { event: event || "message", data: data.join("\n") };
        return;
      }
      if (signal && signal.aborted) return;
    }
  } finally {
    reader.releaseLock();
  }
}

// The page is built once and kept while other pages show, so an answer that is still
// streaming carries on (and is there to read) when the user comes back.
let page = null;

export function mount(view) {
  if (!page) page = build();
  view.append(page.root);
  page.shown();
  return () => page.root.remove();
}

function build() {
  const select = h("select#pg-model", { "aria-label": "Model" });
  const clearBtn = h("button", { type: "button", onclick: () => clearChat() }, "Clear chat");
  const system = h("textarea", { rows: 2, placeholder: "You are a helpful assistant.", "aria-label": "System prompt" });
  system.value = chat.system;
  system.addEventListener("input", () => (chat.system = system.value));
  const transcript = h("div.transcript", { "data-empty": "Pick a model and say something.", role: "log", "aria-label": "Transcript" });
  const input = h("textarea#pg-input", { rows: 2, placeholder: "Message…  (Enter to send, Shift+Enter for a new line)", "aria-label": "Message" });
  const sendBtn = h("button.primary#pg-send", { type: "submit" }, "Send");
  const form = h("form.composer", input, sendBtn);

  const root = h(
    "div.page-fill",
    h("div.page-head", h("h1", "Playground"), h("span.sub", "streaming chat completions")),
    h(
      "div.card.chat",
      h("div.chat-toolbar", h("label", { for: "pg-model" }, "Model"), select, h("div.actions", clearBtn)),
      h("details.system-prompt", { open: chat.system ? true : null }, h("summary", "System prompt"), system),
      transcript,
      form,
    ),
  );

  let controller = null;

  let optionsKey = null;
  function fillModels(list) {
    const models = (list || []).filter((m) => !m.unlisted || m.id === chat.model);
    if (store.modelsLoaded && !models.some((m) => m.id === chat.model)) {
      const ready = models.find((m) => m.state === "ready");
      chat.model = ready ? ready.id : models.length ? models[0].id : "";
    }
    const labels = models.map((m) => [m.id, m.state === "ready" ? `${m.id}  \u25cf ready` : m.id]);
    if (chat.model && !models.some((m) => m.id === chat.model)) labels.unshift([chat.model, chat.model]);
    const key = JSON.stringify(labels);
    if (key !== optionsKey) {
      optionsKey = key;
      setChildren(
        select,
        labels.length ? null : h("option", { value: "" }, store.modelsLoaded ? "No models" : "Loading…"),
        labels.map(([id, label]) => h("option", { value: id }, label)),
      );
    }
    select.value = chat.model;
  }
  select.addEventListener("change", () => {
    chat.model = select.value;
    prefs.set("playground.model", chat.model);
  });

  // ------------------------------------------------------------ transcript

  function bubble(role, text) {
    const content = h("div.bubble", text || "");
    const el = h(`div.msg.${role}`, h("div.who", role === "user" ? "You" : chat.model || "assistant"), content);
    return { el, content };
  }

  function scrollDown(force) {
    if (force || atBottom(transcript, 60)) transcript.scrollTop = transcript.scrollHeight;
  }

  function redraw() {
    transcript.replaceChildren();
    for (const m of chat.messages) {
      const b = bubble(m.role, m.content);
      if (m.model) b.el.querySelector(".who").textContent = m.model;
      if (m.meta) b.el.append(h("div.meta", m.meta));
      transcript.append(b.el);
    }
    scrollDown(true);
  }

  function clearChat() {
    if (controller) controller.abort();
    chat.messages = [];
    transcript.replaceChildren();
    input.focus();
  }

  function setBusy(busy) {
    setChildren(sendBtn, busy ? "Stop" : "Send");
    sendBtn.classList.toggle("primary", !busy);
    sendBtn.classList.toggle("danger", busy);
    sendBtn.setAttribute("aria-label", busy ? "Stop" : "Send");
    select.disabled = busy;
  }

  // ------------------------------------------------------------ sending

  async function send() {
    const text = input.value.trim();
    if (!text) return;
    const model = select.value;
    if (!model) {
      toast("Pick a model first.", "error");
      return;
    }
    input.value = "";
    const userMsg = { role: "user", content: text };
    chat.messages.push(userMsg);
    const user = bubble("user", text);
    transcript.append(user.el);

    const answer = bubble("assistant", "");
    answer.el.querySelector(".who").textContent = model;
    const typing = h("span.typing", { "aria-label": "waiting" }, h("i"), h("i"), h("i"));
    answer.content.append(typing);
    transcript.append(answer.el);
    scrollDown(true);

    const messages = [...(chat.system.trim() ? [{ role: "system", content: chat.system.trim() }] : []),
      ...chat.messages.map(({ role, content }) => ({ role, content }))];
    const mine = new AbortController();
    controller = mine;
    setBusy(true);
    const t0 = performance.now();
    let content = "";
    let reasoningEl = null;
    let reasoningBox = null;
    let timings = null;
    let usage = null;
    let failure = null;
    let ttft = null;

    const addContent = (s) => {
      if (!s) return;
      if (ttft === null) ttft = performance.now() - t0;
      if (!content) {
        typing.remove();
        if (reasoningBox) reasoningBox.open = false;
      }
      content += s;
      const follow = atBottom(transcript, 60);
      answer.content.append(s);
      if (follow) scrollDown(true);
    };
    const addReasoning = (s) => {
      if (!s) return;
      if (!reasoningEl) {
        reasoningEl = h("div");
        reasoningBox = h("details.reasoning", { open: !content }, h("summary", "Thinking"), reasoningEl);
        answer.el.insertBefore(reasoningBox, answer.content);
      }
      reasoningEl.append(s);
      scrollDown();
    };

    try {
      const res = await fetch(url("v1/chat/completions"), {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ model, messages, stream: true }),
        signal: mine.signal,
      });
      const type = res.headers.get("Content-Type") || "";
      if (!res.ok) {
        const raw = await res.text();
        let data = raw;
        try {
          data = JSON.parse(raw);
        } catch {
          /* plain text error */
        }
        failure = `${res.status}: ${errorText(data, res.statusText || "request failed")}`;
      } else if (!type.includes("text/event-stream")) {
        // The upstream ignored stream: true and answered with one JSON document.
        const data = await res.json();
        if (data && data.error) failure = errorText(data, "error");
        else {
          const choice = (data.choices || [])[0] || {};
          const msg = choice.message || {};
          addReasoning(msg.reasoning_content);
          addContent(msg.content || choice.text || "");
          timings = data.timings || null;
          usage = data.usage || null;
        }
      } else {
        for await (const ev of sseEvents(res.body, mine.signal)) {
          if (ev.data === "[DONE]") break;
          let obj;
          try {
            obj = JSON.parse(ev.data);
          } catch {
            continue;
          }
          if (ev.event === "error" || (obj && obj.error)) {
            failure = errorText(obj, "the stream reported an error");
            break;
          }
          const choice = (obj.choices || [])[0];
          if (choice && choice.delta) {
            addReasoning(choice.delta.reasoning_content);
            addContent(choice.delta.content);
          } else if (choice && typeof choice.text === "string") {
            addContent(choice.text);
          }
          if (obj.timings) timings = obj.timings;
          if (obj.usage) usage = obj.usage;
        }
      }
    } catch (err) {
      if (!mine.signal.aborted) failure = `request failed: ${err.message}`;
    } finally {
      if (controller === mine) controller = null;
      setBusy(false);
    }

    typing.remove();
    const elapsed = performance.now() - t0;
    const aborted = mine.signal.aborted;
    if (content) {
      const bits = [];
      const n = (timings && timings.predicted_n) || (usage && usage.completion_tokens);
      if (n) bits.push(`${n} tokens`);
      if (timings && timings.predicted_per_second) bits.push(`${fmtRate(timings.predicted_per_second)} t/s`);
      if (ttft !== null) bits.push(`first token ${fmtMs(ttft)}`);
      bits.push(`${fmtMs(elapsed)} total`);
      if (aborted) bits.push("stopped");
      const meta = bits.join(" · ");
      chat.messages.push({ role: "assistant", content, model, meta });
      answer.el.append(h("div.meta", meta));
    } else {
      // Nothing came back: the question stays on screen, faded, but leaves the history
      // (roles must alternate); the answer's place says why there is none.
      chat.messages.splice(chat.messages.indexOf(userMsg), 1);
      user.el.classList.add("unsent");
      user.el.title = "not part of the conversation: no answer came";
      answer.content.remove();
      if (aborted && !failure) answer.el.append(h("div.meta", `stopped before the first token · ${fmtMs(elapsed)} total`));
    }
    if (failure) {
      answer.el.append(h("div.error", { role: "alert" }, `Error: ${failure}`));
    }
    scrollDown();
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (controller) controller.abort();
    else send();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (!controller) send();
    }
  });

  fillModels(store.models);
  store.on("models", fillModels);
  redraw();
  return {
    root,
    shown() {
      scrollDown(true);
      input.focus();
    },
  };
}
