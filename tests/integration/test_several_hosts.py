"""Several hosts as one (docs/deploy.md): three instances on 127.0.0.2, .3 and .4, each
with its own models and the other two as `peers`, behind HAProxy health-checking `/health`.

HAProxy comes from Debian's packages (`scripts/test` installs it when missing, as it does
Chromium); a machine without it fails this test with the command that installs it, never
skips it.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes import fake_cmd, wait_http
from tests.integration.conftest import HI, RunningService, service_command, stop_checking_orphans, wait_until

HOSTS = {"h2": "127.0.0.2", "h3": "127.0.0.3", "h4": "127.0.0.4"}
MODELS = {"h2": ["m2a", "m2b"], "h3": ["m3"], "h4": ["m4"]}
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def host_config(host: str, ports: dict[str, int], start_port: int) -> str:
    """One host's config: its own models, and the other hosts as peers (a dead peer must be
    noticed at once, hence the short connect timeout)."""
    models = "".join(f"  {model}:\n    cmd: {fake_cmd(name=model, chunks=4)}\n" for model in MODELS[host])
    groups = f"groups:\n  all: {{swap: false, members: [{', '.join(MODELS[host])}]}}\n"
    peers = "".join(
        f"  {other}:\n    proxy: http://{HOSTS[other]}:{ports[other]}\n    models: [{', '.join(MODELS[other])}]\n"
        f"    timeouts: {{connect: 2}}\n"
        for other in HOSTS if other != host
    )
    return f"startPort: {start_port}\nlogToStdout: both\n{groups}models:\n{models}peers:\n{peers}"


def haproxy_config(listen: int, ports: dict[str, int]) -> str:
    servers = "\n".join(f"    server {host} {HOSTS[host]}:{ports[host]} check" for host in HOSTS)
    return textwrap.dedent(f"""\
        defaults
            mode http
            timeout connect 2s
            timeout client 60s
            timeout server 60s
            retries 2
            option redispatch
        frontend balancer
            bind 127.0.0.1:{listen}
            default_backend hosts
        backend hosts
            balance roundrobin
            option httpchk GET /health
            default-server inter 300ms fall 2 rise 2
        """) + servers + "\n"


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {host: free_port_on(address) for host, address in HOSTS.items()}
        self.hosts: dict[str, RunningService] = {}
        self.balancer_port = free_port_on("127.0.0.1")
        self.balancer: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.balancer_port}"

    def start_host(self, host: str) -> RunningService:
        config = self.tmp / f"{host}.yaml"
        start_port = 20000 + 100 * int(host[1:])
        config.write_text(host_config(host, self.ports, start_port))
        log = self.tmp / f"{host}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(service_command(config, f"{HOSTS[host]}:{self.ports[host]}"), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        service = RunningService(proc, f"http://{HOSTS[host]}:{self.ports[host]}", config, log)
        service.wait_ready()
        self.hosts[host] = service
        return service

    def start_balancer(self) -> None:
        if not Path(HAPROXY).exists():
            pytest.fail("HAProxy is not installed: apt-get install -y --no-install-recommends haproxy "
                        "(scripts/test does it)", pytrace=False)
        config = self.tmp / "haproxy.cfg"
        config.write_text(haproxy_config(self.balancer_port, self.ports))
        self.balancer = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        assert wait_http(f"{self.url}/health", timeout=15, proc=self.balancer)

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.terminate()
            self.balancer.wait(timeout=10)
        for service in self.hosts.values():
            if service.proc.poll() is None:
                stop_checking_orphans(service)

    def client(self, retries: int = 2) -> openai.OpenAI:
        """The openai SDK through the balancer, retrying as it does by default."""
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=retries, timeout=20.0)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        for host in HOSTS:
            cluster.start_host(host)
        cluster.start_balancer()
        yield cluster
    finally:
        cluster.stop()


def all_models() -> list[str]:
    return [model for models in MODELS.values() for model in models]


def answer(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=HI)
    return reply.choices[0].message.content or ""


def test_every_model_is_reachable_through_the_balancer_from_every_host(cluster: Cluster) -> None:
    client = cluster.client(retries=0)
    for model in all_models():
        for _ in range(len(HOSTS) * 2):  # round robin: each host is asked at least twice
            assert answer(client, model) == f"hello from {model}"
    # each host served its own models and forwarded the others' to their peers
    for host, service in cluster.hosts.items():
        rows = service.http.get("/api/metrics/activity", params={"limit": 999}).json()["data"]
        seen = {row["model"] for row in rows}
        assert set(MODELS[host]) <= seen, (host, seen)
        assert any("/" in model for model in seen), (host, seen)  # peer models: `<host>/<model>`


def test_streaming_crosses_two_hops(cluster: Cluster) -> None:
    client = cluster.client(retries=0)
    for model in all_models():
        for _ in range(len(HOSTS)):
            stream = client.chat.completions.create(model=model, messages=HI, stream=True)
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            assert text == "tok0 tok1 tok2 tok3 "


def test_the_model_list_is_complete_on_every_host(cluster: Cluster) -> None:
    for host, service in cluster.hosts.items():
        listed = {record["id"] for record in service.http.get("/v1/models").json()["data"]}
        expected = set(MODELS[host]) | {f"{other}/{model}" for other in HOSTS if other != host
                                        for model in MODELS[other]}
        assert listed == expected, host


def test_a_dead_host_fails_fast_and_clearly_while_the_others_keep_serving(cluster: Cluster) -> None:
    client = cluster.client()
    stop = threading.Event()
    outcomes: dict[str, list[str]] = {model: [] for model in all_models()}

    def load(model: str) -> None:
        while not stop.is_set():
            try:
                outcomes[model].append(answer(client, model))
            except openai.APIError as exc:
                outcomes[model].append(f"error: {exc}")

    with concurrent.futures.ThreadPoolExecutor(len(outcomes)) as pool:
        running = [pool.submit(load, model) for model in outcomes]
        assert wait_until(lambda: all(len(done) >= 3 for done in outcomes.values()), timeout=30)
        dead = cluster.hosts["h3"]
        before = {model: len(done) for model, done in outcomes.items()}
        dead.proc.send_signal(signal.SIGKILL)
        dead.proc.wait(timeout=10)
        # the others keep serving their models while h3 is gone (every request, the SDK's retries included)
        assert wait_until(lambda: all(len(outcomes[m]) >= before[m] + 5 for m in ("m2a", "m2b", "m4")), timeout=60)
        stop.set()
        for future in running:
            future.result(timeout=60)  # nothing hangs
    for model in ("m2a", "m2b", "m4"):
        assert outcomes[model] == [f"hello from {model}"] * len(outcomes[model]), model
    # h3's own model: a clear error from the hosts that forward to it, quickly, not a hang
    for _ in range(4):
        with pytest.raises(openai.APIStatusError) as failed:
            cluster.client(retries=0).chat.completions.create(model="m3", messages=HI)
        assert failed.value.status_code == 502
        assert "peer proxy error: peer 'h3'" in failed.value.response.text
    # h3 comes back on its address: the balancer and the peers pick it up
    cluster.start_host("h3")
    assert wait_until(lambda: _answers(cluster, "m3", times=6), timeout=30)


def _answers(cluster: Cluster, model: str, times: int) -> bool:
    try:
        return all(answer(cluster.client(retries=0), model) == f"hello from {model}" for _ in range(times))
    except (openai.APIError, httpx.HTTPError):
        return False
