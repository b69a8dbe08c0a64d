"""Peers, selectors and profiles: names that lead somewhere else than one local model, as
in llama-swap (pipeline: profile pin → selector → model id or alias → peer model)."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import pytest

from tests.fakes import fake_cmd, free_port
from tests.integration.conftest import HI, service_command, wait_until


def with_peer(port: int, extra: str = "", path: str = "") -> str:
    return f"""
        models:
          local:
            cmd: {fake_cmd(name="local")}
        peers:
          far:
            proxy: http://127.0.0.1:{port}{path}
            apiKey: peer-secret
            models: [remote-a, remote-b]
            filters:
              setParams: {{temperature: 0.25}}
        {extra}
        """


# ----------------------------------------------------------------------------- peers


def test_a_peer_model_is_answered_by_the_peer_streaming_included(start_service, remote: int) -> None:
    service = start_service(with_peer(remote))
    client = service.openai()
    reply = client.chat.completions.create(model="far/remote-a", messages=HI)
    assert reply.choices[0].message.content == "hello from remote"
    assert reply.model == "remote-a"  # the peer is asked for its own name for the model
    bare = client.chat.completions.create(model="remote-b", messages=HI)  # one peer has it: the bare name works
    assert bare.model == "remote-b"
    stream = client.chat.completions.create(model="far/remote-a", messages=HI, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "  # the fake streams its tokens
    assert service.http.get("/running").json() == {"running": []}  # a peer never starts or swaps a local model


def test_a_peer_gets_its_key_and_filters_and_never_the_clients_key(start_service, remote: int) -> None:
    service = start_service(with_peer(remote, path="/echo", extra="apiKeys: [client-key]"))
    response = service.http.post("/v1/chat/completions", json={"model": "far/remote-a", "messages": HI},
                                 headers={"Authorization": "Bearer client-key", "x-api-key": "client-key"})
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["path"] == "/echo/v1/chat/completions"
    assert echoed["headers_lower"]["authorization"] == "Bearer peer-secret"
    assert echoed["headers_lower"]["x-api-key"] == "peer-secret"
    assert "client-key" not in str(echoed["header_list"])
    assert echoed["headers_lower"]["host"] == f"127.0.0.1:{remote}"
    body = httpx.Response(200, content=echoed["body_text"]).json()
    assert body == {"model": "remote-a", "messages": HI, "temperature": 0.25}


def test_a_peer_that_does_not_answer_is_a_502_naming_it_and_local_models_go_on(start_service) -> None:
    dead = free_port()  # nothing listens there
    service = start_service(with_peer(dead))
    response = service.chat("far/remote-a")
    assert response.status_code == 502
    message = response.json()["error"]
    assert message.startswith(f"peer proxy error: peer 'far' (http://127.0.0.1:{dead}) did not answer:"), message
    assert service.chat("local").json()["choices"][0]["message"]["content"] == "hello from local"


def test_peer_models_are_listed_and_accounted_like_local_ones(start_service, remote: int) -> None:
    service = start_service(with_peer(remote))
    listed = {record["id"]: record for record in service.http.get("/v1/models").json()["data"]}
    assert set(listed) == {"local", "far/remote-a", "far/remote-b"}
    assert listed["far/remote-a"]["name"] == "far: remote-a"
    assert listed["far/remote-a"]["meta"]["llamaswap"] == {"type": "peer", "peerID": "far"}
    assert listed["far/remote-a"]["status"] == {"value": "unloaded"}
    assert service.chat("far/remote-a").status_code == 200
    rows = service.http.get("/api/metrics/activity").json()["data"]
    assert [(row["model"], row["resp_status_code"]) for row in rows] == [("far/remote-a", 200)]
    assert 'llamaswap_requests_total{model="far/remote-a"' in service.http.get("/metrics").text


# ----------------------------------------------------------------------------- selectors

SELECTORS = f"""
    groups:
      together: {{swap: false, exclusive: true, members: [a, b]}}
    models:
      a:
        cmd: {fake_cmd(name="a", chunk_delay=0.05, chunks=20)}
      b:
        cmd: {fake_cmd(name="b", chunk_delay=0.05, chunks=20)}
    selectors:
      first:
        strategy: pin
        targets: [a, b]
        name: Always a
      warmest:
        strategy: warm
        targets: [a, b]
      spread:
        strategy: spillover
        targets: [a, b]
        settings: {{spillover: 1}}
      hidden:
        strategy: pin
        targets: [b]
        unlisted: true
    """


def test_a_pin_selector_sends_to_its_first_target_with_the_targets_name(start_service) -> None:
    service = start_service(SELECTORS)
    reply = service.openai().chat.completions.create(model="first", messages=HI)
    assert reply.choices[0].message.content == "hello from a"
    assert reply.model == "a"  # the body names the target, as llama-swap rewrites it
    (row,) = service.http.get("/api/metrics/activity").json()["data"]
    assert (row["model"], row["metadata"]) == ("a", {"selector": "first"})  # the row says which selector chose


def test_a_warm_selector_prefers_a_running_target(start_service) -> None:
    service = start_service(SELECTORS)
    assert service.chat("b").status_code == 200  # b is running now, a is not
    assert service.chat("warmest").json()["choices"][0]["message"]["content"] == "hello from b"
    assert service.http.get("/running").json() == {"running": ["b"]}


def test_a_spillover_selector_spreads_concurrent_requests(start_service) -> None:
    service = start_service(SELECTORS)
    with service.http.stream("POST", "/v1/chat/completions",
                             json={"model": "spread", "messages": HI, "stream": True}) as first:
        first_upstream = first.headers["x-upstream-name"]
        second = service.chat("spread")  # the first target has its one request: the next one starts
        assert second.headers["x-upstream-name"] != first_upstream
        first.read()
    assert {first_upstream, second.headers["x-upstream-name"]} == {"a", "b"}


def test_selectors_are_listed_unless_unlisted(start_service) -> None:
    service = start_service(SELECTORS)
    listed = {record["id"]: record for record in service.http.get("/v1/models").json()["data"]}
    assert {"first", "warmest", "spread"} <= set(listed) and "hidden" not in listed
    assert listed["first"]["name"] == "Always a"
    assert listed["spread"]["meta"]["llamaswap"] == {"type": "selector", "strategy": "spillover",
                                                     "targets": ["a", "b"], "spillover": 1}
    assert listed["first"]["status"] == {"value": "unloaded"}
    service.chat("a")
    assert service.http.get("/v1/models").json()["data"][[r["id"] for r in service.http.get(
        "/v1/models").json()["data"]].index("first")]["status"] == {"value": "loaded"}


# ----------------------------------------------------------------------------- profiles

PROFILES = f"""
    models:
      small:
        cmd: {fake_cmd(name="small")}
        aliases: [chat]
      big:
        cmd: {fake_cmd(name="big")}
    profiles:
      evening:
        description: the big one for chat
        pins:
          chat: big
          writer: big
          small: ~
      quiet:
        pins:
          chat: ""
    """


def test_profiles_are_listed_and_none_is_active_at_start(start_service) -> None:
    service = start_service(PROFILES)
    assert service.http.get("/api/profiles").json() == {
        "active": None,
        "profiles": [
            {"id": "evening", "description": "the big one for chat",
             "pins": {"chat": "big", "writer": "big", "small": ""}},
            {"id": "quiet", "description": "", "pins": {"chat": ""}},
        ],
    }
    assert service.chat("chat").json()["choices"][0]["message"]["content"] == "hello from small"
    assert service.chat("writer").status_code == 404


def test_an_active_profile_rewrites_and_disables_names(start_service) -> None:
    service = start_service(PROFILES)
    assert service.http.put("/api/profiles/active", json={"name": "evening"}).json() == {"active": "evening"}
    assert service.chat("chat").json()["choices"][0]["message"]["content"] == "hello from big"
    assert service.chat("writer").json()["choices"][0]["message"]["content"] == "hello from big"
    assert service.chat("small").json()["choices"][0]["message"]["content"] == "hello from small"  # ids win
    listed = {record["id"]: record for record in service.http.get("/v1/models").json()["data"]}
    assert listed["writer"]["meta"]["llamaswap"] == {"type": "profile", "profile": "evening", "target": "big"}
    assert "chat" not in listed  # an alias: not a record of its own unless includeAliasesInList
    service.http.put("/api/profiles/active", json={"name": "quiet"})
    disabled = service.chat("chat")
    assert disabled.status_code == 404
    assert disabled.json() == {"error": "model 'chat' is disabled by the active profile 'quiet'"}
    with pytest.raises(openai.NotFoundError):
        service.openai().chat.completions.create(model="chat", messages=HI)
    assert service.http.put("/api/profiles/active", json={"name": None}).json() == {"active": None}
    assert service.chat("chat").json()["choices"][0]["message"]["content"] == "hello from small"


def test_switching_to_an_unknown_or_malformed_profile_is_refused(start_service) -> None:
    service = start_service(PROFILES)
    unknown = service.http.put("/api/profiles/active", json={"name": "morning"})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "profile 'morning' not found (profiles: evening, quiet)"}
    for bad in (b"{", b"[]", b'{"name": 3}', b"{}"):
        response = service.http.put("/api/profiles/active", content=bad)
        assert response.status_code == 400, bad
    assert service.http.get("/api/profiles").json()["active"] is None


def test_a_reload_deactivates_the_profile(start_service) -> None:
    from tests.integration.test_reload import reload

    service = start_service(PROFILES)
    service.http.put("/api/profiles/active", json={"name": "evening"})
    reload(service, PROFILES + "\n    # touched\n")
    assert service.http.get("/api/profiles").json()["active"] is None
    assert service.chat("chat").json()["choices"][0]["message"]["content"] == "hello from small"


def test_a_profile_pin_can_lead_to_a_peer(start_service, remote: int) -> None:
    service = start_service(with_peer(remote, extra="""
        profiles:
          offload:
            pins: {local: far/remote-a, helper: far/remote-a}
        """))
    service.http.put("/api/profiles/active", json={"name": "offload"})
    assert service.chat("helper").json()["choices"][0]["message"]["content"] == "hello from remote"
    assert service.chat("local").json()["choices"][0]["message"]["content"] == "hello from local"  # ids win


def test_a_peer_request_is_metered_and_can_be_cancelled(start_service, remote: int) -> None:
    service = start_service(with_peer(remote))
    reply = service.openai().chat.completions.create(model="far/remote-a", messages=HI)
    assert reply.usage is not None
    rows = service.http.get("/api/metrics/activity").json()["data"]
    assert rows[0]["prompt_tokens"] == reply.usage.prompt_tokens
    assert rows[0]["generated_tokens"] == reply.usage.completion_tokens

    body = {"model": "far/remote-a", "messages": HI, "stream": True, "n_chunks": 400, "chunk_delay": 0.05}
    with service.http.stream("POST", "/v1/chat/completions", json=body) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")
        (request,) = service.http.get("/api/inflight").json()["requests"]
        assert request["model"] == "far/remote-a"
        assert service.http.post(f"/api/inflight/{request['id']}/cancel").json() == {"msg": "ok"}
        rest = "\n".join(lines)  # the stream ends (with an error event), it does not run on
    assert "cancelled" in rest
    assert wait_until(lambda: service.http.get("/api/inflight").json()["requests"] == [])


def test_the_upstream_passthrough_reaches_a_peer(start_service, remote: int) -> None:
    service = start_service(with_peer(remote))
    health = service.http.get("/upstream/far/remote-a/health")
    assert health.status_code == 200 and health.headers["x-upstream-name"] == "remote"
    echoed = service.http.post("/upstream/far/remote-a/echo/x?q=1", content=b"raw").json()
    assert (echoed["path"], echoed["query_string"], echoed["body_text"]) == ("/echo/x", "q=1", "raw")
    assert echoed["headers_lower"]["authorization"] == "Bearer peer-secret"
    redirect = service.http.get("/upstream/far/remote-a", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (301, "/upstream/far/remote-a/")
    refused = service.http.delete("/upstream/far/remote-a")
    assert refused.status_code == 400
    assert refused.json() == {"error": "model 'far/remote-a' is served by peer 'far': it is not stopped here"}
    assert service.http.get("/running").json() == {"running": []}


def test_a_websocket_reaches_a_peer_with_the_peers_key(start_service, remote: int) -> None:
    from websockets.sync.client import connect

    service = start_service(with_peer(remote))
    url = service.url.replace("http://", "ws://")
    for path in ("/upstream/far/remote-a/ws", "/ws?model=far/remote-a"):
        with connect(url + path, open_timeout=10, close_timeout=2) as ws:
            ws.send("through two hops")
            assert ws.recv(timeout=10) == "through two hops"
            ws.send("headers")
            seen = {name.lower(): value for name, value in json.loads(ws.recv(timeout=10)).items()}
            assert seen["authorization"] == "Bearer peer-secret" and seen["x-api-key"] == "peer-secret"
    assert service.http.get("/running").json() == {"running": []}


# ----------------------------------------------------------------------------- bad input

LOCAL = f"models:\n  a:\n    cmd: {fake_cmd(name='a')}\n"


@pytest.mark.parametrize(("extra", "message"), [
    ("selectors:\n  s: {strategy: fastest, targets: [a]}\n",
     "selectors.s.strategy: must be one of 'warm', 'pin' or 'spillover'"),
    ("selectors:\n  s: {strategy: pin, targets: [t]}\n  t: {strategy: pin, targets: [a]}\n",
     'selectors.s.targets[0]: "t" is a selector; a selector cannot target another selector'),
    ("peers:\n  p: {models: [x]}\n", "peers.p.proxy: is required"),
    ("profiles:\n  loop: {pins: {x: y, y: x}}\n", 'profiles.loop.pins.x: unknown model "y"'),
    ("profiles:\n  p: {pins: {x: nowhere}}\n", 'profiles.p.pins.x: unknown model "nowhere"'),
])
def test_a_bad_config_is_refused_at_start_naming_the_key(tmp_path, extra: str, message: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(LOCAL + extra)
    result = subprocess.run(service_command(config, f"127.0.0.1:{free_port()}"), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_websocket_to_an_upstream_without_websockets_gets_its_answer(start_service, remote: int) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    service = start_service(with_peer(remote))
    with pytest.raises(InvalidStatus) as refused:  # no websocket there: the server answers as to a plain GET
        connect(service.url.replace("http://", "ws://") + "/upstream/far/remote-a/v1/models", open_timeout=10)
    answer = refused.value.response
    assert answer.status_code == 200 and b'"upstream":"remote"' in answer.body  # relayed as it was, not a 101
    assert service.chat("far/remote-a").status_code == 200  # and nothing else is affected
