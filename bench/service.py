"""The service under test: a generated config, `llama-swap` as a subprocess, and its upstreams."""

from __future__ import annotations

import contextlib
import json
import shlex
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import procs

UPSTREAM_SCRIPT = procs.REPO / "bench" / "upstream.py"
LLAMA_SWAP = procs.VENV_BIN / "llama-swap"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: ignore *_proxy


@dataclass(frozen=True)
class ModelSpec:
    """One model of the generated config: its id, its fixed upstream port and its command."""

    id: str
    port: int
    argv: list[str]


@dataclass
class Service:
    """A running llama-swap: where it listens and the models it was configured with."""

    port: int
    proc: psutil.Process
    models: dict[str, ModelSpec]
    upstream_pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 60.0) -> dict[str, object]:
        """GET a management endpoint of the service and decode its JSON."""
        with _OPENER.open(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def load(self, model: str, timeout: float = 60.0) -> None:
        """Start `model` through the service and remember its upstream's pid."""
        self.get(f"/upstream/{model}/load", timeout=timeout)
        self.remember_children()

    def remember_children(self) -> None:
        """Record the service's child processes, so they can be killed if it leaves them behind."""
        with contextlib.suppress(psutil.Error):
            self.upstream_pids.update(child.pid for child in self.proc.children(recursive=True))


def fake_model(model_id: str, port: int, cpus: set[int] | None) -> ModelSpec:
    """A model served by bench/upstream.py on `port` (pinned to `cpus`)."""
    argv = [procs.PYTHON, str(UPSTREAM_SCRIPT), "--port", str(port)]
    for cpu in sorted(cpus or ()):
        argv += ["--cpu", str(cpu)]
    return ModelSpec(model_id, port, argv)


def llama_model(model_id: str, port: int, server: Path, gguf: Path) -> ModelSpec:
    """A model served by the real llama-server on `port`."""
    return ModelSpec(model_id, port, llama_argv(server, gguf, port))


def llama_argv(server: Path, gguf: Path, port: int) -> list[str]:
    """The llama-server command line, the same for direct starts and through the service."""
    return [
        str(server), "--host", "127.0.0.1", "--port", str(port), "-m", str(gguf),
        "--threads", "2", "--no-webui", "--ctx-size", "512",
    ]  # fmt: skip


def write_config(path: Path, models: list[ModelSpec], *, together: bool, limit: int = 5000,
                 settings: dict[str, object] | None = None) -> None:
    """A llama-swap config (JSON is valid YAML): quiet logs, fixed ports, large admission limits.

    `together`: one non-swapping group, so every model can run at once; otherwise the
    default (one model at a time: every model change is a swap). `settings`: more global keys.
    """
    config: dict[str, object] = {
        "logLevel": "warn",
        "healthCheckTimeout": 60,
        "models": {
            spec.id: {
                "cmd": shlex.join(spec.argv),
                "proxy": f"http://127.0.0.1:{spec.port}",
                "concurrencyLimit": limit,
            }
            for spec in models
        },
    }
    if together:
        config["routing"] = {
            "router": {"settings": {"groups": {"bench": {"swap": False, "members": [m.id for m in models]}}}}
        }
    config.update(settings or {})
    path.write_text(json.dumps(config, indent=2) + "\n")


@contextlib.contextmanager
def start(
    workdir: Path,
    models: list[ModelSpec],
    *,
    together: bool,
    cpus: set[int] | None,
    name: str = "service",
    env: dict[str, str] | None = None,
    settings: dict[str, object] | None = None,
) -> Iterator[Service]:
    """Run llama-swap on a free port with these models until the block ends; stops everything."""
    config = workdir / f"{name}.yaml"
    log = workdir / f"{name}.log"
    write_config(config, models, together=together, settings=settings)
    port = procs.free_port()
    popen = procs.spawn([str(LLAMA_SWAP), "-config", str(config), "-listen", f"127.0.0.1:{port}"], cpus=cpus, log=log,
                        env=env)
    service: Service | None = None
    try:
        try:
            procs.wait_healthy("127.0.0.1", port, "/health", timeout=30, poll=0.02, proc=popen)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"llama-swap did not start: {error}\n{procs.tail(log)}") from None
        service = Service(port, psutil.Process(popen.pid), {m.id: m for m in models})
        yield service
    finally:
        if service is not None:
            service.remember_children()
        procs.stop(popen, grace=15)
        if service is not None:
            procs.kill_pids(sorted(service.upstream_pids))
