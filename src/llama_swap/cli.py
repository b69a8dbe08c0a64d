"""Command line: Go-compatible flags, logging, signals, and running the server."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from aiohttp import web

from llama_swap import __version__
from llama_swap.config import Config, ConfigError, load_config
from llama_swap.observe.logs import configure_logging
from llama_swap.ports import ephemeral_range, start_port_warning
from llama_swap.server.app import app_routes, build_app
from llama_swap.server.lane import Lane
from llama_swap.server.service import SERVICE, Service
from llama_swap.watch import watch
from llama_swap.wire.bridge import AnswerCounter
from llama_swap.wire.front import Front

log = logging.getLogger("llama_swap")

DRAIN_SECONDS = 5.0  # on shutdown, in-flight requests get this long before upstreams stop
BRIDGED_LINE_LIMIT = 1 << 20  # aiohttp's own per-line limits: the front bounds the whole head (maxHeaderKB)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Flags spelled like the Go binary's (`-config`) and the usual way (`--config`)."""
    parser = argparse.ArgumentParser(prog="llama-swap", description="On-demand model swapping proxy.")
    parser.add_argument("-config", "--config", help="config file (default config.yaml unless -config-dir is given)")
    parser.add_argument("-config-dir", "--config-dir", help="directory of *.yaml files merged after -config")
    parser.add_argument("-listen", "--listen", help="address to listen on, host:port or :port (default :8080)")
    parser.add_argument("-tls-cert-file", "--tls-cert-file", help="TLS certificate (with -tls-key-file)")
    parser.add_argument("-tls-key-file", "--tls-key-file", help="TLS private key (with -tls-cert-file)")
    parser.add_argument("-watch-config", "--watch-config", action="store_true", help="reload when the config changes")
    parser.add_argument("-version", "--version", action="store_true", help="print the version and exit")
    args = parser.parse_args(argv)
    if args.config is None and args.config_dir is None:
        args.config = "config.yaml"
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        parser.error("-tls-cert-file and -tls-key-file must be given together")
    if args.listen is None:
        args.listen = ":8443" if args.tls_cert_file else ":8080"
    return args


def parse_listen(listen: str) -> tuple[str | None, int]:
    """`:8080` → all interfaces; `127.0.0.1:8080`; `[::1]:8080`."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
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
        config = _load(args)
        tls = _tls_context(args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"llama-swap: {exc}", file=sys.stderr)
        return 2
    configure_logging(config)
    _warn(config)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config, host, port, args, tls))
    return uvloop.run(serve(config, host, port, args, tls))


def _load(args: argparse.Namespace, running: Service | None = None) -> Config:
    """Load the config; on a reload, models keep the ports they run on (those moved off a
    taken port included)."""
    keep = None
    if running is not None:
        keep = {m: p.config.port for m, p in running.processes.items() if p.config.port is not None}
    return load_config(args.config, config_dir=args.config_dir, keep_ports=keep)


def _warn(config: Config) -> None:
    """What the config asks for but cannot have (e.g. preloading an unknown model)."""
    for warning in config.warnings:
        log.warning("%s", warning)
    ports = [model.port for model in config.models.values() if model.port is not None]
    if crowded := start_port_warning(ports, ephemeral_range()):
        log.warning("%s", crowded)


def exposure_warning(host: str | None, port: int, config: Config) -> str | None:
    """The start-up warning for a service others can reach and use without a key."""
    if config.api_keys or _is_loopback(host):
        return None
    return (f"listening on {host or 'all interfaces'}:{port}, beyond loopback, without apiKeys: "
            "anyone who can reach it can use your models (set apiKeys to require a key)")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    return context


async def serve(
    config: Config, host: str | None, port: int, args: argparse.Namespace, tls: ssl.SSLContext | None = None
) -> int:
    """Run until SIGINT/SIGTERM, then drain briefly and stop every upstream in parallel.

    SIGHUP (and, with -watch-config, any change to the config files) reloads the config.
    """
    app = build_app(config)
    app.on_shutdown.append(_stop_admitting)
    front: Front | None = None

    async def drain_front(app: web.Application) -> None:
        if front is not None:
            await front.close(DRAIN_SECONDS / 2)

    app.on_shutdown.append(drain_front)
    # aiohttp waits shutdown_timeout for handlers to finish, then as long again after
    # "cancelling" them (which does not interrupt a handler streaming a response).
    # The access log is off; its hook tells the front when a bridged answer is done.
    runner = web.AppRunner(app, handle_signals=False, access_log=log, access_log_class=AnswerCounter,
                           handler_cancellation=True, shutdown_timeout=DRAIN_SECONDS / 2,
                           max_line_size=BRIDGED_LINE_LIMIT, max_field_size=BRIDGED_LINE_LIMIT)
    await runner.setup()
    front = Front(Lane(app[SERVICE], app_routes(app)), runner.server)  # type: ignore[arg-type]
    gc.collect()
    gc.freeze()  # what start-up built lives as long as the service: collections need not scan it again
    try:
        await front.listen(host, port, tls)
    except OSError as exc:
        await runner.cleanup()
        print(f"llama-swap: cannot listen on {host or '*'}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    log.info("llama-swap %s listening on %s:%d with %d models", __version__, host or "*", port, len(config.models))
    if (warning := exposure_warning(host, port, config)) is not None:
        log.warning("%s", warning)

    async def reload() -> None:
        try:
            new = _load(args, app[SERVICE])
            configure_logging(new)
            _warn(new)
            app[SERVICE].apply(new)
        except ConfigError as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
        except Exception:  # a bug must not go unseen, nor end the service
            log.exception("config reload failed")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()  # kept until done (the loop holds tasks weakly)

    def on_sighup() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    watcher = loop.create_task(_watch(args, reload)) if args.watch_config else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    log.info("shutting down: stopping all upstreams")
    await runner.cleanup()
    log.info("stopped")
    return 0


async def _watch(args: argparse.Namespace, reload: Callable[[], Awaitable[None]]) -> None:
    files = [Path(args.config)] if args.config else []
    dirs = [Path(args.config_dir)] if args.config_dir else []
    await watch(files, dirs, reload)


async def _stop_admitting(app: web.Application) -> None:
    """First shutdown step: clients still waiting for a model get a 503 now and its start
    is aborted, rather than holding the drain open and then losing their connection."""
    await app[SERVICE].router.close()
