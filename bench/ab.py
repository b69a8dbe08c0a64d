"""A/B: two source trees of the service, measured in one run, their wrk runs alternating.

Usage: `.venv/bin/python -m bench.ab --base SRC --new SRC [--seconds 5] [--reps 5] [--conns 1 --conns 64]`

Why: this VM moves a whole `bench/run` by ±15% from one run to the next, more than most
changes to the hot path; two runs minutes apart cannot tell a 5% change. Here both trees
run at once, each a service started with `PYTHONPATH=SRC` in front of its own bench upstream
(the same program), pinned like `bench/run` (services on core 0, upstreams and wrk on core
1), and the runs alternate base, new, base, new…, so the machine's drift falls on both
alike. Reported per side: the median req/s and the service's CPU µs per request (its user +
system time over the run, divided by the requests), and new ÷ base. E.g. before and after a
change: `git worktree add /tmp/base HEAD~1` and `--base /tmp/base/src --new src`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from bench import procs, service
from bench.load import chat_body, ensure_wrk, run_wrk
from bench.stats import median
from bench.throughput import _timed_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, type=Path, help="the base tree's src directory")
    parser.add_argument("--new", required=True, type=Path, help="the new tree's src directory")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--reps", type=int, default=5, help="runs per side and connection count")
    parser.add_argument("--conns", type=int, action="append", help="connection counts (default: 1 and 64)")
    parser.add_argument("--capture-buffer", type=int, default=None, metavar="MB",
                        help="captureBuffer for both services (default: the config's default)")
    args = parser.parse_args(argv)
    sides = {"base": args.base.resolve(), "new": args.new.resolve()}
    for name, src in sides.items():
        if not (src / "llama_swap" / "__init__.py").exists():
            parser.error(f"--{name} {src}: not a src directory holding llama_swap/")
    wrk = ensure_wrk()
    service_cpus, other_cpus = procs.cpu_layout()
    procs.pin_self(other_cpus)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, contextlib.ExitStack() as stack:
        running = {}
        for (name, src), port in zip(sides.items(), procs.free_ports(len(sides))):
            model = service.fake_model("bench", port, other_cpus)
            env = {**os.environ, "PYTHONPATH": str(src)}
            settings = {} if args.capture_buffer is None else {"captureBuffer": args.capture_buffer}
            running[name] = stack.enter_context(service.start(Path(tmp), [model], together=True, cpus=service_cpus,
                                                              name=name, env=env, settings=settings))
            running[name].load("bench")
        body = chat_body("bench")
        urls = {name: f"{svc.url}/v1/chat/completions" for name, svc in running.items()}
        for url in urls.values():  # warm-up: pools, caches
            run_wrk(wrk, url, body, connections=64, seconds=1, cpus=other_cpus)
        print(f"{'conns':>5}  {'side':<4}  {'req/s':>8}  {'CPU µs/req':>10}  runs (req/s)")
        for conns in args.conns or [1, 64]:
            rps: dict[str, list[float]] = {name: [] for name in sides}
            cpu: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(args.reps):
                for name, svc in running.items():
                    run, cpu_us, _ = _timed_run(wrk, urls[name], body, svc.proc, conns, args.seconds, other_cpus)
                    if run.errors:
                        raise RuntimeError(f"{name}: {run.errors} wrk errors at {conns} connections")
                    rps[name].append(run.rps)
                    cpu[name].append(cpu_us)
            for name in sides:
                runs = ", ".join(f"{value:,.0f}" for value in rps[name])
                print(f"{conns:>5}  {name:<4}  {median(rps[name]):>8,.0f}  {median(cpu[name]):>10.1f}  {runs}")
            print(f"{conns:>5}  new/base  req/s ×{median(rps['new']) / median(rps['base']):.3f}, "
                  f"CPU per request ×{median(cpu['new']) / median(cpu['base']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
