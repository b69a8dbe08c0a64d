"""Secrets kept out of everything the service shows: logs, the UI, the API.

Used by the code that logs (process command lines, every formatted log line) and by the
config (credential headers may not be shown as session ids), so it depends on nothing.
`mask_secrets` hides the configured API keys in every formatted line, `redact_argv`
hides `--api-key VALUE`-style arguments.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

REDACTED = "[REDACTED]"

# Request and response headers whose values are credentials: never shown anywhere.
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"}
)

MIN_MASKED_KEY = 6  # shorter keys are not searched for in log text (they would mangle it)


def is_sensitive_header(name: str) -> bool:
    return name.strip().lower() in SENSITIVE_HEADERS


def redact_headers(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> list[tuple[str, str]]:
    """Headers safe to show: credential values replaced by ``[REDACTED]``, order kept."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, REDACTED if is_sensitive_header(name) else value) for name, value in items]


_SECRET_FLAG = re.compile(r"--?[A-Za-z0-9_-]*(?:api[-_]?key|token|secret|password|passwd)", re.IGNORECASE)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line safe to log: the values of `--api-key`, `--hf-token`, `--password`
    and the like (`--flag VALUE` or `--flag=VALUE`) replaced by ``[REDACTED]``."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append(REDACTED)
            hide_next = False
            continue
        name, eq, _value = arg.partition("=")
        if _SECRET_FLAG.fullmatch(name):
            if eq:
                shown.append(f"{name}={REDACTED}")
            else:
                shown.append(arg)
                hide_next = True
            continue
        shown.append(arg)
    return shown


class _Secrets:
    """The configured keys, searched for in every formatted log line."""

    def __init__(self) -> None:
        self.pattern: re.Pattern[str] | None = None

    def use(self, keys: Iterable[str]) -> None:
        long_enough = sorted({k for k in keys if len(k) >= MIN_MASKED_KEY}, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, long_enough))) if long_enough else None

    def mask(self, text: str) -> str:
        pattern = self.pattern
        return text if pattern is None else pattern.sub(REDACTED, text)


SECRETS = _Secrets()


def use_secrets(keys: Iterable[str]) -> None:
    """Mask these keys (the config's `apiKeys`) in log lines from now on."""
    SECRETS.use(keys)


def mask_secrets(text: str) -> str:
    """``text`` with every configured key of `MIN_MASKED_KEY`+ characters replaced by ``[REDACTED]``."""
    return SECRETS.mask(text)
