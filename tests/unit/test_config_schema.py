"""Config keys, defaults, global inheritance, aliases and accepted-but-later keys."""

import pytest

from llama_swap.config import ConfigError, load_config_text

MINIMAL = """
models:
  m:
    cmd: srv --port ${PORT}
"""


def test_global_defaults() -> None:
    cfg = load_config_text("")
    assert cfg.health_check_timeout == 120
    assert cfg.log_level == "info"
    assert cfg.log_time_format == ""
    assert cfg.log_to_stdout == "proxy"
    assert cfg.log_requests is False
    assert cfg.metrics_max_in_memory == 1000
    assert cfg.capture_buffer == 0
    assert cfg.start_port == 5800
    assert cfg.send_loading_state is False
    assert cfg.include_aliases_in_list is False
    assert cfg.global_ttl == 0
    assert cfg.unload_timeout == 10
    assert cfg.api_keys == []
    assert cfg.models == {}
    assert cfg.aliases == {}
    assert cfg.source_path == "config.yaml"


def test_model_defaults() -> None:
    model = load_config_text(MINIMAL).models["m"]
    assert model.id == "m"
    assert model.cmd_stop == ""
    assert model.stop_argv == []
    assert model.proxy == "http://localhost:5800"
    assert model.check_endpoint == "/health"
    assert model.check_url == "http://localhost:5800/health"
    assert model.ttl == 0
    assert model.unload_timeout == 10
    assert model.concurrency_limit == 10
    assert model.send_loading_state is False
    assert model.unlisted is False
    assert model.aliases == []
    assert model.env_map == {}
    assert model.metadata == {}
    assert (
        model.timeouts.connect,
        model.timeouts.keepalive,
        model.timeouts.response_header,
        model.timeouts.tls_handshake,
        model.timeouts.expect_continue,
        model.timeouts.idle_conn,
    ) == (30, 30, 0, 10, 1, None)  # idleConn unset: 4 s for a local server
    assert model.compat.ignore_websockets is False
    assert model.capabilities.inputs == []
    assert model.health_check_timeout == 120


@pytest.mark.parametrize(("given", "expected"), [(5, 15), (14, 15), (15, 15), (300, 300)])
def test_health_check_timeout_floor(given: int, expected: int) -> None:
    cfg = load_config_text(f"healthCheckTimeout: {given}\n" + MINIMAL)
    assert cfg.health_check_timeout == expected
    assert cfg.models["m"].health_check_timeout == expected


@pytest.mark.parametrize(
    ("given", "expected"), [("debug", "debug"), ("WARN", "warn"), ("verbose", "info")]
)
def test_log_level_unknown_becomes_info(given: str, expected: str) -> None:
    assert load_config_text(f"logLevel: {given}\n").log_level == expected


def test_log_time_format_unknown_becomes_none() -> None:
    assert load_config_text("logTimeFormat: rfc3339\n").log_time_format == "rfc3339"
    assert load_config_text("logTimeFormat: iso\n").log_time_format == ""


def test_log_to_stdout_must_be_known() -> None:
    assert load_config_text("logToStdout: both\n").log_to_stdout == "both"
    with pytest.raises(ConfigError, match=r"config.yaml:1: logToStdout: must be one of"):
        load_config_text("logToStdout: everything\n")


def test_model_named_no_stays_a_string() -> None:
    cfg = load_config_text("""
models:
  no:
    cmd: srv ${PORT}
    unlisted: true
  on:
    cmd: srv ${PORT}
""")
    assert sorted(cfg.models) == ["no", "on"]
    assert cfg.models["no"].id == "no"


def test_yaml_11_booleans_are_booleans_only_in_boolean_keys() -> None:
    # as llama-swap's yaml.v3 reads them (test_config_go_compat.py); other words are errors
    assert load_config_text(MINIMAL + "    unlisted: yes\n").models["m"].unlisted is True
    with pytest.raises(ConfigError, match=r"models\.m\.unlisted: must be true or false"):
        load_config_text(MINIMAL + "    unlisted: maybe\n")


def test_numeric_model_id_and_name_are_strings() -> None:
    cfg = load_config_text("models:\n  123:\n    cmd: srv ${PORT}\n    name: 2024\n")
    assert cfg.models["123"].name == "2024"


@pytest.mark.parametrize(
    ("model_ttl", "global_ttl", "expected"),
    [(None, 0, 0), (None, 300, 300), (-1, 300, 300), (0, 300, 0), (60, 300, 60)],
)
def test_ttl_resolution(model_ttl: int | None, global_ttl: int, expected: int) -> None:
    ttl_line = "" if model_ttl is None else f"    ttl: {model_ttl}\n"
    cfg = load_config_text(f"globalTTL: {global_ttl}\n" + MINIMAL + ttl_line)
    assert cfg.models["m"].ttl == expected


def test_ttl_below_minus_one_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"config.yaml:5: models\.m\.ttl: must be >= -1"):
        load_config_text(MINIMAL + "    ttl: -2\n")


def test_global_ttl_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"globalTTL: must be >= 0"):
        load_config_text("globalTTL: -5\n")


@pytest.mark.parametrize(
    ("global_line", "model_line", "expected"),
    [
        ("", "", 10),
        ("unloadTimeout: 0\n", "", 10),
        ("unloadTimeout: 30\n", "", 30),
        ("unloadTimeout: 30\n", "    unloadTimeout: 0\n", 30),
        ("unloadTimeout: 30\n", "    unloadTimeout: 5\n", 5),
    ],
)
def test_unload_timeout_resolution(global_line: str, model_line: str, expected: int) -> None:
    cfg = load_config_text(global_line + MINIMAL + model_line)
    assert cfg.models["m"].unload_timeout == expected


def test_negative_unload_timeout_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unloadTimeout: must be >= 0"):
        load_config_text("unloadTimeout: -1\n")


def test_send_loading_state_inherits_global() -> None:
    cfg = load_config_text(
        "sendLoadingState: true\n"
        + MINIMAL
        + """
  other:
    cmd: srv ${PORT}
    sendLoadingState: false
"""
    )
    assert cfg.models["m"].send_loading_state is True
    assert cfg.models["other"].send_loading_state is False


def test_concurrency_limit_zero_means_default() -> None:
    cfg = load_config_text(MINIMAL + "    concurrencyLimit: 0\n")
    assert cfg.models["m"].concurrency_limit == 10
    cfg = load_config_text(MINIMAL + "    concurrencyLimit: 3\n")
    assert cfg.models["m"].concurrency_limit == 3


def test_env_list_and_map() -> None:
    model = load_config_text(MINIMAL + '    env: ["A=1", "B=x=y", "A=2"]\n').models["m"]
    assert model.env == ["A=1", "B=x=y", "A=2"]
    assert model.env_map == {"A": "2", "B": "x=y"}


def test_env_entry_must_be_name_equals_value() -> None:
    with pytest.raises(
        ConfigError, match=r"config.yaml:5: models\.m\.env\[1\]: must look like NAME=value"
    ):
        load_config_text(MINIMAL + '    env: ["A=1", "nonsense"]\n')


def test_check_endpoint_none_disables_check_url() -> None:
    model = load_config_text(MINIMAL + "    checkEndpoint: none\n").models["m"]
    assert model.check_url is None
    model = load_config_text(MINIMAL + "    checkEndpoint: /v1/models\n").models["m"]
    assert model.check_url == "http://localhost:5800/v1/models"


def test_check_endpoint_must_be_a_path() -> None:
    with pytest.raises(
        ConfigError, match=r'models\.m\.checkEndpoint: must start with "/" or be "none"'
    ):
        load_config_text(MINIMAL + "    checkEndpoint: health\n")


def test_proxy_must_be_an_http_url() -> None:
    with pytest.raises(ConfigError, match=r"models\.m\.proxy: must be an http"):
        load_config_text(MINIMAL + "    proxy: localhost:8080\n")


def test_timeouts_and_capabilities() -> None:
    model = load_config_text(
        MINIMAL
        + """
    timeouts: {connect: 5, responseHeader: 60, idleConn: 90}
    capabilities:
      in: [text, image]
      out: [text]
      tools: true
      context: 32768
    compat: {ignoreWebsockets: true}
"""
    ).models["m"]
    assert (model.timeouts.connect, model.timeouts.response_header, model.timeouts.idle_conn) == (5, 60, 90)
    assert model.capabilities.inputs == ["text", "image"]
    assert model.capabilities.outputs == ["text"]
    assert model.capabilities.tools is True
    assert model.capabilities.context == 32768
    assert model.compat.ignore_websockets is True


def test_invalid_modality_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"models\.m\.capabilities\.in\[0\]: must be one of"):
        load_config_text(MINIMAL + "    capabilities: {in: [video]}\n")


def test_filters_and_legacy_strip_params() -> None:
    model = load_config_text(
        MINIMAL
        + """
    filters:
      strip_params: "temperature, top_k"
      setParams: {top_p: 0.9}
"""
    ).models["m"]
    assert model.filters.strip_params == "temperature, top_k"
    assert model.filters.set_params == {"top_p": 0.9}


def test_comfyui_auto_is_forced_websocket_tolerant() -> None:
    model = load_config_text("models:\n  comfyui_auto:\n    cmd: srv ${PORT}\n").models[
        "comfyui_auto"
    ]
    assert model.compat.ignore_websockets is True
    assert model.concurrency_limit == 50


def test_aliases_resolve_to_models() -> None:
    cfg = load_config_text("""
models:
  llama:
    cmd: srv ${PORT}
    aliases: [gpt-4o, "llama:latest"]
  qwen:
    cmd: srv ${PORT}
""")
    assert cfg.aliases == {"gpt-4o": "llama", "llama:latest": "llama"}
    assert cfg.model_for("gpt-4o") is cfg.models["llama"]
    assert cfg.model_for("qwen") is cfg.models["qwen"]
    assert cfg.model_for("missing") is None


def test_duplicate_alias_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("""
models:
  a:
    cmd: srv ${PORT}
    aliases: [shared]
  b:
    cmd: srv ${PORT}
    aliases: [other, shared]
""")
    assert str(caught.value) == (
        'config.yaml:8: models.b.aliases[1]: alias "shared" is already used as an alias of model a'
    )


def test_alias_equal_to_a_model_id_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r'models\.a\.aliases\[0\]: alias "b" is already used as a model id'
    ):
        load_config_text(
            "models:\n  a:\n    cmd: s ${PORT}\n    aliases: [b]\n  b:\n    cmd: s ${PORT}\n"
        )


def test_set_params_by_id_keys_become_aliases() -> None:
    cfg = load_config_text("""
models:
  qwen:
    cmd: srv ${PORT}
    aliases: ["qwen:fast"]
    filters:
      setParamsByID:
        "${MODEL_ID}": {reasoning_effort: medium}
        "${MODEL_ID}:high": {reasoning_effort: high}
        "qwen:fast": {reasoning_effort: low}
""")
    assert cfg.aliases == {"qwen:fast": "qwen", "qwen:high": "qwen"}
    assert cfg.models["qwen"].aliases == ["qwen:fast", "qwen:high"]
    assert set(cfg.models["qwen"].filters.set_params_by_id) == {"qwen", "qwen:high", "qwen:fast"}


def test_api_keys() -> None:
    assert load_config_text("apiKeys: [k1, k2]\n").api_keys == ["k1", "k2"]
    with pytest.raises(ConfigError, match=r"apiKeys\[0\]: must not contain spaces"):
        load_config_text("apiKeys: ['a b']\n")


def test_later_feature_keys_are_accepted() -> None:
    cfg = load_config_text("""
store: {path: /tmp/activity.db}
ui: {activity: {session_id: [X-Session-ID]}}
performance: {disabled: true, every: 10s}
upstream: {ignorePaths: ['.*\\.js$']}
profiles:
  fast: {description: quick, pins: {big: small}}
selectors:
  auto: {strategy: warm, targets: [small]}
hooks: {on_startup: {preload: [small]}}
routing:
  router: {use: group, settings: {groups: {g: {members: [small]}}}}
  scheduler: {use: fifo}
groups: {}
peers:
  openrouter: {proxy: https://openrouter.ai/api, models: [x]}
logRequests: true
metricsMaxInMemory: 50
captureBuffer: 0
includeAliasesInList: true
models:
  small:
    cmd: srv ${PORT}
    healthCheckTimeout: 1
""")
    assert cfg.store is not None and cfg.store.path == "/tmp/activity.db"
    assert cfg.peers["openrouter"].models == ["x"]
    assert cfg.hooks.on_startup.preload == ["small"]
    assert cfg.routing["router"]["use"] == "group"
    assert cfg.profiles["fast"].pins == {"big": "small"}
    assert cfg.routing_spec.use == "group" and cfg.routing_spec.groups["g"].members == ("small",)
    assert cfg.metrics_max_in_memory == 50
    assert cfg.capture_buffer == 0
    assert cfg.models["small"].health_check_timeout == 120


def test_later_feature_keys_must_be_mappings() -> None:
    with pytest.raises(ConfigError, match=r"config.yaml:1: peers: must be a mapping"):
        load_config_text("peers: [a, b]\n")


def test_unknown_keys_are_rejected_with_path() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("models:\n  qwen:\n    cmd: srv ${PORT}\n    cmdd: oops\n")
    assert str(caught.value).startswith("config.yaml:4: models.qwen.cmdd: unknown key")
    assert '"cmd"' in str(caught.value)
    with pytest.raises(ConfigError, match=r"config.yaml:1: helthCheckTimeout: unknown key"):
        load_config_text("helthCheckTimeout: 30\n")


def test_derived_names_are_not_config_keys() -> None:
    # unknown keys, so ignored (as llama-swap ignores them) with a warning
    config = load_config_text(MINIMAL + "    argv: [x]\n")
    assert config.models["m"].argv == ["srv", "--port", "5800"]
    assert config.warnings == [
        "config.yaml:5: models.m.argv: unknown key, ignored (llama-swap for Python does not know it)"]
    config = load_config_text("aliases: {a: b}\n")
    assert config.aliases == {}
    assert config.warnings == ["config.yaml:1: aliases: unknown key, ignored (llama-swap for Python does not know it)"]
