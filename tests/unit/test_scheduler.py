"""The scheduler as a pure state machine: no processes, no sleeps."""

from __future__ import annotations

import pytest

from llama_swap.routing.policy import OneAtATime
from llama_swap.routing.scheduler import (
    AbortStart,
    Fail,
    Grant,
    ModelState,
    Retired,
    Scheduler,
    StartSwap,
    StopModel,
    UnknownModel,
)


def make(limits: dict[str, int] | None = None, priorities: dict[str, int] | None = None) -> Scheduler:
    return Scheduler(["a", "b", "c"], OneAtATime(), limits=limits, priorities=priorities)


def ready(s: Scheduler, model: str, req: int) -> None:
    """Bring ``model`` to ready through request ``req`` (granted, still in flight)."""
    [start] = s.request(req, model)
    assert isinstance(start, StartSwap) and start.target == model
    assert s.swap_done(model, None) == [Grant(req)]


def test_first_request_starts_the_model_and_is_granted_when_ready() -> None:
    s = make()
    assert s.request(1, "a") == [StartSwap("a", frozenset())]
    assert s.state("a") is ModelState.STARTING
    assert s.swap_done("a", None) == [Grant(1)]
    assert s.state("a") is ModelState.READY
    assert s.inflight("a") == 1


def test_ready_model_is_served_at_once() -> None:
    s = make()
    ready(s, "a", 1)
    assert s.request(2, "a") == [Grant(2)]
    assert s.inflight("a") == 2


def test_serve_now_grants_what_request_would_grant_at_once() -> None:
    s = make(limits={"a": 2})
    assert not s.serve_now(1, "a")  # stopped: a start is needed
    ready(s, "a", 1)
    assert s.serve_now(2, "a") and s.inflight("a") == 2
    assert not s.serve_now(3, "a")  # at its limit: `request` answers the 429
    assert s.request(3, "a")[0] == Fail(3, 429, "too many requests for model 'a' (concurrency limit 2)")
    assert s.finished(2) == [] and s.inflight("a") == 1 and s.idle("a") is False
    assert s.finished(1) == [] and s.idle("a")


def test_serve_now_defers_to_the_queue_and_to_swaps() -> None:
    s = make()
    ready(s, "a", 1)
    assert s.request(2, "b") == []  # queued: it must evict "a", which is busy
    assert not s.serve_now(3, "a")  # a newcomer for "a" may not jump ahead of it
    s.finished(1)
    assert not s.serve_now(4, "a")  # "a" is being stopped for "b"
    s.shutdown()
    assert not s.serve_now(5, "b")


def test_requests_beyond_the_default_limit_of_ten_are_rejected_while_joining() -> None:
    s = make()
    actions = [a for req in range(1, 13) for a in s.request(req, "a")]
    assert actions[0] == StartSwap("a", frozenset())
    assert [a.req for a in actions[1:] if isinstance(a, Fail) and a.status == 429] == [11, 12]
    assert s.swap_done("a", None) == [Grant(r) for r in range(1, 11)]


def test_sixteen_concurrent_first_requests_start_one_process_when_limit_allows() -> None:
    s = make(limits={"a": 20})
    starts = [a for req in range(16) for a in s.request(req, "a") if isinstance(a, StartSwap)]
    assert starts == [StartSwap("a", frozenset())]
    assert s.swap_done("a", None) == [Grant(r) for r in range(16)]


def test_swap_stops_the_idle_running_model() -> None:
    s = make()
    ready(s, "a", 1)
    s.finished(1)
    assert s.request(2, "b") == [StartSwap("b", frozenset({"a"}))]
    assert s.state("a") is ModelState.STOPPING
    assert s.swap_done("b", None) == [Grant(2)]
    assert s.state("a") is ModelState.STOPPED
    assert s.state("b") is ModelState.READY


def test_swap_waits_for_in_flight_requests_to_finish() -> None:
    s = make()
    ready(s, "a", 1)
    assert s.request(2, "b") == []  # a is busy: b waits
    assert s.queued() == [(2, "b")]
    assert s.finished(1) == [StartSwap("b", frozenset({"a"}))]
    assert s.queued() == []


def test_newcomers_for_a_busy_model_wait_behind_a_queued_swap() -> None:
    s = make()
    ready(s, "a", 1)
    s.request(2, "b")
    assert s.request(3, "a") == []  # would starve b otherwise
    assert s.finished(1) == [StartSwap("b", frozenset({"a"}))]
    assert s.swap_done("b", None) == [Grant(2)]
    assert s.queued() == [(3, "a")]
    assert s.finished(2) == [StartSwap("a", frozenset({"b"}))]
    assert s.swap_done("a", None) == [Grant(3)]


def test_queue_collates_requests_by_model() -> None:
    s = make(limits={"a": 10, "b": 10, "c": 10})
    ready(s, "c", 0)
    for req, model in enumerate(["a", "b", "a", "b"], start=1):
        assert s.request(req, model) == []
    assert s.finished(0) == [StartSwap("a", frozenset({"c"}))]
    assert s.swap_done("a", None) == [Grant(1), Grant(3)]
    s.finished(1)
    assert s.finished(3) == [StartSwap("b", frozenset({"a"}))]
    assert s.swap_done("b", None) == [Grant(2), Grant(4)]


def test_failed_start_fails_every_waiter_and_marks_failed() -> None:
    s = make()
    s.request(1, "a")
    s.request(2, "a")
    assert s.swap_done("a", "boom") == [Fail(1, 503, "boom"), Fail(2, 503, "boom")]
    assert s.state("a") is ModelState.FAILED
    # the next request retries the start
    assert s.request(3, "a") == [StartSwap("a", frozenset())]


def test_concurrency_limit_rejects_with_429_before_anything_starts() -> None:
    s = make(limits={"a": 2})
    s.request(1, "a")
    s.request(2, "a")
    [rejected] = s.request(3, "a")
    assert isinstance(rejected, Fail) and rejected.status == 429
    assert "concurrency limit 2" in rejected.message
    # uncounted requests (load endpoint) are not limited
    assert s.request(4, "a", counted=False) == []


def test_finished_requests_release_their_reservation() -> None:
    s = make(limits={"a": 1})
    ready(s, "a", 1)
    assert isinstance(s.request(2, "a")[0], Fail)
    s.finished(1)
    assert s.request(3, "a") == [Grant(3)]


def test_cancel_removes_a_queued_request() -> None:
    s = make()
    ready(s, "a", 1)
    s.request(2, "b")
    assert s.cancel(2) == []
    assert s.queued() == []
    assert s.finished(1) == []  # nobody wants b any more: no swap
    assert s.state("a") is ModelState.READY


def test_cancel_of_a_swap_waiter_keeps_the_swap() -> None:
    s = make()
    s.request(1, "a")
    s.request(2, "a")
    s.cancel(1)
    assert s.swap_done("a", None) == [Grant(2)]


def test_crash_marks_stopped_and_next_request_restarts() -> None:
    s = make()
    ready(s, "a", 1)
    s.finished(1)
    s.exited("a")
    assert s.state("a") is ModelState.STOPPED
    assert s.request(2, "a") == [StartSwap("a", frozenset())]


def test_unload_ready_model_and_queued_clients_fail() -> None:
    s = make()
    ready(s, "a", 1)
    s.request(2, "b")
    actions = s.unload(["b", "a"], "model unloaded")
    assert actions == [Fail(2, 503, "model unloaded"), StopModel("a")]
    assert s.state("a") is ModelState.STOPPING
    assert s.request(3, "a") == []  # waits for the stop to finish
    assert s.stopped("a") == [StartSwap("a", frozenset())]


def test_unload_of_a_starting_model_aborts_its_start() -> None:
    s = make()
    s.request(1, "a")
    assert s.unload(["a"], "model unloaded") == [AbortStart("a")]
    assert s.swap_done("a", "aborted") == [Fail(1, 503, "aborted")]


def test_shutdown_fails_queued_and_refuses_new_requests() -> None:
    s = make()
    ready(s, "a", 1)
    s.request(2, "b")
    assert s.shutdown() == [Fail(2, 503, "llama-swap is shutting down")]
    assert s.request(3, "a") == [Fail(3, 503, "llama-swap is shutting down")]


def test_priority_orders_the_queue() -> None:
    s = make(priorities={"c": 5})
    ready(s, "a", 1)
    s.request(2, "b")
    s.request(3, "c")
    assert s.queued() == [(3, "c"), (2, "b")]
    assert s.finished(1) == [StartSwap("c", frozenset({"a"}))]


def test_unknown_model_raises() -> None:
    with pytest.raises(UnknownModel):
        make().request(1, "zzz")


def test_ttl_expiry_stops_only_an_idle_ready_model() -> None:
    s = make()
    ready(s, "a", 1)
    assert s.expire("a") == []  # a request is in flight
    s.finished(1)
    assert s.idle("a")
    assert s.expire("a") == [StopModel("a")]
    assert s.state("a") is ModelState.STOPPING
    assert s.expire("b") == []


def test_queue_position_is_one_based_by_model() -> None:
    s = make()
    ready(s, "a", 1)
    s.request(2, "b")
    s.request(3, "c")
    assert s.queue_position("b") == 1
    assert s.queue_position("c") == 2
    assert s.queue_position("a") is None


def reconfigure(s: Scheduler, models: list[str], changed: list[str] = ()) -> list:
    return s.configure({m: 10 for m in models}, OneAtATime(), {}, changed)


def test_reload_adds_models_usable_at_once() -> None:
    s = make()
    assert reconfigure(s, ["a", "b", "c", "d"]) == []
    assert s.request(1, "d") == [StartSwap("d", frozenset())]


def test_reload_switches_a_stopped_changed_model_at_once() -> None:
    s = make()
    assert reconfigure(s, ["a", "b", "c"], changed=["a"]) == [Retired("a", removed=False)]


def test_reload_lets_a_busy_changed_model_finish_then_restarts_it() -> None:
    s = make()
    ready(s, "a", 1)
    assert reconfigure(s, ["a", "b", "c"], changed=["a"]) == []
    assert s.request(2, "a") == []  # new requests wait for the new config
    assert s.finished(1) == [StopModel("a")]
    assert s.stopped("a") == [Retired("a", removed=False), StartSwap("a", frozenset())]
    assert s.swap_done("a", None) == [Grant(2)]


def test_reload_keeps_an_unchanged_model_serving() -> None:
    s = make()
    ready(s, "a", 1)
    assert reconfigure(s, ["a", "b", "c"]) == []
    assert s.request(2, "a") == [Grant(2)]


def test_reload_removes_a_model_after_its_requests_finish() -> None:
    s = make()
    ready(s, "a", 1)
    s.request(2, "b")  # queued behind busy a
    assert reconfigure(s, ["a", "c"]) == [
        Fail(2, 404, "model 'b' was removed from the config"),
        Retired("b", removed=True),
    ]
    assert reconfigure(s, ["c"]) == []
    assert s.finished(1) == [StopModel("a")]
    assert s.stopped("a") == [Retired("a", removed=True)]
    with pytest.raises(UnknownModel):
        s.request(3, "a")


def test_crash_of_a_removed_model_with_requests_in_flight() -> None:
    s = make()
    ready(s, "a", 1)
    reconfigure(s, ["b", "c"])
    assert s.exited("a") == [Retired("a", removed=True)]
    assert s.finished(1) == []
