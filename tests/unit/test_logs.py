"""Log line format and logToStdout routing."""

from __future__ import annotations

import io
import logging
import re

import pytest

from llama_swap.config import load_config_text
from llama_swap.observe.logs import GoStyleFormatter, configure_logging


def record(name: str, message: str, level: int = logging.INFO) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, message, None, None)
    rec.created = 1_700_000_000.123456
    return rec


def test_default_format_has_no_timestamp() -> None:
    assert GoStyleFormatter("").format(record("llama_swap", "hi", logging.WARNING)) == "[WARN] hi"


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("rfc3339", r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d \[INFO\] hi$"), ("stampmilli", r"^\w{3} \d\d \d\d:\d\d:\d\d\.123 \[INFO\] hi$")],
)
def test_go_time_formats(name: str, pattern: str) -> None:
    assert re.match(pattern, GoStyleFormatter(name).format(record("llama_swap", "hi")))


@pytest.mark.parametrize(
    ("to_stdout", "proxy_shown", "upstream_shown"),
    [("proxy", True, False), ("upstream", False, True), ("both", True, True), ("none", False, False)],
)
def test_log_to_stdout_routes_sources(
    monkeypatch: pytest.MonkeyPatch, to_stdout: str, proxy_shown: bool, upstream_shown: bool
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(load_config_text(f"logToStdout: {to_stdout}\nmodels: {{}}\n"))
        configure_logging(load_config_text(f"logToStdout: {to_stdout}\nmodels: {{}}\n"))  # a reload replaces it
        logging.getLogger("llama_swap.router").info("proxy line")
        logging.getLogger("llama_swap.upstream").info("upstream line")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    text = out.getvalue()
    assert ("proxy line" in text) is proxy_shown
    assert ("upstream line" in text) is upstream_shown
    assert text.count("proxy line") <= 1
