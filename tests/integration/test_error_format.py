"""`errorFormat`: the shape of the service's own errors, as the openai client shows them.

The default is the API reference's `{"error": "<message>"}`; `errorFormat: openai` answers
the Go version's envelope, whose `error.message` openai-python 3.x (and everything built on
it) puts into its exceptions. Upstream errors pass through untouched either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import HI

MODELS = f"""\
    models:
      m:
        cmd: {fake_cmd(name="m", chunks=6)}
      dying:
        cmd: {fake_cmd(name="dying", chunks=6, die_mid_stream=2)}
      broken:
        cmd: {fake_cmd(name="broken", crash_at_start=True)}
    """


def envelope(message: str, kind: str, code: str) -> dict:
    return {"src": "llama-swap", "error": {"message": message, "type": kind, "param": None, "code": code}}


def test_the_openai_envelope_puts_the_reason_into_the_clients_exceptions(start_service) -> None:
    service = start_service("    errorFormat: openai\n" + MODELS)
    client = service.openai()
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="nope", messages=HI)
    assert "model 'nope' not found in config" in str(unknown.value)  # openai 3.x shows error.message only
    assert unknown.value.body == envelope("model 'nope' not found in config", "invalid_request_error", "not_found")["error"]
    assert service.chat("nope").json() == envelope("model 'nope' not found in config", "invalid_request_error",
                                                   "not_found")
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="broken", messages=HI)
    assert failed.value.status_code == 503 and "exited" in str(failed.value)
    assert failed.value.body["code"] == "service_unavailable" and failed.value.body["type"] == "server_error"
    with pytest.raises(openai.APIError) as cut:  # a stream that breaks off ends with an error event
        for _ in client.chat.completions.create(model="dying", messages=HI, stream=True):
            pass
    assert "stopped in the middle of the response" in str(cut.value)
    management = service.http.post("/api/inflight/999/cancel")
    assert management.status_code == 404
    assert management.json() == envelope("no in-flight request with id 999", "invalid_request_error", "not_found")


def test_keys_refused_in_the_openai_envelope(start_service) -> None:
    service = start_service("    errorFormat: openai\n    apiKeys: [right]\n" + MODELS)
    with pytest.raises(openai.AuthenticationError) as refused:
        service.openai().chat.completions.create(model="m", messages=HI)  # the client sends "test-key"
    assert "unauthorized" in str(refused.value)
    assert refused.value.body["type"] == "authentication_error" and refused.value.body["code"] == "unauthorized"


def test_the_default_is_the_api_references_shape(start_service) -> None:
    service = start_service(MODELS)
    assert service.chat("nope").json() == {"error": "model 'nope' not found in config"}
    with pytest.raises(openai.APIError) as cut:
        for _ in service.openai().chat.completions.create(model="dying", messages=HI, stream=True):
            pass
    assert "stopped in the middle of the response" in str(cut.value)  # stream errors carry a message either way


def test_a_reload_switches_the_shape(start_service) -> None:
    from tests.integration.test_reload import reload

    service = start_service(MODELS)
    reload(service, "    errorFormat: openai\n" + MODELS)
    assert service.chat("nope").json()["src"] == "llama-swap"
    reload(service, MODELS)
    assert service.chat("nope").json() == {"error": "model 'nope' not found in config"}


@pytest.fixture(scope="module")
def openai2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """openai-python 2.x, installed apart from the suite's own 3.x (from PyPI, as users get it)."""
    target = tmp_path_factory.mktemp("openai2")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target), "openai>=2,<3"],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"could not install openai 2.x:\n{result.stderr[-3000:]}", pytrace=False)
    return target


CLIENT = """
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0)
try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
except openai.NotFoundError as exc:
    print(openai.__version__, exc)
"""


@pytest.mark.parametrize("shape", ["simple", "openai"])
def test_openai_2x_shows_the_reason_in_either_shape(start_service, openai2: Path, shape: str) -> None:
    service = start_service(f"    errorFormat: {shape}\n" + MODELS)
    result = subprocess.run([sys.executable, "-c", CLIENT, f"{service.url}/v1"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(openai2)})
    version, _, shown = result.stdout.partition(" ")
    assert version.startswith("2."), result.stdout + result.stderr
    assert "model 'nope' not found in config" in shown  # 2.x prints the whole body, whatever its shape
