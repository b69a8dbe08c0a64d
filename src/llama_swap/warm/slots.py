"""llama-server's slot API, as warm swaps use it (server started with `--slot-save-path`).

`GET /slots` lists the slots (a slot that served a request has `n_prompt_tokens`; one busy
with a request has `is_processing`); `POST /slots/{id}?action=save|restore` with
`{"filename": …}` writes or reads a file in the save path and answers `n_saved`/`n_written`
or `n_restored`/`n_read`. A failure is raised as `SlotError` with llama-server's message.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import aiohttp
import orjson


class SlotError(Exception):
    """llama-server refused or could not do a slot action; the message says which and why."""


class Moved(NamedTuple):
    """A slot saved or restored: its tokens and the bytes written or read."""

    tokens: int
    size: int


def to_save(slots: list[dict[str, Any]]) -> list[int]:
    """The slots worth saving: those holding tokens that no request is using right now."""
    return [
        slot["id"] for slot in slots
        if isinstance(slot.get("id"), int) and (slot.get("n_prompt_tokens") or 0) > 0
        and not slot.get("is_processing")
    ]


async def list_slots(session: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/slots") as resp:
        body = await resp.read()
        if resp.status != 200:
            raise SlotError(f"GET /slots answered {resp.status}: {_message(body)}")
    slots = orjson.loads(body)
    if not isinstance(slots, list):
        raise SlotError("GET /slots did not answer a list of slots")
    return [slot for slot in slots if isinstance(slot, dict)]


async def save(session: aiohttp.ClientSession, base: str, slot: int, filename: str) -> Moved:
    answer = await _act(session, base, slot, "save", filename)
    return Moved(int(answer.get("n_saved", 0)), int(answer.get("n_written", 0)))


async def restore(session: aiohttp.ClientSession, base: str, slot: int, filename: str) -> Moved:
    answer = await _act(session, base, slot, "restore", filename)
    return Moved(int(answer.get("n_restored", 0)), int(answer.get("n_read", 0)))


async def _act(session: aiohttp.ClientSession, base: str, slot: int, action: str, filename: str) -> dict[str, Any]:
    async with session.post(f"{base}/slots/{slot}?action={action}", data=orjson.dumps({"filename": filename}),
                            headers={"Content-Type": "application/json"}) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise SlotError(f"{action} of slot {slot} answered {resp.status}: {_message(body)}")
    answer = orjson.loads(body)
    return answer if isinstance(answer, dict) else {}


def _message(body: bytes) -> str:
    """llama-server's error message (`{"error": {"message": …}}`), else the body's start."""
    try:
        error = orjson.loads(body).get("error")
        return str(error.get("message") if isinstance(error, dict) else error)
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode("utf-8", "replace")
