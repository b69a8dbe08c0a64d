"""The API reference's contract where an audit found the service apart from it: what a
client sees of the answers the service writes itself (errors, `/upstream/{model}/load`).

- An answer to `HEAD` has no content (RFC 9110 §9.3.2): the lane's own answers (a refusal,
  a load's answer) sent their JSON body after the head, which a kept-alive client then read
  as the start of the next answer.
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
