"""ModelConfig.fingerprint: which edits force a running upstream to restart on reload."""

import pytest

from llama_swap.config import load_config_text

BASE = """
macros:
  model_dir: /models
models:
  a-first:
    cmd: llama-server --port ${PORT}
  m:
    cmd: |
      llama-server --port ${PORT}
      -m ${model_dir}/m.gguf
"""


def _fingerprint(extra: str = "", text: str = BASE) -> str:
    return load_config_text(text + extra).models["m"].fingerprint()


@pytest.mark.parametrize(
    "extra",
    [
        "    cmdStop: docker stop m\n",
        "    env: [CUDA_VISIBLE_DEVICES=1]\n",
        "    proxy: http://127.0.0.1:${PORT}\n",
        "    checkEndpoint: /v1/models\n",
        "    timeouts: {responseHeader: 30}\n",
        "    timeouts: {idleConn: 10}\n",
    ],
)
def test_start_settings_change_the_fingerprint(extra: str) -> None:
    assert _fingerprint(extra) != _fingerprint()


def test_a_new_port_or_macro_value_changes_the_fingerprint() -> None:
    assert _fingerprint(text="startPort: 6000\n" + BASE) != _fingerprint()
    assert _fingerprint(text=BASE.replace("/models", "/srv/models")) != _fingerprint()
    assert _fingerprint(text=BASE.replace("a-first", "z-last")) != _fingerprint()


@pytest.mark.parametrize(
    "extra",
    [
        "    ttl: 300\n",
        "    unloadTimeout: 30\n",
        "    aliases: [mm]\n",
        "    name: M\n    description: the m model\n",
        "    unlisted: true\n",
        "    metadata: {tier: gold}\n",
        "    capabilities: {in: [text, image], tools: true, context: 8192}\n",
        "    filters: {stripParams: top_k, setParams: {temperature: 0.2}}\n",
        "    useModelName: org/m\n",
        "    concurrencyLimit: 2\n",
        "    sendLoadingState: true\n",
        "    macros: {unused: 1}\n",
    ],
)
def test_live_settings_keep_the_fingerprint(extra: str) -> None:
    assert _fingerprint(extra) == _fingerprint()


def test_reformatting_cmd_keeps_the_fingerprint() -> None:
    one_line = BASE.split("  m:")[0] + "  m:\n    cmd: llama-server --port ${PORT} -m ${model_dir}/m.gguf\n"
    assert _fingerprint(text=one_line) == _fingerprint()


def test_env_order_only_matters_for_the_winning_value() -> None:
    assert _fingerprint("    env: [A=1, B=2]\n") == _fingerprint("    env: [B=2, A=1]\n")
    assert _fingerprint("    env: [A=1, A=2]\n") == _fingerprint("    env: [A=2]\n")
    assert _fingerprint("    env: [A=2, A=1]\n") != _fingerprint("    env: [A=2]\n")


def test_reload_keeps_running_models_on_their_ports() -> None:
    before = load_config_text("models:\n  b:\n    cmd: srv ${PORT}\n  c:\n    cmd: srv ${PORT}\n")
    assert {m: c.port for m, c in before.models.items()} == {"b": 5800, "c": 5801}
    text = "models:\n  a:\n    cmd: srv ${PORT}\n  b:\n    cmd: srv ${PORT}\n  c:\n    cmd: srv ${PORT}\n"
    fresh = load_config_text(text)
    assert {m: c.port for m, c in fresh.models.items()} == {"a": 5800, "b": 5801, "c": 5802}
    kept = load_config_text(text, keep_ports={"b": 5800, "c": 5801})
    assert {m: c.port for m, c in kept.models.items()} == {"a": 5802, "b": 5800, "c": 5801}
    assert kept.models["b"].fingerprint() == before.models["b"].fingerprint()
    assert kept.models["b"].argv == ["srv", "5800"]


def test_kept_ports_below_a_raised_start_port_are_reassigned() -> None:
    text = "startPort: 6000\nmodels:\n  b:\n    cmd: srv ${PORT}\n"
    assert load_config_text(text, keep_ports={"b": 5800}).models["b"].port == 6000


def test_new_models_avoid_ports_of_removed_models_still_running() -> None:
    text = "models:\n  c:\n    cmd: srv ${PORT}\n"
    assert load_config_text(text, keep_ports={"a": 5800}).models["c"].port == 5801
