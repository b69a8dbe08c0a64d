"""Back-off for models that keep failing, so a crash loop is not restarted on every request.

Pure bookkeeping: the caller passes the time. A model that fails once (to start, or by
crashing while ready) is retried by the next request, as in the Go version; if it fails
again before it ever worked for a while it may not be started by a request for 1 s, then
2 s, 4 s, ... up to `cap`. Worked for a while means: stayed up `stable` seconds, or was
stopped on purpose while ready (swapped out, unloaded, idle) — the caller then `forget`s
it. A start that succeeds ends the wait at once. Explicit loads and a reloaded config are
not subject to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE_SECONDS = 1.0
CAP_SECONDS = 60.0
STABLE_SECONDS = 30.0


@dataclass
class _Record:
    failures: int = 0
    retry_at: float = 0.0
    ready_at: float | None = None


@dataclass
class Backoff:
    base: float = BASE_SECONDS
    cap: float = CAP_SECONDS
    stable: float = STABLE_SECONDS
    _records: dict[str, _Record] = field(default_factory=dict)

    def failed(self, model: str, now: float) -> None:
        """A start failed, or the ready model died on its own."""
        record = self._records.setdefault(model, _Record())
        if record.ready_at is not None and now - record.ready_at >= self.stable:
            record.failures = 0
        record.failures += 1
        record.ready_at = None
        if record.failures > 1:
            record.retry_at = now + min(self.cap, self.base * 2 ** (record.failures - 2))

    def ready(self, model: str, now: float) -> None:
        """The model started: requests may restart it at once if it fails again, but its
        failures still count until it has stayed up a while."""
        record = self._records.get(model)
        if record is not None:
            record.ready_at = now
            record.retry_at = 0.0

    def forget(self, model: str) -> None:
        """A fresh start for the model (config changed, or it was unloaded on purpose)."""
        self._records.pop(model, None)

    def wait(self, model: str, now: float) -> float:
        """Seconds until a request may start ``model`` again; 0 when it may now."""
        record = self._records.get(model)
        return max(0.0, record.retry_at - now) if record is not None else 0.0

    def failures(self, model: str) -> int:
        record = self._records.get(model)
        return record.failures if record is not None else 0
