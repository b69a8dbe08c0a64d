"""The Models page shows how much KV cache a model with warm swaps has saved on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from playwright.sync_api import Page, expect

from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService


def test_a_model_with_a_saved_cache_shows_its_size(start_service: Callable[[str], RunningService], page: Page,
                                                   tmp_path: Path) -> None:
    saves = tmp_path / "saves"
    saves.mkdir()
    service = start_service(f"""
        healthCheckTimeout: 15
        warmSwap: true
        warmSwapDir: {json.dumps(str(tmp_path / "warm"))}
        models:
          alpha:
            cmd: {fake_cmd(name="alpha", slot_save_path=str(saves))}
          beta:
            cmd: {fake_cmd(name="beta")}
    """)
    page.goto(service.url + "/ui/#/models", wait_until="domcontentloaded")
    alpha = page.locator("tr", has_text="alpha")
    expect(alpha.locator(".chip.warm")).to_have_text("warm swaps")  # on, nothing saved yet
    expect(page.locator("tr", has_text="beta").locator(".chip.warm")).to_have_count(0)  # not a llama-server
    client = service.openai()
    client.chat.completions.create(model="alpha", messages=HI)
    client.chat.completions.create(model="beta", messages=HI)  # the swap saves alpha's slot
    [saved] = saves.iterdir()
    size = saved.stat().st_size
    assert size < 1024  # the fake's slot files are small: shown in bytes
    expect(alpha.locator(".chip.warm")).to_have_text(f"warm cache {size} B")
