"""Profile the service under load: py-spy records it while wrk drives it.

Usage: `.venv/bin/python -m bench.profile [--seconds 10] [--connections 64] [--stream]
[--format speedscope|flamegraph|raw] [--out FILE]` (or `bench/profile …`).

Starts a bench upstream (core 1) and the service (core 0), warms up, then runs
`py-spy record --pid <service> --nonblocking` for the length of a wrk run. Writes a
speedscope JSON (open it at https://www.speedscope.app), a flame-graph SVG or collapsed
stacks under bench/results/, and for speedscope prints the functions with the most samples
(self and inclusive). py-spy is pip-installed into this venv when missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import procs, service
from bench.load import chat_body, ensure_wrk, run_wrk

RESULTS = procs.REPO / "bench" / "results"
EXTENSIONS = {"speedscope": "speedscope.json", "flamegraph": "svg", "raw": "txt"}


def ensure_py_spy() -> str:
    """The py-spy binary (this venv's, PATH's, or freshly pip-installed into this venv)."""
    for candidate in (procs.VENV_BIN / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    print("profile: installing py-spy into the venv", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True, timeout=600)
    return str(procs.VENV_BIN / "py-spy")


def top_functions(path: Path, count: int = 25) -> str:
    """The functions with the most samples in a speedscope file: self and inclusive, in %."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    own: Counter[int] = Counter()
    inclusive: Counter[int] = Counter()
    total = 0.0
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"]):
            total += weight
            if stack:
                own[stack[-1]] += weight
            for index in set(stack):
                inclusive[index] += weight

    def name(index: int) -> str:
        frame = frames[index]
        where = Path(frame.get("file") or "?").name
        return f"{frame['name']} ({where}:{frame.get('line', '?')})"

    by_module: Counter[str] = Counter()
    for index, weight in own.items():
        by_module[module_of(frames[index].get("file") or "?")] += weight
    lines = ["self %  module"]
    lines += [f"{100 * n / total:6.1f}  {module}" for module, n in by_module.most_common(15)]
    lines += ["", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {name(i)}" for i, n in own.most_common(count)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {name(i)}" for i, n in inclusive.most_common(count)]
    return "\n".join(lines)


def module_of(path: str) -> str:
    """A short owner for a source file: `llama_swap/proxy.py`, `aiohttp`, `asyncio/…`."""
    parts = Path(path).parts
    if "llama_swap" in parts:
        return "/".join(parts[parts.index("llama_swap") :])
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if len(parts) >= 2 and parts[-2].startswith("python3"):
        return f"stdlib {parts[-1]}"
    return "/".join(parts[-2:]) or path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--stream", action="store_true", help="drive streams of 100 events instead of plain requests")
    parser.add_argument("--format", choices=sorted(EXTENSIONS), default="speedscope")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"profile-{'stream' if args.stream else 'plain'}-{stamp}.{EXTENSIONS[args.format]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    wrk, py_spy = ensure_wrk(), ensure_py_spy()
    procs.exit_on_sigterm()
    procs.raise_fd_limit()
    service_cpus, other_cpus = procs.cpu_layout()
    procs.pin_self(other_cpus)
    body = chat_body("bench", stream=args.stream, max_tokens=100 if args.stream else 8)
    model = service.fake_model("bench", procs.free_port(), other_cpus)
    with service.start(workdir, [model], together=True, cpus=service_cpus, name="service-profile") as svc:
        svc.load("bench")
        url = f"{svc.url}/v1/chat/completions"
        run_wrk(wrk, url, body, connections=args.connections, seconds=1, cpus=other_cpus)  # warm-up
        spy = procs.spawn(
            [
                py_spy,
                "record",
                "--pid",
                str(svc.proc.pid),
                "--nonblocking",
                "--rate",
                str(args.rate),
                "--duration",
                str(round(args.seconds)),
                "--format",
                args.format,
                "--output",
                str(out),
            ],  # fmt: skip
            cpus=other_cpus,
            log=workdir / "py-spy.log",
        )
        with procs.running(spy, grace=30):
            time.sleep(0.5)  # let py-spy attach
            result = run_wrk(wrk, url, body, connections=args.connections, seconds=args.seconds, cpus=other_cpus)
            spy.wait(timeout=args.seconds + 60)
    print(f"wrk: {result.rps:,.0f} req/s, p50 {result.p50_us} µs, p99 {result.p99_us} µs, errors {result.errors}")
    if not out.exists():
        print(f"profile: py-spy wrote nothing; see {workdir / 'py-spy.log'}:\n{procs.tail(workdir / 'py-spy.log')}")
        return 1
    if args.format == "speedscope":
        print(top_functions(out))
    print(f"\nprofile: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
