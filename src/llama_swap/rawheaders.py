"""Headers as received (raw bytes pairs), read case-insensitively only when asked.

The fast lane reads two or three headers of a request or an answer; decoding every header
into a multidict cost each request more than all its lookups.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class RawHeaders(Mapping[str, str]):
    """A read-only view of raw header pairs. Values are decoded as aiohttp decodes them
    (UTF-8, undecodable bytes kept as surrogates); the first of repeated headers wins."""

    __slots__ = ("_raw", "_index")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._index: dict[bytes, bytes] | None = None  # lower-case name -> first value, built when first asked

    def get(self, name: str, default: Any = None) -> Any:
        index = self._index
        if index is None:
            index = self._index = {found.lower(): value for found, value in reversed(self._raw)}
        value = index.get(name.lower().encode("latin-1"))
        return default if value is None else value.decode("utf-8", "surrogateescape")

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name, _ in self._raw)

    def __len__(self) -> int:
        return len(self._raw)
