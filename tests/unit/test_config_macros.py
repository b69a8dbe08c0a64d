"""Macros: user macros, MODEL_ID, PORT, PID, env macros and leftover detection."""

import pytest

from llama_swap.config import ConfigError, load_config_text


def test_ports_follow_sorted_model_ids_and_skip_fixed_port_models() -> None:
    cfg = load_config_text("""
startPort: 9000
models:
  zeta:
    cmd: srv --port ${PORT}
  alpha:
    cmd: srv --port ${PORT}
  fixed:
    cmd: srv --port 7000
    proxy: http://127.0.0.1:7000
  beta:
    cmd: srv --port ${PORT}
""")
    assert {mid: m.port for mid, m in cfg.models.items()} == {
        "zeta": 9002,
        "alpha": 9000,
        "fixed": None,
        "beta": 9001,
    }
    assert cfg.models["zeta"].argv == ["srv", "--port", "9002"]
    assert cfg.models["fixed"].proxy == "http://127.0.0.1:7000"


def test_default_proxy_uses_the_assigned_port() -> None:
    model = load_config_text("models:\n  m:\n    cmd: srv --port ${PORT}\n").models["m"]
    assert model.proxy == "http://localhost:5800"
    assert model.check_url == "http://localhost:5800/health"


def test_port_applies_throughout_the_model() -> None:
    model = load_config_text("""
models:
  m:
    cmd: srv --port ${PORT}
    proxy: http://127.0.0.1:${PORT}/base
    name: "on ${PORT}"
    metadata:
      port: ${PORT}
      url: "http://x:${PORT}"
""").models["m"]
    assert model.proxy == "http://127.0.0.1:5800/base"
    assert model.check_url == "http://127.0.0.1:5800/base/health"
    assert model.name == "on 5800"
    assert model.metadata == {"port": 5800, "url": "http://x:5800"}


def test_start_port_may_use_a_global_macro() -> None:
    cfg = load_config_text(
        "macros:\n  base: 7100\nstartPort: ${base}\nmodels:\n  m:\n    cmd: srv ${PORT}\n"
    )
    assert cfg.start_port == 7100
    assert cfg.models["m"].port == 7100


def test_port_in_a_comment_line_does_not_consume_a_port() -> None:
    cfg = load_config_text("""
models:
  a:
    cmd: |
      srv --port 7000
      # --port ${PORT}
    proxy: http://h:7000
  b:
    cmd: srv ${PORT}
""")
    assert cfg.models["a"].port is None
    assert cfg.models["b"].port == 5800


def test_fixed_port_model_without_proxy_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("models:\n  m:\n    cmd: srv --port 8080\n")
    message = str(caught.value)
    assert message.startswith("config.yaml:2: models.m.proxy: uses ${PORT} but cmd does not")
    assert "must set proxy" in message


def test_pid_is_rejected_outside_cmd_stop() -> None:
    with pytest.raises(
        ConfigError, match=r"config.yaml:3: models\.m\.cmd: \$\{PID\} is only allowed in cmdStop"
    ):
        load_config_text("models:\n  m:\n    cmd: srv ${PID} ${PORT}\n")


def test_model_id_macro() -> None:
    model = load_config_text("""
models:
  qwen-7b:
    cmd: srv --alias ${MODEL_ID} --port ${PORT}
    description: "Model ${MODEL_ID}"
""").models["qwen-7b"]
    assert model.argv == ["srv", "--alias", "qwen-7b", "--port", "5800"]
    assert model.description == "Model qwen-7b"


def test_global_and_model_macros_override_and_do_not_leak() -> None:
    cfg = load_config_text("""
macros:
  bin: /usr/bin/llama-server
  ctx: 4096
models:
  a:
    macros:
      ctx: 8192
      extra: --jinja
    cmd: ${bin} --ctx ${ctx} ${extra} --port ${PORT}
  b:
    cmd: ${bin} --ctx ${ctx} --port ${PORT}
""")
    assert cfg.models["a"].argv == [
        "/usr/bin/llama-server",
        "--ctx",
        "8192",
        "--jinja",
        "--port",
        "5800",
    ]
    assert cfg.models["b"].argv == ["/usr/bin/llama-server", "--ctx", "4096", "--port", "5801"]
    with pytest.raises(ConfigError, match=r"models\.b\.cmd: unknown macro \$\{extra\}"):
        load_config_text("""
models:
  a:
    macros: {extra: --jinja}
    cmd: srv ${extra} ${PORT}
  b:
    cmd: srv ${extra} ${PORT}
""")


def test_macro_may_use_earlier_macros_and_model_id() -> None:
    model = load_config_text("""
macros:
  dir: /models
  file: ${dir}/${MODEL_ID}.gguf
models:
  m:
    macros:
      args: -m ${file}
    cmd: srv ${args} --port ${PORT}
""").models["m"]
    assert model.argv == ["srv", "-m", "/models/m.gguf", "--port", "5800"]


def test_model_macro_override_is_seen_by_later_globals() -> None:
    model = load_config_text("""
macros:
  quant: q4
  file: model-${quant}.gguf
models:
  m:
    macros: {quant: q8}
    cmd: srv ${file} ${PORT}
""").models["m"]
    assert model.argv == ["srv", "model-q8.gguf", "5800"]


def test_forward_reference_is_an_unknown_macro() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("""
macros:
  first: ${second}
  second: x
models:
  m:
    cmd: srv ${first} ${PORT}
""")
    assert str(caught.value) == "config.yaml:7: models.m.cmd: unknown macro ${second}"


def test_self_reference_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"config.yaml:3: macros\.loop: macro refers to itself"):
        load_config_text("macros:\n  ok: 1\n  loop: a ${loop}\n")


@pytest.mark.parametrize("name", ["PORT", "PID", "MODEL_ID"])
def test_reserved_macro_names(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"macros\.{name}: {name} is a reserved macro name"):
        load_config_text(f"macros:\n  {name}: 1\n")


def test_reserved_name_in_model_macros() -> None:
    with pytest.raises(
        ConfigError, match=r"config.yaml:4: models\.m\.macros\.PORT: PORT is a reserved"
    ):
        load_config_text("models:\n  m:\n    macros:\n      PORT: 1\n    cmd: srv\n")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("bad.name: x", "may only contain"),
        ("x" * 64 + ": x", "longer than 63"),
        ("listy: [1, 2]", "must be a string, number or boolean"),
        ("empty:", "must be a string, number or boolean"),
    ],
)
def test_invalid_macros(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(f"macros:\n  {entry}\n")


def test_macros_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"config.yaml:1: macros: must be a mapping"):
        load_config_text("macros: [a, b]\n")


def test_exact_macro_keeps_its_type_in_metadata() -> None:
    model = load_config_text("""
macros:
  ctx: 8192
  temp: 0.7
  vision: true
  label: fast
models:
  m:
    cmd: srv --ctx ${ctx} --temp ${temp} ${PORT}
    metadata:
      ctx: ${ctx}
      temp: ${temp}
      vision: ${vision}
      label: ${label}
      nested: {list: ["${ctx}", "ctx=${ctx}", "${vision}"]}
      mixed: "${temp}/${vision}"
""").models["m"]
    assert model.metadata == {
        "ctx": 8192,
        "temp": 0.7,
        "vision": True,
        "label": "fast",
        "nested": {"list": [8192, "ctx=8192", True]},
        "mixed": "0.7/true",
    }
    assert model.argv == ["srv", "--ctx", "8192", "--temp", "0.7", "5800"]


def test_exact_macro_fills_integer_fields() -> None:
    model = load_config_text(
        "macros:\n  idle: 300\nmodels:\n  m:\n    cmd: srv ${PORT}\n    ttl: ${idle}\n"
    ).models["m"]
    assert model.ttl == 300


def test_macro_keys_are_not_substituted() -> None:
    model = load_config_text(
        "macros:\n  k: v\nmodels:\n  m:\n    cmd: srv ${PORT}\n    metadata: {'${k}': '${k}'}\n"
    ).models["m"]
    assert model.metadata == {"${k}": "v"}


def test_unknown_macro_names_the_field_path() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("""
models:
  m:
    cmd: srv ${PORT}
    metadata:
      tags: [ok, "${missing}"]
""")
    assert str(caught.value) == "config.yaml:6: models.m.metadata.tags[1]: unknown macro ${missing}"


def test_unknown_macro_outside_models() -> None:
    with pytest.raises(
        ConfigError, match=r"config.yaml:2: peers\.p\.apiKey: unknown macro \$\{key\}"
    ):
        load_config_text("peers:\n  p: {proxy: 'http://x', models: [a], apiKey: '${key}'}\n")


def test_global_macros_reach_other_sections() -> None:
    cfg = load_config_text("macros:\n  key: secret\napiKeys: ['${key}']\n")
    assert cfg.api_keys == ["secret"]


def test_env_macro_is_substituted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_MODEL_DIR", "/srv/models")
    model = load_config_text(
        "models:\n  m:\n    cmd: srv -m ${env.LS_MODEL_DIR}/a.gguf ${PORT}\n"
    ).models["m"]
    assert model.argv == ["srv", "-m", "/srv/models/a.gguf", "5800"]


def test_unset_env_macro_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_NOT_SET", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config_text("logLevel: info\napiKeys: ['${env.LS_NOT_SET}']\n")
    assert str(caught.value) == (
        "config.yaml:2: environment variable LS_NOT_SET is not set (used as ${env.LS_NOT_SET})"
    )


def test_env_macro_in_a_flow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_KEY", "k-123")
    cfg = load_config_text("apiKeys: [${env.LS_KEY}, other]\n")
    assert cfg.api_keys == ["k-123", "other"]


def test_env_macro_in_comments_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_NOT_SET", raising=False)
    monkeypatch.setenv("LS_KEY", "k")
    cfg = load_config_text("""
# apiKeys: [${env.LS_NOT_SET}]
apiKeys: [${env.LS_KEY}]  # was ${env.LS_NOT_SET}
models:
  m:
    cmd: srv '#${env.LS_KEY}' ${PORT}   # ${env.LS_NOT_SET}
""")
    assert cfg.api_keys == ["k"]
    assert cfg.models["m"].argv == ["srv", "#k", "5800"]


def test_env_value_is_escaped_for_its_quotes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_ODD", "a\"b\\c'd")
    cfg = load_config_text(
        "apiKeys:\n  - \"${env.LS_ODD}\"\n  - '${env.LS_ODD}'\n  - ${env.LS_ODD}\n"
    )
    assert cfg.api_keys == ["a\"b\\c'd"] * 3


def test_env_value_with_newline_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_MULTI", "a\nb")
    with pytest.raises(
        ConfigError, match=r"config.yaml:1: environment variable LS_MULTI contains a line break"
    ):
        load_config_text("apiKeys: ['${env.LS_MULTI}']\n")


def test_env_macro_inside_block_scalar_is_content(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_FLAG", "--verbose")
    model = load_config_text("""
models:
  m:
    cmd: |
      srv ${PORT}
      #tag ${env.LS_FLAG}
      ${env.LS_FLAG}
""").models["m"]
    assert model.argv == ["srv", "5800", "--verbose"]
