"""The web UI behind `apiKeys`, in Chromium: the Basic challenge, then the whole UI —
its scripts, /api calls and the /api/events stream — works with the key as the password."""

from __future__ import annotations

import os
from typing import Any, Callable

import pytest
from playwright.sync_api import Error, expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, VIEWPORT
from tests.fakes import fake_cmd
from tests.integration.conftest import RunningService

KEY = "sk-browser-check-5150"
CONFIG = f"""
    apiKeys: [{KEY}]
    models:
      chat:
        cmd: {fake_cmd(name="chat")}
    """


def test_ui_with_basic_auth(start_service: Callable[[str], RunningService]) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium for the browser tests")
    service = start_service(CONFIG)
    host = service.url.split("//", 1)[1]
    refused: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # No credentials: the challenge (headless Chromium cannot show the prompt).
            context = browser.new_context(viewport=VIEWPORT)
            with pytest.raises(Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
                context.new_page().goto(service.url + "/ui/")
            context.close()

            # What the prompt gives: credentials the browser answers each challenge with.
            context = browser.new_context(viewport=VIEWPORT, http_credentials={"username": "me", "password": KEY})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.on("response", lambda r: refused.append(r.url) if r.status >= 400 else None)
            errors: list[Any] = []
            page.on("pageerror", lambda exc: errors.append(exc))
            page.goto(service.url + "/", wait_until="domcontentloaded")
            expect(page.locator("#conn")).to_have_text("Connected", timeout=TIMEOUT_MS)  # /api/events
            row = page.locator('tr[data-model="chat"]')
            row.get_by_role("button", name="Load", exact=True).click()
            expect(row.locator(".state-text")).to_have_text("ready", timeout=TIMEOUT_MS)  # live, via the events
            assert not errors
            context.close()

            # A bookmarked http://user:key@host/ URL works too.
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            page.goto(f"http://me:{KEY}@{host}/ui/", wait_until="domcontentloaded")
            expect(page.locator("#conn")).to_have_text("Connected", timeout=TIMEOUT_MS)
            context.close()
        finally:
            browser.close()
    assert refused == []  # every request of the UI got through (challenges are answered inside Chromium)
    assert KEY not in service.log()
