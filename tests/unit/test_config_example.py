"""examples/config.example.yaml: it loads, resolves as documented, and every edit that
breaks it is reported with the key path and line a user would need."""

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from llama_swap.config import Config, ConfigError, load_config, load_config_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.example.yaml"
SOURCE = "config.example.yaml"
ENV = {"MODELS_DIR": "/srv/models", "OPENROUTER_API_KEY": "sk-or-example"}

GLOBAL_KEYS = [
    "healthCheckTimeout", "logLevel", "logTimeFormat", "logToStdout", "logRequests",
    "metricsMaxInMemory", "captureBuffer", "store.path", "ui.activity.session_id",
    "performance.disabled", "performance.every", "startPort", "sendLoadingState",
    "includeAliasesInList", "globalTTL", "unloadTimeout", "macros", "upstream.ignorePaths",
    "profiles", "selectors", "models", "hooks.on_startup.preload", "routing.router.use",
    "routing.router.settings.groups", "routing.router.settings.matrix.vars",
    "routing.router.settings.matrix.evict_costs", "routing.router.settings.matrix.sets",
    "routing.scheduler.use", "routing.scheduler.settings.fifo.priority", "peers",
]
MODEL_KEYS = [
    "cmd", "cmdStop", "proxy", "aliases", "env", "checkEndpoint", "ttl", "unloadTimeout",
    "unlisted", "useModelName", "name", "description", "concurrencyLimit",
    "filters.stripParams", "filters.setParams", "filters.setParamsByID", "macros", "metadata",
    "sendLoadingState", "timeouts.connect", "timeouts.keepalive", "timeouts.responseHeader",
    "timeouts.tlsHandshake", "timeouts.expectContinue", "timeouts.idleConn",
    "compat.ignoreWebsockets", "capabilities.in", "capabilities.out", "capabilities.tools",
    "capabilities.reranker", "capabilities.context",
]
PEER_KEYS = ["proxy", "models", "apiKey", "filters.stripParams", "filters.setParams", "timeouts"]
SELECTOR_KEYS = ["strategy", "targets", "settings.spillover", "name", "description", "unlisted", "metadata"]
GROUP_KEYS = ["swap", "exclusive", "persistent", "members"]


@pytest.fixture(autouse=True)
def _example_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


@pytest.fixture
def cfg() -> Config:
    return load_config(EXAMPLE)


def _line(text: str, snippet: str) -> int:
    return text[:text.index(snippet)].count("\n") + 1


def _has(tree: Any, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def test_every_documented_key_is_shown(text: str) -> None:
    tree = YAML(typ="safe").load(text.replace("${", "$"))
    sections = {
        "": ([tree], GLOBAL_KEYS),
        "models": (tree["models"].values(), MODEL_KEYS),
        "peers": (tree["peers"].values(), PEER_KEYS),
        "selectors": (tree["selectors"].values(), SELECTOR_KEYS),
        "groups": (tree["routing"]["router"]["settings"]["groups"].values(), GROUP_KEYS),
    }
    missing = [f"{name}: {key}" for name, (entries, keys) in sections.items()
               for key in keys if not any(_has(entry, key) for entry in entries)]
    assert missing == []
    assert "apiKeys:" in text  # shown, commented out


def test_ports_follow_sorted_model_ids(cfg: Config) -> None:
    assert {model_id: model.port for model_id, model in cfg.models.items()} == {
        "bge-reranker": 10001, "comfyui_auto": 10002, "gemma3-12b": 10003, "gpt-oss-120b": 10004,
        "nomic-embed": 10005, "qwen3-coder-30b": 10006, "sd-xl": 10007, "whisper-large-v3": 10008,
        "kokoro-tts": None,
    }
    assert cfg.models["gpt-oss-120b"].proxy == "http://127.0.0.1:10004"
    assert cfg.models["qwen3-coder-30b"].check_url == "http://localhost:10006/health"
    assert cfg.models["kokoro-tts"].proxy == "http://127.0.0.1:8880"
    assert cfg.models["whisper-large-v3"].check_url is None


def test_commands(cfg: Config) -> None:
    oss = cfg.models["gpt-oss-120b"]
    assert oss.argv == [
        "/opt/llama.cpp/build/bin/llama-server", "--host", "127.0.0.1", "--port", "10004", "--metrics",
        "--model", "/srv/models/gpt-oss-120b-mxfp4-00001-of-00003.gguf", "--ctx-size", "65536",
        "--n-gpu-layers", "99", "--jinja", "--temp", "0.7",
    ]
    assert oss.stop_argv == ["kill", "-s", "INT", "${PID}"]
    assert oss.env_map == {"CUDA_VISIBLE_DEVICES": "0,1", "GGML_CUDA_ENABLE_UNIFIED_MEMORY": "1"}
    assert cfg.models["qwen3-coder-30b"].argv[6:] == [
        "--model", "/srv/models/Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", "--ctx-size", "16384",
        "--n-gpu-layers", "99", "--jinja",
    ]
    assert cfg.models["kokoro-tts"].stop_argv == ["docker", "stop", "kokoro-tts"]


def test_aliases_include_set_params_by_id_variants(cfg: Config) -> None:
    assert cfg.aliases == {
        "gpt-oss-120b:high": "gpt-oss-120b",
        "gpt-oss-120b:low": "gpt-oss-120b",
        "qwen-coder": "qwen3-coder-30b",
        "gpt-4o-mini": "qwen3-coder-30b",
        "gemma": "gemma3-12b",
    }
    assert cfg.model_for("gpt-oss-120b:high") is cfg.models["gpt-oss-120b"]


def test_inherited_settings(cfg: Config) -> None:
    ttl = {model_id: model.ttl for model_id, model in cfg.models.items()}
    assert (ttl["gpt-oss-120b"], ttl["qwen3-coder-30b"], ttl["gemma3-12b"], ttl["nomic-embed"]) == (
        600, 1800, 1800, 0)
    assert cfg.models["gpt-oss-120b"].unload_timeout == 60
    assert cfg.models["qwen3-coder-30b"].unload_timeout == 15
    assert cfg.models["gpt-oss-120b"].send_loading_state is False
    assert cfg.models["gemma3-12b"].send_loading_state is True
    assert cfg.models["gpt-oss-120b"].concurrency_limit == 4
    assert cfg.models["comfyui_auto"].concurrency_limit == 50
    assert cfg.models["comfyui_auto"].compat.ignore_websockets is True
    assert cfg.models["bge-reranker"].health_check_timeout == 300


def test_metadata_keeps_macro_types(cfg: Config) -> None:
    assert cfg.models["gpt-oss-120b"].metadata == {
        "port": 10004,
        "temperature": 0.7,
        "thinking": True,
        "context": 65536,
        "summary": "gpt-oss-120b on port 10004, context 65536",
        "tags": ["reasoning", "gpt-oss-120b", 99],
    }


def test_global_sections(cfg: Config) -> None:
    assert cfg.preload == ["qwen3-coder-30b", "nomic-embed"]
    assert cfg.warnings == []
    assert cfg.store is not None and cfg.store.path == "./llama-swap-activity.db"
    assert cfg.performance.every.total_seconds() == 10
    assert cfg.ui.activity.session_id == ["X-Session-ID", "X-OpenWebUI-Chat-Id"]
    assert len(cfg.upstream.ignore_patterns) == 2
    assert cfg.api_keys == []
    openrouter, workstation = cfg.peers["openrouter"], cfg.peers["workstation"]
    assert openrouter.api_key == "sk-or-example"
    assert (openrouter.timeouts.connect, openrouter.timeouts.response_header) == (10, 120)
    assert workstation.timeouts.response_header == 60
    assert cfg.profiles["quiet"].pins == {"gpt-oss-120b": "gemma3-12b", "sd-xl": ""}
    assert cfg.selectors["coder"].settings.spillover == 4
    assert cfg.selectors["chat"].settings.spillover == 1
    assert cfg.routing["router"]["use"] == "group"


LEGACY_PROFILE = (
    "profiles.quiet: must be a mapping with description and pins; the legacy list syntax is no "
    "longer supported (to run models together, make them members of a group with swap: false "
    "under routing.router.settings.groups)"
)

# (text to replace, replacement, text the error points at if not the replaced one, error)
BROKEN = [
    ("    ttl: 600\n", "    ttl: ten minutes\n", None, "models.gpt-oss-120b.ttl: must be an integer"),
    ("useModelName: openai", "useModelname: openai", None,
     'models.gpt-oss-120b.useModelname: unknown key (did you mean "useModelName"?)'),
    ("idleConn: 90 ", "idleConnection: 90 ", None,
     'models.gpt-oss-120b.timeouts.idleConnection: unknown key (did you mean "idleConn"?)'),
    ("--jinja --temp ${temp}", "--jinja --temp ${temperature}", "    cmd: |\n      ${serve}\n      --model",
     "models.gpt-oss-120b.cmd: unknown macro ${temperature}"),
    ("- CUDA_VISIBLE_DEVICES=0,1\n", "- CUDA_VISIBLE_DEVICES 0,1\n", None,
     "models.gpt-oss-120b.env[0]: must look like NAME=value"),
    ("{in: [text, image], out: [text], context", "{in: [text, video], out: [text], context", None,
     "models.gemma3-12b.capabilities.in[1]: must be one of 'text', 'audio' or 'image'"),
    ("aliases: [gemma]", "aliases: [gemma, gpt-4o-mini]", None,
     'models.gemma3-12b.aliases[1]: alias "gpt-4o-mini" is already used as an alias of model '
     "qwen3-coder-30b"),
    ("aliases: [gemma]", "aliases: [gemma, gpt-oss-120b:high]", None,
     'models.gemma3-12b.aliases[1]: alias "gpt-oss-120b:high" is already used as an alias of model '
     "gpt-oss-120b"),
    ("aliases: [gemma]", "aliases: [gemma, openrouter/qwen/qwen3-coder]", "      - qwen/qwen3-coder\n",
     'peers.openrouter.models[0]: peer model "openrouter/qwen/qwen3-coder" is already used as '
     "an alias of model gemma3-12b"),
    ("--name ${MODEL_ID} -p", "--name ${PID} -p", "    cmd: docker run",
     "models.kokoro-tts.cmd: ${PID} is only allowed in cmdStop"),
    ("    proxy: http://127.0.0.1:8880\n", "", '  "kokoro-tts":',
     "models.kokoro-tts.proxy: uses ${PORT} but cmd does not; a model with a fixed port must set "
     "proxy to its URL"),
    ("checkEndpoint: /system_stats", "checkEndpoint: system_stats", None,
     'models.comfyui_auto.checkEndpoint: must start with "/" or be "none"'),
    ("  temp: 0.7\n", "  PORT: 0.7\n", None, "macros.PORT: PORT is a reserved macro name"),
    ("logToStdout: both", "logToStdout: all", None,
     "logToStdout: must be one of 'proxy', 'upstream', 'both' or 'none'"),
    ("path: ./llama-swap-activity.db", "path: ''", None, "store.path: must not be empty"),
    ("session_id: [X-Session-ID, X-OpenWebUI-Chat-Id]", "session_id: X-Session-ID", None,
     "ui.activity.session_id: must be a list"),
    ("every: 10s", "every: 1s", None, "performance.every: must be at least 5s"),
    ("every: 10s", "every: 10", None,
     'performance.every: must be a duration such as "5s" or "1m30s"'),
    ("'^/?favicon'", "'^/?(favicon'", None,
     "upstream.ignorePaths[1]: invalid regular expression: missing ), unterminated subpattern at "
     "position 3"),
    ("    models:\n      - llama-3.3-70b\n      - qwen2.5-vl-72b\n", "    models: []\n", None,
     "peers.workstation.models: must not be empty"),
    ("apiKey: ${env.OPENROUTER_API_KEY}", "apiKey: [${env.OPENROUTER_API_KEY}]", None,
     "peers.openrouter.apiKey: must be a string"),
    ("  quiet:\n    description: No big model, no image generation\n    pins:\n"
     "      gpt-oss-120b: gemma3-12b\n      sd-xl: ~\n", "  quiet: [gemma3-12b, nomic-embed]\n", None,
     LEGACY_PROFILE),
    ("strategy: warm", "strategy: fastest", None,
     "selectors.chat.strategy: must be one of 'warm', 'pin' or 'spillover'"),
    ("targets: [gemma3-12b, qwen3-coder-30b, gpt-oss-120b]",
     "targets: [gemma3-12b, workstation/llama-3.3-70b]", None,
     'selectors.chat.targets[1]: strategy warm needs local models; "workstation/llama-3.3-70b" is a '
     "peer model"),
    ("targets: [gpt-oss-120b]", "targets: []", None, "selectors.best.targets: must not be empty"),
    ("spillover: 4", "spillover: 0", None, "selectors.coder.settings.spillover: must be >= 1"),
    ("  best:\n", "  gemma:\n", None,
     'selectors.gemma: selector "gemma" is already used as an alias of model gemma3-12b'),
]


@pytest.mark.parametrize(("old", "new", "anchor", "error"), BROKEN,
                         ids=[case[3].split(":")[0] for case in BROKEN])
def test_broken_variants(text: str, old: str, new: str, anchor: str | None, error: str) -> None:
    assert text.count(old) == 1, f"{old!r} must occur exactly once in the example"
    broken = text.replace(old, new)
    line = _line(broken, anchor) if anchor else _line(text, old)
    with pytest.raises(ConfigError) as caught:
        load_config_text(broken, SOURCE)
    assert str(caught.value) == f"{SOURCE}:{line}: {error}"


def test_unset_env_variable(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY")
    line = _line(text, "apiKey: ${env.OPENROUTER_API_KEY}")
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, SOURCE)
    assert str(caught.value) == (
        f"{SOURCE}:{line}: environment variable OPENROUTER_API_KEY is not set "
        "(used as ${env.OPENROUTER_API_KEY})")


def test_unknown_preload_is_a_warning(text: str) -> None:
    edited = text.replace("      - nomic-embed\n", "      - nomic-embed\n      - llama-3\n")
    cfg = load_config_text(edited, SOURCE)
    assert cfg.preload == ["qwen3-coder-30b", "nomic-embed"]
    assert cfg.warnings == [
        f"{SOURCE}:{_line(edited, '      - llama-3')}: hooks.on_startup.preload[2]: "
        '"llama-3" is not a local model or alias; not preloaded']
