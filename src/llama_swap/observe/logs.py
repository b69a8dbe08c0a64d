"""Log output compatible with llama-swap's: `[INFO] message`, optional Go-style timestamps,
and `logToStdout` choosing whether proxy and/or upstream lines reach stdout."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from llama_swap.config import Config
from llama_swap.redact import mask_secrets, use_secrets

if TYPE_CHECKING:
    from llama_swap.observe.logbuffer import LogHub

UPSTREAM_LOGGER = "llama_swap.upstream"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_LEVEL_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR"}


def _fraction(digits: int) -> Callable[[datetime], str]:
    return lambda t: t.strftime("%b %d %H:%M:%S.") + f"{t.microsecond:06d}000"[:digits]


# Go's named layouts (time.ANSIC, time.RFC3339, …), rendered with strftime.
_TIME_FORMATS: dict[str, Callable[[datetime], str]] = {
    "ansic": lambda t: t.strftime("%a %b %d %H:%M:%S %Y"),
    "unixdate": lambda t: t.strftime("%a %b %d %H:%M:%S %Z %Y"),
    "rubydate": lambda t: t.strftime("%a %b %d %H:%M:%S %z %Y"),
    "rfc822": lambda t: t.strftime("%d %b %y %H:%M %Z"),
    "rfc822z": lambda t: t.strftime("%d %b %y %H:%M %z"),
    "rfc850": lambda t: t.strftime("%A, %d-%b-%y %H:%M:%S %Z"),
    "rfc1123": lambda t: t.strftime("%a, %d %b %Y %H:%M:%S %Z"),
    "rfc1123z": lambda t: t.strftime("%a, %d %b %Y %H:%M:%S %z"),
    "rfc3339": lambda t: t.isoformat(timespec="seconds"),
    "rfc3339nano": lambda t: t.isoformat(timespec="microseconds"),
    "kitchen": lambda t: t.strftime("%I:%M%p").lstrip("0"),
    "stamp": lambda t: t.strftime("%b %d %H:%M:%S"),
    "stampmilli": _fraction(3),
    "stampmicro": _fraction(6),
    "stampnano": _fraction(9),
}


class GoStyleFormatter(logging.Formatter):
    """`[LEVEL] message`, prefixed with a timestamp only when `logTimeFormat` names one."""

    def __init__(self, time_format: str) -> None:
        super().__init__()
        self.render_time = _TIME_FORMATS.get(time_format)

    def format(self, record: logging.LogRecord) -> str:
        text = f"[{_LEVEL_NAMES.get(record.levelno, record.levelname)}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        text = mask_secrets(text)  # no configured API key ever reaches a log line
        if self.render_time is None:
            return text
        return f"{self.render_time(datetime.fromtimestamp(record.created).astimezone())} {text}"


class _SourceFilter(logging.Filter):
    """Pass proxy lines, upstream lines, both or neither, per `logToStdout`."""

    def __init__(self, to_stdout: str) -> None:
        super().__init__()
        self.proxy = to_stdout in ("proxy", "both")
        self.upstream = to_stdout in ("upstream", "both")

    def filter(self, record: logging.LogRecord) -> bool:
        return self.upstream if _is_upstream(record) else self.proxy


def _is_upstream(record: logging.LogRecord) -> bool:
    return record.name == UPSTREAM_LOGGER or record.name.startswith(UPSTREAM_LOGGER + ".")


class HistoryHandler(logging.Handler):
    """Writes the proxy's own records, formatted as on stdout, into the `LogHub` histories.

    Upstream output is not taken from logging: each model's process writes it to its own
    buffer, which feeds the upstream (and, per `logToStdout`, the combined) history.
    """

    def __init__(self, hub: LogHub, time_format: str) -> None:
        super().__init__()
        self.hub = hub
        self.setFormatter(GoStyleFormatter(time_format))

    def emit(self, record: logging.LogRecord) -> None:
        if _is_upstream(record):
            return
        try:
            self.hub.write_proxy(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def attach_history(hub: LogHub, config: Config) -> HistoryHandler:
    """Record the proxy's log lines into ``hub`` from now on; undo with `detach_history`."""
    handler = HistoryHandler(hub, config.log_time_format)
    logging.getLogger().addHandler(handler)
    return handler


def detach_history(handler: HistoryHandler) -> None:
    logging.getLogger().removeHandler(handler)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The service's own stdout handler, told apart from others so a reload can replace it."""


def configure_logging(config: Config) -> None:
    """Install (or, on reload, replace) the stdout handler for ``config``."""
    use_secrets(config.api_keys)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdoutHandler)]:
        root.removeHandler(old)
    handler = _StdoutHandler(sys.stdout)
    handler.setFormatter(GoStyleFormatter(config.log_time_format))
    handler.addFilter(_SourceFilter(config.log_to_stdout))
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(config.log_level, logging.INFO))
