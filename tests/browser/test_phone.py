"""The web UI at a phone's width (420 and 360 CSS pixels): every page fits the screen with
its header and theme button; Stop in the playground, before and after the first token; the
theme button's first click, under a light and under a dark system theme."""

from __future__ import annotations

import re
from typing import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Screenshot
from tests.fakes import fake_cmd
from tests.integration.conftest import RunningService

PHONE_HEIGHT = 800
LIGHT_BG = "rgb(245, 246, 248)"  # the light palette's --bg
DARK_BG = "rgb(14, 17, 22)"  # the dark palette's --bg

CONFIG = f"""
    healthCheckTimeout: 60
    captureBuffer: 1
    models:
      chat:
        name: Chat
        description: the test suite's fake OpenAI-compatible server, with a long description
        cmd: {fake_cmd(name="chat", chunks=8, chunk_delay=0.25)}
        aliases: [gpt-4o-mini, fast, a-rather-long-alias-name]
        capabilities: {{in: [text, image], out: [text], tools: true, context: 8192}}
      broken:
        description: crashes while loading its weights
        cmd: {fake_cmd(name="broken", crash_at_start=True)}
      slow-start:
        description: takes half a minute to listen, so no first token comes soon
        cmd: {fake_cmd(name="slow-start", start_delay=30)}
    profiles:
      a-long-profile-name:
        pins: {{helper: chat}}
    groups:
      pair: {{swap: false, members: [chat, broken]}}
    selectors:
      either: {{strategy: spillover, targets: [chat, broken], settings: {{spillover: 3}}}}
    peers:
      box-b:
        proxy: http://127.0.0.1:9
        models: [llama-70b, whisper]
    """

StartService = Callable[[str], RunningService]


def on_phone(page: Page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": PHONE_HEIGHT})


def assert_fits(page: Page, what: str) -> None:
    """No horizontal scrolling; the header's page links and theme button are on screen, and
    the theme button takes a click (visible, enabled, not covered)."""
    width, inner = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert width <= inner, f"{what}: the page is {width} px wide on a {inner} px screen"
    toggle = page.locator("#theme-toggle")
    for element in [toggle, *page.locator("nav.nav a").all()]:
        box = element.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= inner, f"{what}: {element} is off screen: {box}"
        assert 0 <= box["y"] and box["y"] + box["height"] <= PHONE_HEIGHT, f"{what}: {element} is off screen: {box}"
    toggle.click(trial=True)


@pytest.mark.parametrize("width", [420, 360])
def test_every_page_fits_a_phone(start_service: StartService, page: Page, screenshot: Screenshot, width: int) -> None:
    service = start_service(CONFIG)
    assert service.chat("chat", stream=True).status_code == 200  # a request in Activity, with a capture
    on_phone(page, width)
    page.goto(service.url + "/ui/#/models", wait_until="domcontentloaded")
    expect(page.locator("#conn")).to_have_text("Connected")
    expect(page.locator("#profile")).to_be_visible()  # the header's widest content: profile picker too

    # Models: a failed model's error opened, the selectors and the peers' models below.
    broken = page.locator('tr[data-model="broken"]')
    broken.get_by_role("button", name="Load", exact=True).click()
    expect(broken.locator(".state-text")).to_have_text("failed")
    broken.locator("summary").click()
    expect(broken.locator(".model-error")).to_be_visible()
    expect(page.locator('[data-peer="box-b"]')).to_contain_text("box-b/whisper")
    chat = page.locator('tr[data-model="chat"]')
    expect(chat.get_by_role("button", name="Unload", exact=True)).to_be_in_viewport()
    assert_fits(page, "models")
    screenshot(page, f"phone{width}-models")

    # Logs: both panes, each alone, and one model's stream.
    listening = "fake upstream chat listening on"
    for route, pane, line in [("logs", "log-upstream", listening), ("logs/proxy", "log-proxy", "[chat] ready after"),
                              ("logs/upstream", "log-upstream", listening), ("logs/model/chat", "log-model", listening)]:
        page.goto(f"{service.url}/ui/#/{route}")
        expect(page.get_by_test_id(pane).locator(".log-body")).to_contain_text(line)
        assert_fits(page, route)
    screenshot(page, f"phone{width}-logs")

    # Activity, and a request's capture.
    page.goto(service.url + "/ui/#/activity")
    row = page.locator("table.history tbody tr").first
    expect(row.locator(".status")).to_have_text("200")
    assert_fits(page, "activity")
    screenshot(page, f"phone{width}-activity")
    row.get_by_role("button", name=re.compile(r"View capture \d+")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("ol.capture-events > li").last).to_have_text("data: [DONE]")
    page_width, inner = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert page_width <= inner, f"capture dialog: the page is {page_width} px wide on a {inner} px screen"
    dialog.get_by_role("button", name="Close").click()

    # Playground, with an exchange in it.
    page.goto(service.url + "/ui/#/playground")
    page.get_by_label("Model", exact=True).select_option("chat")
    page.get_by_label("Message", exact=True).fill("Say hello")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg.assistant .meta")).to_contain_text("8 tokens")
    expect(page.locator("#pg-send")).to_be_in_viewport()
    assert_fits(page, "playground")
    screenshot(page, f"phone{width}-playground")


def test_stop_before_and_after_the_first_token(start_service: StartService, page: Page) -> None:
    service = start_service(CONFIG)
    on_phone(page, 420)
    page.goto(service.url + "/ui/#/playground", wait_until="domcontentloaded")
    model = page.get_by_label("Model", exact=True)
    message = page.get_by_label("Message", exact=True)
    send = page.locator("#pg-send")

    # After some tokens: the partial answer stays, labelled "stopped".
    model.select_option("chat")
    message.fill("count")
    send.click()
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".bubble")).to_contain_text("tok0")
    page.get_by_role("button", name="Stop").click()
    expect(send).to_have_text("Send")
    expect(answer.locator(".meta")).to_contain_text("stopped")
    expect(answer.locator(".bubble")).to_contain_text("tok0")
    expect(answer.locator(".bubble")).not_to_contain_text("tok7")

    # Before the first token (the model is still starting): the question stays, and its
    # answer's place says "stopped".
    model.select_option("slow-start")
    message.fill("are you there?")
    send.click()
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".typing")).to_be_visible()  # waiting: no token yet
    page.get_by_role("button", name="Stop").click()
    expect(send).to_have_text("Send")
    question = page.locator(".msg.user").last
    expect(question.locator(".bubble")).to_have_text("are you there?")
    expect(question).to_be_visible()
    expect(answer.locator(".meta")).to_have_text(re.compile(r"^stopped before the first token · .+ total$"))
    expect(answer.locator(".meta")).to_be_visible()
    expect(answer.locator(".bubble")).to_have_count(0)
    expect(page.locator(".msg.assistant .meta")).to_have_count(2)  # the earlier answer is untouched
    assert_fits(page, "playground after Stop")


@pytest.mark.parametrize(
    ("system", "shown", "other"), [("light", LIGHT_BG, DARK_BG), ("dark", DARK_BG, LIGHT_BG)], ids=["light-system", "dark-system"]
)
def test_the_first_click_on_the_theme_button_shows_the_other_theme(
    start_service: StartService, page: Page, system: str, shown: str, other: str
) -> None:
    service = start_service(CONFIG)
    on_phone(page, 420)
    page.emulate_media(color_scheme=system)  # type: ignore[arg-type]
    page.goto(service.url + "/ui/", wait_until="domcontentloaded")
    body = page.locator("body")
    toggle = page.locator("#theme-toggle")
    expect(body).to_have_css("background-color", shown)  # no choice stored: the system's theme

    toggle.click()
    expect(body).to_have_css("background-color", other)
    page.reload(wait_until="domcontentloaded")
    expect(body).to_have_css("background-color", other)  # the choice is kept
    page.emulate_media(color_scheme="dark" if system == "light" else "light")
    expect(body).to_have_css("background-color", other)  # … whatever the system says now

    # The second click comes back to the system's theme, and follows the system again.
    page.emulate_media(color_scheme=system)  # type: ignore[arg-type]
    toggle.click()
    expect(body).to_have_css("background-color", shown)
    page.emulate_media(color_scheme="dark" if system == "light" else "light")
    expect(body).to_have_css("background-color", other)  # followed live
