"""What every client probe shares: the addresses it is given and one line of JSON per check.

A probe runs in its own virtualenv (the client library and nothing of llama-swap), so it
imports only this file. Each check prints {"check", "ok", "detail"}; `scripts/try-clients`
collects them into README's table.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Callable

BASE = os.environ["LLAMA_SWAP_URL"]  # errorFormat: openai
BASE_SIMPLE = os.environ["LLAMA_SWAP_URL_SIMPLE"]  # errorFormat: simple (the default)
UNKNOWN = "no-such-model"
PROMPT = "Name three colours."


def check(name: str, run: Callable[[], Any]) -> None:
    """Run one check; it passes when it returns without raising (its value is the detail)."""
    try:
        detail = run()
        ok = True
    except Exception as exc:  # a client's failure is the result being recorded
        ok, detail = False, f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    print(json.dumps({"check": name, "ok": ok, "detail": str(detail)[:300]}), flush=True)


def expect(condition: bool, detail: str) -> None:
    if not condition:
        raise AssertionError(detail)


def error_names_model(call: Callable[[], Any]) -> str:
    """A request for an unknown model must fail with a message that names the model."""
    try:
        call()
    except Exception as exc:
        text = str(exc)
        expect(UNKNOWN in text, f"the error does not name the model: {text!r}")
        return text
    raise AssertionError("an unknown model did not fail")
