"""`GET /props` naming no model, and `?autoload=`: when the service answers as llama.cpp's router."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from llama_swap.server.router_props import autoload_refused, router_props, wants_router_props


def test_router_props_carry_what_llama_cpp_web_ui_reads() -> None:
    props = router_props("1.2.3")
    assert props["role"] == "router"  # how the web UI tells a router from one model
    assert props["model_path"] == "none" and props["model_alias"] == "llama-swap"
    assert props["default_generation_settings"] == {"params": None, "n_ctx": 0}
    assert props["build_info"] == "llama-swap 1.2.3"
    assert props["models_autoload"] is True and props["max_instances"] == 0


@pytest.mark.parametrize(
    ("query", "running", "router"),
    [
        (None, 1, False),  # as before: the one running model answers
        (None, 0, True),  # was a 400
        (None, 2, True),  # was a 400
        (MultiDict(autoload="false"), 1, True),  # a router client (the web UI always sends it)
        (MultiDict(autoload="true"), 0, True),
        (MultiDict(other="x"), 1, False),
    ],
)
def test_when_props_without_a_model_are_the_routers(query: MultiDict[str] | None, running: int, router: bool) -> None:
    assert wants_router_props(query, running) is router


@pytest.mark.parametrize(
    ("value", "refused"),
    [("false", True), ("0", True), ("no", True), ("true", False), ("1", False), ("", False), (None, False)],
)
def test_autoload_is_on_unless_set_to_something_else_than_true_or_1(value: str | None, refused: bool) -> None:
    query = MultiDict(model="m") if value is None else MultiDict(model="m", autoload=value)
    assert autoload_refused(query) is refused
    assert autoload_refused(None) is False
