"""Command line: Go-compatible flags, logging, signals, and running the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Sequence

from aiohttp import web

from llama_swap import __version__
from llama_swap.config import Config, ConfigError, load_config
from llama_swap.server.app import build_app
from llama_swap.server.inference import SERVICE

log = logging.getLogger("llama_swap")

DRAIN_SECONDS = 5.0  # on shutdown, in-flight requests get this long before upstreams stop

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Flags spelled like the Go binary's (`-config`) and the usual way (`--config`)."""
    parser = argparse.ArgumentParser(prog="llama-swap", description="On-demand model swapping proxy.")
    parser.add_argument("-config", "--config", default="config.yaml", help="config file (default config.yaml)")
    parser.add_argument("-listen", "--listen", default=":8080", help="address to listen on, host:port or :port")
    parser.add_argument("-version", "--version", action="store_true", help="print the version and exit")
    return parser.parse_args(argv)


def parse_listen(listen: str) -> tuple[str | None, int]:
    """`:8080` → all interfaces; `127.0.0.1:8080`; `[::1]:8080`."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid -listen address '{listen}': expected host:port or :port")
    host = host.strip("[]")
    return (host or None), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.version:
        print(f"version: {__version__} (python), llama-swap for Python")
        return 0
    try:
        host, port = parse_listen(args.listen)
        config = load_config(args.config)
    except (ConfigError, ValueError) as exc:
        print(f"llama-swap: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=_LEVELS.get(config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config, host, port))
    return uvloop.run(serve(config, host, port))


async def serve(config: Config, host: str | None, port: int) -> int:
    """Run until SIGINT/SIGTERM, then drain briefly and stop every upstream in parallel."""
    app = build_app(config)
    app.on_shutdown.append(_stop_admitting)
    # aiohttp waits shutdown_timeout for handlers to finish, then as long again after
    # "cancelling" them (which does not interrupt a handler streaming a response).
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                           shutdown_timeout=DRAIN_SECONDS / 2)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"llama-swap: cannot listen on {host or '*'}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    log.info("llama-swap %s listening on %s:%d with %d models", __version__, host or "*", port, len(config.models))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: stopping all upstreams")
    await runner.cleanup()
    log.info("stopped")
    return 0


async def _stop_admitting(app: web.Application) -> None:
    """First shutdown step: clients still waiting for a model get a 503 now and its start
    is aborted, rather than holding the drain open and then losing their connection."""
    await app[SERVICE].router.close()
