"""The API reference's contract where an audit found the service apart from it: what a
client sees of the answers the service writes itself (errors, `/upstream/{model}/load`).

- An answer to `HEAD` has no content (RFC 9110 §9.3.2): the lane's own answers (a refusal,
  a load's answer) sent their JSON body after the head, which a kept-alive client then read
  as the start of the next answer.
- `GET /upstream/{model}/load` for a model that fails to start answers the reference's
  503 `{"error": "..."}`, as a request that started it does (it answered
  `{"status": "error", "message"}`, a shape the reference gives only to
  `DELETE /upstream/{model}` of a model not running).
"""

from __future__ import annotations

import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import RunningService
from tests.integration.rawhttp import Reader, connect, request

CONFIG = f"""
healthCheckTimeout: 15
models:
  llama3:
    cmd: {fake_cmd(name="llama3")}
  broken:
    cmd: {fake_cmd(name="broken", crash_at_start=True)}
"""


@pytest.fixture
def svc(start_service) -> RunningService:
    return start_service(CONFIG)


def test_head_answers_carry_no_body_and_the_connection_stays_usable(svc: RunningService) -> None:
    with connect(svc) as sock:
        reader = Reader(sock)

        def head(target: str) -> tuple[int, dict[str, str]]:
            sock.sendall(request("HEAD", target))
            answer = reader.response(head_request=True)
            assert answer.body == b""
            return answer.status, {name.lower(): value for name, value in answer.header_list}

        status, fields = head("/v1/chat/completions")  # no model named, none running
        assert status == 400 and fields["content-type"] == "application/json"
        assert int(fields["content-length"]) > 0  # the length of the body a GET would get
        assert head("/upstream/nope/load")[0] == 404
        assert head("/upstream/broken/load")[0] == 503
        assert head("/upstream/llama3/load")[0] == 200  # HEAD is GET without the body: it loads
        assert head("/slots?model=llama3")[0] == 200  # relayed from the upstream, as before
        # after all of them, on the same connection, the next answer is read whole and right
        sock.sendall(request("GET", "/running"))
        answer = reader.response()
        assert answer.status == 200 and answer.json() == {"running": ["llama3"]}
        assert reader.buffer == b""


def test_head_pipelined_before_a_get_leaves_nothing_between_them(svc: RunningService) -> None:
    with connect(svc) as sock:
        reader = Reader(sock)
        sock.sendall(request("HEAD", "/upstream/nope/load") + request("GET", "/upstream/nope/load"))
        assert reader.response(head_request=True).status == 404
        answer = reader.response()
        assert answer.status == 404 and answer.json() == {"error": "model 'nope' not found in config"}


def test_load_of_a_model_that_fails_to_start_is_the_references_503(svc: RunningService) -> None:
    load = svc.http.get("/upstream/broken/load")
    assert load.status_code == 503
    assert load.headers["content-type"] == "application/json"
    assert list(load.json()) == ["error"]
    assert "exited with code 1" in load.json()["error"]
    request_error = svc.chat("broken")  # the same failure, met by a request
    assert request_error.status_code == 503 and list(request_error.json()) == ["error"]
    # the success and the other error of the same endpoint, as the reference gives them
    assert svc.http.get("/upstream/llama3/load").json() == {"status": "ok", "message": "llama3 is ready"}
    assert svc.http.get("/upstream/nope/load").json() == {"error": "model 'nope' not found in config"}


def test_load_failure_follows_the_error_format(start_service) -> None:
    service = start_service("errorFormat: openai\n" + CONFIG)
    load = service.http.get("/upstream/broken/load")
    assert load.status_code == 503
    body = load.json()
    assert body["src"] == "llama-swap" and body["error"]["code"] == "service_unavailable"
    assert "exited with code 1" in body["error"]["message"]
