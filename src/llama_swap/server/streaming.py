"""Long-lived streaming answers (log streams, the event stream) fed from a `Subscription`."""

from __future__ import annotations

import contextlib
from typing import Callable

from aiohttp import web

from llama_swap.observe.logbuffer import Subscription

CHECK_SECONDS = 2.0  # how often an idle stream notices that its client went away


async def pump(
    request: web.Request,
    response: web.StreamResponse,
    sub: Subscription,
    *,
    is_closed: Callable[[], bool],
    replace: Callable[[bytes], bytes] | None = None,
) -> None:
    """Write what ``sub`` delivers to the prepared ``response`` until either side ends.

    Whatever has queued up is written at once, so a burst costs one write. ``replace``
    may swap a delivered chunk for another (e.g. a drop marker for a fresh snapshot).
    """
    while not is_closed():
        chunk = await sub.get(timeout=CHECK_SECONDS)
        if chunk is None:
            if sub.closed or request.transport is None or request.transport.is_closing():
                break
            continue
        batch = bytearray()
        while chunk is not None:
            batch += replace(chunk) if replace is not None else chunk
            chunk = sub.get_nowait()
        await response.write(bytes(batch))
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
