"""The web UI, as a user drives it: load a model, watch its logs, chat with it, find the
request in Activity (and cancel one in flight), unload it. Its screenshots are the README's
(`scripts/screenshots` refreshes them); a plain run writes them to a temporary directory."""

from __future__ import annotations

import re
import threading
from typing import Callable

import httpx
from playwright.sync_api import Page, expect

from llama_swap import __version__
from tests.browser.conftest import Screenshot
from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService, wait_until

CHUNKS = 8  # the fake streams "tok0 " … "tok7 ", a quarter second apart
ANSWER = " ".join(f"tok{i}" for i in range(CHUNKS))

CONFIG = f"""
    healthCheckTimeout: 30
    models:
      chat:
        name: Chat
        description: the test suite's fake OpenAI-compatible server
        cmd: {fake_cmd(name="chat", chunks=CHUNKS, chunk_delay=0.25)}
        aliases: [gpt-4o-mini, fast]
        capabilities: {{in: [text, image], out: [text], tools: true, context: 8192}}
      org/embed:
        name: Embeddings
        description: a model id with a slash in it
        cmd: {fake_cmd(name="embed")}
        capabilities: {{reranker: true}}
      broken:
        description: crashes while loading its weights
        cmd: {fake_cmd(name="broken", crash_at_start=True)}
    """

StartService = Callable[[str], RunningService]


def nav(page: Page, name: str) -> None:
    page.locator("nav.nav").get_by_role("link", name=name).click()


def model_row(page: Page, model_id: str):
    return page.locator(f'tr[data-model="{model_id}"]')


class SlowStream:
    """A long streamed chat request made outside the browser, to be seen in flight."""

    def __init__(self, service: RunningService) -> None:
        self.received = b""
        self.ended = threading.Event()
        self._client = httpx.Client(base_url=service.url, timeout=httpx.Timeout(60.0))
        body = {"model": "chat", "messages": HI, "stream": True, "n_chunks": 600, "chunk_delay": 0.05}
        self._thread = threading.Thread(target=self._run, args=(body,), daemon=True)
        self._thread.start()

    def _run(self, body: dict) -> None:
        try:
            with self._client.stream("POST", "/v1/chat/completions", json=body) as response:
                for chunk in response.iter_raw():
                    self.received += chunk
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        self._client.close()


def test_load_logs_chat_activity_unload(start_service: StartService, page: Page, screenshot: Screenshot) -> None:
    service = start_service(CONFIG)

    # The service's root opens the UI; the header is live.
    page.goto(service.url + "/", wait_until="domcontentloaded")
    expect(page).to_have_url(re.compile(r"/ui/#/models$"))
    expect(page.locator("#conn")).to_have_text("Connected")
    expect(page.locator("#version")).to_have_text(f"v{__version__}")

    # Models: every model, with its aliases and capabilities; Load turns it ready.
    row = model_row(page, "chat")
    expect(page.locator("table.models tbody tr")).to_have_count(3)
    expect(row.locator(".state-text")).to_have_text("stopped")
    expect(row.locator(".chip")).to_contain_text(["gpt-4o-mini", "fast", "ctx 8,192"])
    expect(row.locator(".tag")).to_contain_text(["function calling", "vision"])
    row.get_by_role("button", name="Load", exact=True).click()
    expect(row.locator(".state-text")).to_have_text("ready")
    expect(row.get_by_role("button", name="Load", exact=True)).to_be_disabled()
    expect(row.get_by_role("button", name="Unload", exact=True)).to_be_enabled()
    screenshot(page, "models")

    # Logs: the proxy's and the upstream's lines, history and live.
    nav(page, "Logs")
    proxy = page.get_by_test_id("log-proxy").locator(".log-body")
    upstream = page.get_by_test_id("log-upstream").locator(".log-body")
    expect(proxy).to_contain_text(re.compile(r"\[chat\] ready after"))
    expect(upstream).to_contain_text(re.compile(r"fake upstream chat listening on 127\.0\.0\.1:\d+"))
    assert service.chat("chat").status_code == 200  # a request while the page is open …
    expect(upstream).to_contain_text("chat POST /v1/chat/completions")  # … shows up live
    screenshot(page, "logs")

    # The model's own log stream, from its row on the Models page.
    nav(page, "Models")
    row.get_by_role("link", name="Logs").click()
    expect(page).to_have_url(re.compile(r"#/logs/model/chat$"))
    model_log = page.get_by_test_id("log-model")
    expect(model_log.locator(".stream-state")).to_have_attribute("data-state", "live")
    expect(model_log.locator(".log-body")).to_contain_text("fake upstream chat listening on")

    # Playground: the answer streams in, a chunk at a time.
    nav(page, "Playground")
    page.get_by_label("Model", exact=True).select_option("chat")
    page.get_by_label("Message", exact=True).fill("Say hello")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".bubble")).to_contain_text("tok0")
    expect(page.locator("#pg-send")).to_have_text("Stop")  # still streaming
    expect(answer.locator(".bubble")).to_have_text(ANSWER)
    expect(page.locator("#pg-send")).to_have_text("Send")
    expect(answer.locator(".meta")).to_contain_text(f"{CHUNKS} tokens")
    expect(page.locator(".msg.user .bubble")).to_have_text("Say hello")
    screenshot(page, "playground")

    # Activity: the chat is in the history; a long request is in flight and can be cancelled.
    slow = SlowStream(service)
    try:
        nav(page, "Activity")
        history = page.locator("table.history tbody tr")
        expect(history).to_have_count(2)  # the request made from the Logs page, then the chat
        newest = history.first
        expect(newest.locator(".path")).to_have_text("/v1/chat/completions")
        expect(newest.locator("td").nth(1)).to_have_text("chat")
        expect(newest.locator(".status")).to_have_text("200")
        expect(newest.locator("td").nth(5)).to_have_text(str(CHUNKS))  # generated tokens
        inflight = page.locator("table.inflight tbody tr[data-id]")
        expect(inflight).to_have_count(1)
        expect(inflight).to_contain_text("/v1/chat/completions")
        expect(inflight.locator("td").nth(6)).not_to_have_text("0 B")  # bytes streamed so far
        expect(page.locator("#inflight-count")).to_have_text("1")
        screenshot(page, "activity")
        inflight.get_by_role("button", name="Cancel").click()
        expect(inflight).to_have_count(0)
        expect(page.locator("table.inflight")).to_contain_text("No requests in flight.")
        assert slow.ended.wait(10), "the cancelled request's stream did not end"
        assert b"tok599" not in slow.received
        # The cancelled request arrives in the history live, newest first.
        expect(history).to_have_count(3)
        cancelled = history.first.locator(".status")
        expect(cancelled).to_have_attribute("title", re.compile("cancel"))
        expect(cancelled).to_have_class(re.compile(r"\b(warn|err)\b"))
    finally:
        slow.close()

    # Unload from the Models page.
    nav(page, "Models")
    row.get_by_role("button", name="Unload", exact=True).click()
    expect(row.locator(".state-text")).to_have_text("stopped")
    expect(row.get_by_role("button", name="Load", exact=True)).to_be_enabled()
    assert service.health()["models"].get("chat", {}).get("status") != "running"


def test_slash_ids_failures_and_errors(start_service: StartService, page: Page) -> None:
    service = start_service(CONFIG)
    page.goto(service.url + "/ui/", wait_until="domcontentloaded")

    # An id with a slash loads, unloads, and has its own log stream.
    row = model_row(page, "org/embed")
    row.get_by_role("button", name="Load", exact=True).click()
    expect(row.locator(".state-text")).to_have_text("ready")
    row.get_by_role("link", name="Logs").click()
    expect(page).to_have_url(re.compile(r"#/logs/model/org%2Fembed$"))
    expect(page.get_by_test_id("log-model").locator(".log-body")).to_contain_text("fake upstream embed listening on")
    nav(page, "Models")
    row.get_by_role("button", name="Unload", exact=True).click()
    expect(row.locator(".state-text")).to_have_text("stopped")

    # A model that fails to start shows failed, with its error one click away.
    broken = model_row(page, "broken")
    broken.get_by_role("button", name="Load", exact=True).click()
    expect(broken.locator(".state-text")).to_have_text("failed")
    expect(page.locator(".toast.error")).to_contain_text("simulated crash at start")
    broken.locator("summary").click()
    expect(broken.locator(".model-error")).to_contain_text("simulated failure to load model weights")

    # The playground shows an error answer clearly.
    nav(page, "Playground")
    page.get_by_label("Model", exact=True).select_option("broken")
    page.get_by_label("Message", exact=True).fill("hi")
    page.keyboard.press("Enter")
    error = page.locator(".msg.assistant .error")
    expect(error).to_contain_text(re.compile(r"^Error: 5\d\d: "))
    expect(error).to_contain_text("simulated crash at start")
    expect(page.locator(".msg.user")).to_have_class(re.compile(r"\bunsent\b"))
    expect(page.locator("#pg-send")).to_have_text("Send")

    # Stop ends an answer half-way; what came is kept.
    page.get_by_label("Model", exact=True).select_option("chat")
    page.get_by_label("Message", exact=True).fill("count")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".bubble")).to_contain_text("tok0")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#pg-send")).to_have_text("Send")
    expect(answer.locator(".meta")).to_contain_text("stopped")
    expect(answer.locator(".bubble")).not_to_contain_text(f"tok{CHUNKS - 1}")

    # Unload all stops everything that runs.
    nav(page, "Models")
    chat = model_row(page, "chat")
    expect(chat.locator(".state-text")).to_have_text("ready")  # the playground loaded it
    page.get_by_role("button", name="Unload all").click()
    expect(chat.locator(".state-text")).to_have_text("stopped")
    expect(page.get_by_role("button", name="Unload all")).to_be_disabled()

    # A deep link without a hash opens that page.
    page.goto(service.url + "/ui/activity", wait_until="domcontentloaded")
    expect(page).to_have_url(re.compile(r"/ui/#/activity$"))
    expect(page.get_by_role("heading", name="History")).to_be_visible()


def test_ansi_colours_and_escaping(start_service: StartService, page: Page) -> None:
    """Log text: SGR colours become spans, HTML stays text, sequences split across chunks work."""
    service = start_service(CONFIG)
    page.goto(service.url + "/ui/#/logs", wait_until="domcontentloaded")
    result = page.evaluate(
        """async () => {
            const { AnsiParser } = await import("./ansi.js");
            const render = (...chunks) => {
                const parser = new AnsiParser(), div = document.createElement("div");
                for (const c of chunks) div.append(parser.push(c).fragment);
                return div.innerHTML;
            };
            return {
                colours: render("\\x1b[31mred\\x1b[0m plain \\x1b[1;92mbold green\\x1b[39m bold\\x1b[0m"),
                html: render("<b>not bold</b> & \\x1b[38;5;196mx\\x1b[0m"),
                split: render("a\\x1b[3", "4mblue\\x1b", "[0mb\\x1b[2K\\r\\n"),
            };
        }"""
    )
    assert result["colours"] == (
        '<span class="fg1">red</span> plain <span class="ansi-b fg10">bold green</span>'
        '<span class="ansi-b"> bold</span>'
    )
    assert result["html"] == '&lt;b&gt;not bold&lt;/b&gt; &amp; <span style="color: rgb(255, 0, 0);">x</span>'
    assert result["split"] == 'a<span class="fg4">blue</span>b\n'


def test_log_pane_cap_and_sse_parser(start_service: StartService, page: Page) -> None:
    """A log pane keeps ~200 KB, cut at a line start; the playground's SSE reader copes with
    events split anywhere, CRLF line ends, comments and multi-line data."""
    service = start_service(CONFIG)
    page.goto(service.url + "/ui/#/logs", wait_until="domcontentloaded")
    result = page.evaluate(
        """async () => {
            const { LogView } = await import("./logview.js");
            const view = new LogView({ title: "test" });
            document.body.append(view.el);
            for (let i = 0; i < 5000; i++) view.append(`line ${i} ${"x".repeat(60)}\\n`);
            view.flush();
            const text = view.body.textContent;

            const { sseEvents } = await import("./playground.js");
            const chunks = ['data: {"a":', '1}\\r\\n\\r\\n: comment\\n', 'event: error\\ndata: x\\ndata: y\\n\\n', "data: [DONE]"];
            const body = new ReadableStream({ start(c) {
                for (const s of chunks) c.enqueue(new TextEncoder().encode(s));
                c.close();
            } });
            const events = [];
            for await (const ev of sseEvents(body)) events.push(ev);
            return { length: text.length, head: text.slice(0, 5), tail: text.slice(-80), events };
        }"""
    )
    assert 190 * 1024 < result["length"] <= 200 * 1024
    assert result["head"] == "line "
    assert result["tail"].endswith(f"line 4999 {'x' * 60}\n")
    assert result["events"] == [
        {"event": "message", "data": '{"a":1}'},
        {"event": "error", "data": "x\ny"},
        {"event": "message", "data": "[DONE]"},
    ]


def test_the_profile_picker_switches_the_active_profile(start_service: StartService, page: Page) -> None:
    service = start_service(CONFIG + """
    profiles:
      big-day:
        description: helper goes to the embeddings model
        pins: {helper: org/embed}
      off:
        pins: {fast: ""}
    """)
    page.goto(service.url + "/ui/", wait_until="domcontentloaded")
    picker = page.locator("#profile")
    expect(picker).to_be_visible()
    expect(picker).to_have_value("")
    picker.select_option("big-day")
    def active_is(name: str | None) -> bool:
        return service.http.get("/api/profiles").json()["active"] == name

    assert wait_until(lambda: active_is("big-day"))
    assert service.chat("helper").headers["x-upstream-name"] == "embed"
    service.http.put("/api/profiles/active", json={"name": "off"})  # switched elsewhere: the picker follows
    expect(picker).to_have_value("off")
    picker.select_option("")
    assert wait_until(lambda: active_is(None))


def test_no_profile_picker_without_profiles(start_service: StartService, page: Page) -> None:
    service = start_service(CONFIG)
    page.goto(service.url + "/ui/", wait_until="domcontentloaded")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(page.locator("#profile")).to_be_hidden()


def test_selectors_and_peer_models_are_shown_on_the_models_page(start_service: StartService, page: Page) -> None:
    service = start_service(CONFIG + """
    groups:
      pair: {swap: false, members: [chat, org/embed]}
    selectors:
      either: {strategy: spillover, targets: [chat, org/embed], settings: {spillover: 3}, name: Either one}
    peers:
      box-b:
        proxy: http://127.0.0.1:9
        models: [llama-70b, whisper]
    """)
    page.goto(service.url + "/ui/#/models", wait_until="domcontentloaded")
    expect(page.locator('[data-selector="either"]')).to_contain_text("spillover 3")
    expect(page.locator('[data-selector="either"]')).to_contain_text("chat, org/embed")
    peer = page.locator('[data-peer="box-b"]')
    expect(peer).to_contain_text("box-b/llama-70b")
    expect(peer).to_contain_text("box-b/whisper")
    expect(model_row(page, "box-b/llama-70b")).to_have_count(0)  # not a local model: no Load button


def test_a_capture_opens_from_the_activity_page(start_service: StartService, page: Page, screenshot: Screenshot) -> None:
    service = start_service(f"captureBuffer: 1\nmodels:\n  chat:\n    cmd: {fake_cmd(name='chat', chunks=3)}\n")
    assert service.chat("chat", stream=True).status_code == 200
    page.goto(service.url + "/ui/#/activity", wait_until="domcontentloaded")
    row = page.locator("table.history tbody tr").first
    row.get_by_role("button", name=re.compile(r"View capture \d+")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator(".path")).to_have_text("/v1/chat/completions")
    request = dialog.get_by_role("region", name="Request")
    expect(request.locator("pre")).to_contain_text('"model": "chat"')  # JSON pretty-printed
    response = dialog.get_by_role("region", name="Response")
    expect(response.locator("h3")).to_contain_text("200")
    events = response.locator("ol.capture-events > li")
    expect(events.last).to_have_text("data: [DONE]")
    expect(events.first).to_contain_text('"object": "chat.completion.chunk"')
    response.get_by_text(re.compile(r"Headers \(\d+\)")).click()
    expect(response.locator("table.capture-headers")).to_contain_text("text/event-stream")
    screenshot(page, "capture")
    dialog.get_by_role("button", name="Close").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
