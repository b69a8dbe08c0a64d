"""The crash back-off: pure, driven with explicit times."""

from __future__ import annotations

import pytest

from llama_swap.routing.backoff import Backoff


def test_unknown_model_may_start() -> None:
    assert Backoff().wait("m", 100.0) == 0.0
    assert Backoff().failures("m") == 0


def test_delay_doubles_per_failure_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=10.0)
    delays = []
    now = 0.0
    for _ in range(6):
        backoff.failed("m", now)
        delays.append(backoff.wait("m", now))
        now += 0.5  # failing again before the model ever stayed up
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0]  # a single failure is retried at once
    assert backoff.failures("m") == 6


def test_wait_counts_down_and_models_are_independent() -> None:
    backoff = Backoff(base=2.0)
    backoff.failed("a", 9.0)
    backoff.failed("a", 10.0)
    assert backoff.wait("a", 11.5) == pytest.approx(0.5)
    assert backoff.wait("a", 12.0) == 0.0
    assert backoff.wait("b", 10.0) == 0.0


def test_crash_soon_after_ready_keeps_counting() -> None:
    backoff = Backoff(base=1.0, stable=30.0)
    backoff.failed("m", 0.0)
    backoff.ready("m", 2.0)
    backoff.failed("m", 5.0)  # up for 3 s only: a crash loop
    assert (backoff.failures("m"), backoff.wait("m", 5.0)) == (2, 1.0)


def test_stable_run_starts_the_count_afresh() -> None:
    backoff = Backoff(base=1.0, stable=30.0)
    for now in (0.0, 1.0, 3.0):
        backoff.failed("m", now)
    backoff.ready("m", 10.0)
    backoff.failed("m", 100.0)
    assert (backoff.failures("m"), backoff.wait("m", 100.0)) == (1, 0.0)


def test_forget_clears_the_model() -> None:
    backoff = Backoff()
    backoff.failed("m", 0.0)
    backoff.failed("m", 0.0)
    backoff.forget("m")
    assert (backoff.failures("m"), backoff.wait("m", 0.0)) == (0, 0.0)


def test_a_successful_start_ends_the_wait_but_keeps_the_count() -> None:
    backoff = Backoff(base=1.0, stable=30.0)
    for now in (0.0, 0.1, 0.2):
        backoff.failed("m", now)
    assert backoff.wait("m", 0.3) > 0
    backoff.ready("m", 0.5)  # e.g. started by an explicit load, or a queued request
    assert backoff.wait("m", 0.6) == 0.0
    backoff.failed("m", 1.0)  # and crashed again soon: still a crash loop
    assert (backoff.failures("m"), backoff.wait("m", 1.0)) == (4, 4.0)
