"""The service in front of real fake-upstream processes, driven by the openai client."""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time

import openai
import pytest

from tests.fakes import fake_cmd, is_alive
from tests.integration.conftest import HI, RunningService

TWO_MODELS = f"""
healthCheckTimeout: 15
models:
  alpha:
    cmd: {fake_cmd(name="alpha", chunks=5)}
    aliases: [a, first]
    name: Alpha model
    description: the first one
  beta:
    cmd: {fake_cmd(name="beta", chunks=5)}
  hidden:
    cmd: {fake_cmd(name="hidden")}
    unlisted: true
"""


@pytest.fixture
def two(start_service) -> RunningService:
    return start_service(TWO_MODELS)


def test_chat_completion_lands_on_the_requested_model(two: RunningService) -> None:
    client = two.openai()
    reply = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello from alpha"
    assert reply.model == "alpha"
    assert two.health()["models"]["alpha"]["status"] == "running"


def test_swap_stops_the_previous_model(two: RunningService) -> None:
    client = two.openai()
    client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])
    alpha_pid = two.pid_of("alpha")
    reply = client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello from beta"
    assert not is_alive(alpha_pid)
    assert two.http.get("/running").json() == {"running": ["beta"]}
    assert set(two.health()["models"]) == {"beta"}


def test_alias_resolves_to_its_model(two: RunningService) -> None:
    reply = two.openai().chat.completions.create(model="first", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "hello from alpha"
    assert reply.model == "first"  # the body is passed upstream unchanged


def test_sixteen_concurrent_first_requests_share_one_process(start_service) -> None:
    service = start_service(
        f"""
        models:
          solo:
            cmd: {fake_cmd(name="solo", healthy_after=0.5)}
            concurrencyLimit: 32
        """
    )
    client = service.openai()

    def ask(_: int) -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(model="solo", messages=[{"role": "user", "content": "x"}])
        return raw.headers["x-upstream-pid"], raw.parse().choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(16)))
    assert {pid for pid, _ in results} == {str(service.pid_of("solo"))}
    assert all(text == "hello from solo" for _, text in results)
    assert service.log().count("[solo] starting:") == 1


def test_streaming_chunks_arrive_as_the_upstream_sends_them(start_service) -> None:
    service = start_service(
        f"""
        models:
          slow:
            cmd: {fake_cmd(name="slow", chunks=4, chunk_delay=0.3)}
        """
    )
    client = service.openai()
    client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "warm up"}])
    arrivals: list[float] = []
    text = ""
    for chunk in client.chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "count"}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    assert len(arrivals) == 4
    assert text == "tok0 tok1 tok2 tok3 "
    # each chunk was delivered when produced, not held until the end
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) > 0.15, gaps


def test_unknown_model_is_404_with_the_reference_message(two: RunningService) -> None:
    response = two.http.post("/v1/chat/completions", json={"model": "foo", "messages": []})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'foo' not found in config"}
    with pytest.raises(openai.NotFoundError):
        two.openai().chat.completions.create(model="nonexistent", messages=[{"role": "user", "content": "x"}])


def test_curl_style_form_labelled_json_is_understood(two: RunningService) -> None:
    response = two.http.post(
        "/v1/chat/completions",
        content=b'{"model":"nonexistent","messages":[{"role":"user","content":"test"}]}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nonexistent' not found in config"}


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"messages": []}', "application/json", "missing 'model'"),
        (b'{"model": 42}', "application/json", "'model' must be a string"),
        (b"[1, 2]", "application/json", "must be a JSON object"),
    ],
)
def test_bad_bodies_are_400_naming_the_problem(two: RunningService, body: bytes, content_type: str, fragment: str) -> None:
    response = two.http.post("/v1/chat/completions", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert two.http.get("/health").status_code == 200


def test_models_list_hides_unlisted_and_shows_names(two: RunningService) -> None:
    listing = two.http.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["alpha", "beta"]
    alpha = listing["data"][0]
    assert alpha["object"] == "model" and alpha["owned_by"] == "llama-swap" and isinstance(alpha["created"], int)
    assert alpha["name"] == "Alpha model" and alpha["description"] == "the first one"
    assert "name" not in listing["data"][1]
    assert [m.id for m in two.openai().models.list()] == ["alpha", "beta"]


def test_health_running_when_nothing_loaded(two: RunningService) -> None:
    assert two.http.get("/health").json() == {"status": "ok", "models": {}}
    assert two.http.get("/running").json() == {"running": []}


def test_unlisted_model_is_still_usable(two: RunningService) -> None:
    reply = two.openai().chat.completions.create(model="hidden", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "hello from hidden"


def test_load_unload_endpoints(two: RunningService) -> None:
    assert two.http.get("/upstream/alpha/load").json() == {"status": "ok", "message": "alpha is ready"}
    pid = two.pid_of("alpha")
    assert two.health()["models"]["alpha"] == {"status": "running", "pid": pid}
    assert two.http.delete("/upstream/alpha").json() == {"status": "ok", "message": "alpha stopped"}
    assert not is_alive(pid)
    assert two.http.delete("/upstream/alpha").json() == {"status": "error", "message": "alpha is not running"}
    assert two.http.get("/upstream/nope/load").status_code == 404


def test_unload_all(two: RunningService) -> None:
    two.http.get("/upstream/beta/load")
    pid = two.pid_of("beta")
    assert two.http.get("/unload").status_code == 200
    assert not is_alive(pid)
    two.http.get("/upstream/beta/load")
    assert two.http.post("/api/models/unload").json() == {"msg": "ok"}
    assert two.http.get("/running").json() == {"running": []}


def test_upstream_passthrough_forwards_method_path_query_headers_and_body(two: RunningService) -> None:
    response = two.http.put(
        "/upstream/alpha/echo/some%2Fpath/x?q=1&q=2&z=%20",
        content=b"raw body bytes",
        headers={"Authorization": "Bearer secret", "X-Custom": "v", "Content-Type": "text/plain"},
    )
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/echo/some%2Fpath/x"
    assert echoed["query_string"] == "q=1&q=2&z=%20"
    assert echoed["headers_lower"]["authorization"] == "Bearer secret"
    assert echoed["headers_lower"]["x-custom"] == "v"
    assert echoed["headers_lower"]["content-type"] == "text/plain"
    assert echoed["body_text"] == "raw body bytes"


def test_query_parameter_selects_the_model(two: RunningService) -> None:
    response = two.http.get("/slots", params={"model": "beta"})
    assert response.status_code == 200
    assert response.headers["x-upstream-name"] == "beta"
    # without a model, a native GET goes to the one running model
    assert two.http.get("/slots").headers["x-upstream-name"] == "beta"


def _moved(service: RunningService, model: str, port: int) -> int:
    """The port the service's log says ``model`` moved to from ``port``."""
    found = re.search(rf"\[{model}\] port {port} is in use by another program; starting on port (\d+) instead",
                      service.log())
    assert found, service.log()
    return int(found.group(1))


def test_a_port_taken_by_another_program_moves_the_model_to_a_free_one(start_service, squatter: socket.socket) -> None:
    port = squatter.getsockname()[1]
    service = start_service(
        f"""
        startPort: {port}
        models:
          m:
            cmd: {fake_cmd(name="m")}
          n:
            cmd: {fake_cmd(name="n")}
        """
    )
    client = service.openai()
    reply = client.chat.completions.create(model="m", messages=HI)
    assert reply.choices[0].message.content == "hello from m"
    moved = _moved(service, "m", port)
    assert moved not in (port, port + 1)  # never onto the port n was given
    with socket.create_connection(("127.0.0.1", moved), timeout=5):
        pass  # m's server listens there
    assert client.chat.completions.create(model="n", messages=HI).choices[0].message.content == "hello from n"
    # the stranger on the first port never saw a request: nothing was accepted from it
    squatter.setblocking(False)
    with pytest.raises(BlockingIOError):
        squatter.accept()


def test_a_port_held_by_an_outgoing_connection_is_not_listened_on(start_service) -> None:
    """Inside the ephemeral range any connection's local end may hold an assigned port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    outgoing = socket.create_connection(listener.getsockname())
    held = outgoing.getsockname()[1]
    try:
        service = start_service(
            f"""
            startPort: {held}
            models:
              m:
                cmd: {fake_cmd(name="m")}
            """
        )
        assert service.chat("m").json()["choices"][0]["message"]["content"] == "hello from m"
        assert _moved(service, "m", held) != held
        # the kernel gave the connection that port from its ephemeral range: startPort there is warned of
        assert f"startPort: models get port {held}, inside the kernel's ephemeral port range" in service.log()
    finally:
        outgoing.close()
        listener.close()


def test_a_port_written_in_cmd_is_not_moved(start_service, squatter: socket.socket) -> None:
    port = squatter.getsockname()[1]
    service = start_service(
        f"""
        healthCheckTimeout: 5
        models:
          m:
            cmd: {fake_cmd(name="m", port=port)}
            proxy: http://127.0.0.1:{port}
        """
    )
    response = service.chat("m")
    assert response.status_code == 503
    assert "address already in use" in response.json()["error"].lower(), response.text
    assert "starting on port" not in service.log()


def test_cors_preflight_is_answered_without_starting_a_model(two: RunningService) -> None:
    response = two.http.options(
        "/v1/chat/completions",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "content-type, authorization"
    assert two.http.get("/running").json() == {"running": []}


def test_response_header_timeout_gives_502(start_service) -> None:
    service = start_service(
        f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
            timeouts:
              responseHeader: 1
        """
    )
    response = service.http.get("/slow", params={"model": "m", "seconds": 5})
    assert response.status_code == 502
    assert "upstream 'm' did not answer in time" in response.json()["error"]
    assert service.http.get("/slow", params={"model": "m", "seconds": 0}).json()["done"] is True


def test_static_asset_requests_do_not_load_a_model(two: RunningService) -> None:
    response = two.http.get("/upstream/alpha/assets/app.js")
    assert response.status_code == 409
    assert "upstream.ignorePaths" in response.json()["error"]
    assert two.http.get("/running").json() == {"running": []}
    two.http.get("/upstream/alpha/load")
    assert two.http.get("/upstream/alpha/assets/app.js").status_code == 404  # now the upstream's own answer


def test_upstream_closing_kept_alive_connections_after_streams_costs_no_request(start_service) -> None:
    """llama-server closes its connection after every streamed answer although it offered
    keep-alive; a request sent on such a pooled connection is sent again, not failed."""
    service = start_service(f"models:\n  m:\n    cmd: {fake_cmd(name='m', chunks=2, close_after_stream=True)}\n")
    statuses = [
        service.http.post("/v1/chat/completions", json={"model": "m", "messages": HI, "stream": i % 2 == 0}).status_code
        for i in range(60)
    ]
    assert statuses == [200] * 60
