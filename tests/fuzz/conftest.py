"""The fuzzed service: the real llama-swap as a subprocess on loopback with two fast, healthy
fake models that run side by side (so fuzzing never waits for swaps).

Every test that uses it is followed by the checks that it survived: the process is alive,
`/health` answers, each model still serves a normal chat request, and the service logged
no traceback while the test ran.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService, serving

# `alpha` and `beta` carry the model names the OpenAPI document's examples use, so
# schemathesis's example phase reaches a real upstream. `alpha` has JSON filters and `beta`
# a `useModelName`, so fuzzed bodies also go through the request rewriting.
CONFIG = f"""
healthCheckTimeout: 15
logToStdout: proxy
maxBodyMB: 1
hooks:
  on_startup:
    preload: [alpha, beta]
models:
  alpha:
    cmd: {fake_cmd(name="alpha", chunks=2)}
    aliases: [llama3, deepseek-coder, kokoro, sd-turbo]
    filters:
      stripParams: "temperature, top_p, messages.0.name"
      setParams: {{max_tokens: 8, "options.seed": 1}}
  beta:
    cmd: {fake_cmd(name="beta", chunks=2)}
    aliases: [nomic-embed, bge-reranker]
    useModelName: beta-upstream
groups:
  fuzz:
    swap: false
    members: [alpha, beta]
"""

MODELS = ("alpha", "beta")
MAX_BODY = 1 << 20  # maxBodyMB: 1


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """One service per test module; its upstreams must be gone once it stops."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    config_path = tmp / "config.yaml"
    config_path.write_text(f"startPort: {random.randrange(10000, 32000, 50)}\n" + CONFIG)
    with serving(config_path, tmp / "service.log") as service:
        for model in MODELS:  # ready before fuzzing starts, so examples do not pay for starts
            assert service.chat(model).status_code == 200, service.log()
        yield service


@pytest.fixture(autouse=True)
def survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that fuzzed the service: it is alive, healthy, serves others and
    logged no traceback."""
    if "svc" not in request.fixturenames:
        yield
        return
    service: RunningService = request.getfixturevalue("svc")
    log_start = len(service.log())
    yield
    assert service.proc.poll() is None, f"the service exited with {service.proc.returncode}:\n{service.log()[-3000:]}"
    health = service.http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    for model in MODELS:
        response = service.http.post("/v1/chat/completions", json={"model": model, "messages": HI})
        assert response.status_code == 200, (model, response.text)
        assert response.headers["x-upstream-name"] == model
    logged = service.log()[log_start:]
    assert "Traceback" not in logged and "unhandled error" not in logged, logged[-5000:]
