"""Browser tests: the web UI at /ui/ in headless Chromium, driven by Playwright.

The service runs as a subprocess on loopback with fake upstreams (the integration tests'
`start_service` fixture, reused); the browser talks to 127.0.0.1 only. The browser is
Debian's /usr/bin/chromium — Playwright's own browser download is never used — and a
missing Chromium fails these tests: it belongs to the test environment (scripts/test installs it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.integration.conftest import start_service  # noqa: F401  (the fixture, reused)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 15_000  # every wait is bounded: auto-waiting actions and expect() assertions

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A page in a fresh headless Chromium (own profile directory), light theme, 1280x800.

    Uncaught JavaScript errors on the page fail the test.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) for the browser tests")
    errors: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
            color_scheme="light",
            locale="en-US",
            service_workers="block",
            timeout=30_000,
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
        finally:
            context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


Screenshot = Callable[[Page, str], None]


@pytest.fixture(scope="session")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: $LLAMA_SWAP_SCREENSHOTS (scripts/screenshots sets it), else
    this run's pytest temporary directory — a test run never changes tracked files."""
    chosen = os.environ.get("LLAMA_SWAP_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def screenshot(screenshots_dir: Path) -> Screenshot:
    """screenshot(page, name): <screenshots_dir>/<name>.png, toasts hidden and animations frozen."""

    def take(page: Page, name: str) -> None:
        page.screenshot(path=screenshots_dir / f"{name}.png", animations="disabled", style=".toasts { display: none; }")

    return take
