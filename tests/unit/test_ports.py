"""Ports for `${PORT}` models: moving off a taken port, and the ephemeral-range warning."""

from __future__ import annotations

import socket
from pathlib import Path

from llama_swap.config import load_config_text
from llama_swap.ports import bind_hosts, can_bind, ephemeral_range, next_free, start_port_warning

MOVABLE = """
startPort: 9000
macros:
  srv: srv --ctx 4096
models:
  m:
    cmd: ${srv} --port ${PORT} --alias ${MODEL_ID}
    env: ["URL=http://127.0.0.1:${PORT}/x", "KEEP=1"]
    checkEndpoint: /health
    ttl: 30
    aliases: [mm]
  fixed:
    cmd: srv --port 7000
    proxy: http://127.0.0.1:7000
"""


def test_next_free_skips_reserved_and_taken_ports() -> None:
    taken = {9001, 9003}
    assert next_free(9000, reserved={9002}, free=lambda port: port not in taken) == 9004
    assert next_free(65534, reserved=set(), free=lambda port: False) is None
    assert next_free(65535, reserved=set(), free=lambda port: True) is None


def test_can_bind_sees_a_listener_and_a_connections_local_end() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not can_bind("127.0.0.1", listener.getsockname()[1])
        assert not can_bind("0.0.0.0", listener.getsockname()[1])  # a server on all addresses would fail too
        with socket.create_connection(listener.getsockname()) as outgoing:
            assert not can_bind("0.0.0.0", outgoing.getsockname()[1])
        free = listener.getsockname()[1]
    assert can_bind("127.0.0.1", free)  # closed: free again
    assert bind_hosts("localhost") == ["0.0.0.0", "localhost"]
    assert bind_hosts(None) == ["0.0.0.0", "127.0.0.1"]


def test_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    kernel = tmp_path / "ip_local_port_range"
    kernel.write_text("32768\t60999\n")
    assert ephemeral_range(kernel) == (32768, 60999)
    kernel.write_text("garbage")
    assert ephemeral_range(kernel) is None
    assert ephemeral_range(tmp_path / "missing") is None


def test_start_port_warning_names_the_ports_inside_the_ephemeral_range() -> None:
    warning = start_port_warning([40000, 40001, 5800], (32768, 60999))
    assert warning is not None
    assert "40000–40001" in warning and "32768–60999" in warning and "below 32768" in warning
    assert "models get port 40000," in (start_port_warning([40000], (32768, 60999)) or "")
    assert start_port_warning([5800, 5801], (32768, 60999)) is None
    assert start_port_warning([40000], None) is None
    assert start_port_warning([], (32768, 60999)) is None


def test_a_moved_model_takes_the_new_port_everywhere_the_old_one_was() -> None:
    model = load_config_text(MOVABLE).models["m"]
    moved = model.with_port(9100)
    assert moved.port == 9100 and moved.id == "m"
    assert moved.argv == ["srv", "--ctx", "4096", "--port", "9100", "--alias", "m"]
    assert moved.proxy == "http://localhost:9100"
    assert moved.env_map == {"URL": "http://127.0.0.1:9100/x", "KEEP": "1"}
    assert moved.ttl == 30 and moved.aliases == ["mm"]  # what did not hold the port is kept
    assert model.port == 9000 and model.argv[-3] == "9000"  # the original is untouched
    assert moved.with_port(9200).argv[-3] == "9200"  # it can move again
    assert moved.fingerprint() != model.fingerprint()
