"""Config snippets from the Go llama-swap (its docs/config.example.yaml and its
internal/config tests) load here as they do there, and resolve to the same values."""

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from llama_swap import cli
from llama_swap.config import Config, ConfigError, load_config, load_config_text

# docs/config.example.yaml of the Go project (comments dropped), without the keys newer than
# the release this service follows (`tailcat`, `hooks.on_startup.profile`, tailcat peers) and
# with its "illustrative" group members, selector targets and priorities pointed at models
# that exist (llama-swap's own note says they are not defined in the example).
GO_EXAMPLE = """
healthCheckTimeout: 500
logLevel: info
logTimeFormat: ""
logToStdout: "proxy"
metricsMaxInMemory: 1000
captureBuffer: 15
ui:
  activity:
    session_id: ["X-Session-ID", "X-Litellm-Session-Id"]
performance:
  disabled: false
  every: 15s
startPort: 10001
sendLoadingState: true
includeAliasesInList: false
globalTTL: 0
unloadTimeout: 10
macros:
  "latest-llama": >
    /path/to/llama-server/llama-server-ec9e0301 --port ${PORT}

  "default_ctx": 4096
  "default_args": "--ctx-size ${default_ctx}"
  "models_dir": "${env.HOME}/models"
apiKeys:
  - "sk-hunter2"
  - "${env.API_KEY_1}"
upstream:
  ignorePaths:
    - '.*\\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$'
    - ^\\/ws$|^\\/api\\/jobs$
profiles:
  "coding":
    description: "Coding-focused model routing"
    pins:
      "llm-code": "gpt-oss-120b"
      "image-gen": ~
selectors:
  "coding-model":
    strategy: warm
    targets: ["gpt-oss-120b", "unlisted-model"]
    name: "Coding Model"
    metadata:
      purpose: coding
  "llm-plan":
    strategy: pin
    targets: ["gpt-oss-120b", "z-ai/glm-4.7"]
models:
  "gpt-oss-120b":
    macros:
      "default_ctx": 16384
      "temp": 0.7
    cmd: |
      # ${latest-llama} is a macro that is defined above
      ${latest-llama}
      --model path/to/gpt-oss-120B.gguf
      --ctx-size ${default_ctx}
      --temperature ${temp}
    name: "gpt-oss 120B"
    env:
      - "CUDA_VISIBLE_DEVICES=0,1,2"
    proxy: http://127.0.0.1:8999
    checkEndpoint: /custom-endpoint
    ttl: 60
    compat:
      ignoreWebsockets: true
    useModelName: "openai/gpt-oss-120B"
    filters:
      stripParams: "temperature, top_p, top_k"
      setParams:
        temperature: 0.7
      setParamsByID:
        "${MODEL_ID}":
          chat_template_kwargs:
            reasoning_effort: medium
        "${MODEL_ID}:high":
          chat_template_kwargs:
            reasoning_effort: high
    aliases:
      - "gpt-4o-mini"
    metadata:
      port: ${PORT}
      temperature: ${temp}
      note: "The ${MODEL_ID} is running on port ${PORT} temp=${temp},
        context=${default_ctx}"
      an_obj:
        c: ["${temp}", false, "model: ${MODEL_ID}"]
    concurrencyLimit: 0
    sendLoadingState: false
    timeouts:
      keepalive: 0
      responseHeader: 60
    capabilities:
      in: [text, audio, image]
      out: [text]
      tools: true
      context: 32000
  "unlisted-model":
    unlisted: true
    cmd: some-upstream-server --port ${PORT}
  "docker-llama":
    proxy: "http://127.0.0.1:${PORT}"
    cmd: |
      docker run --name ${MODEL_ID}
      --init --rm -p ${PORT}:8080 -v /mnt/nvme/models:/models
      ghcr.io/ggml-org/llama.cpp:server
      --model '/models/Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf'
    cmdStop: docker stop ${MODEL_ID}
hooks:
  on_startup:
    preload:
      - "gpt-4o-mini"
routing:
  router:
    use: group
    settings:
      groups:
        "group1":
          swap: true
          exclusive: true
          members: ["gpt-oss-120b", "unlisted-model"]
        "forever":
          persistent: true
          swap: false
          exclusive: false
          members: ["docker-llama"]
  scheduler:
    use: fifo
    settings:
      fifo:
        priority:
          gpt-oss-120b: 10
peers:
  openrouter:
    proxy: https://openrouter.ai/api
    apiKey: ${env.OPENROUTER_API_KEY}
    models:
      - z-ai/glm-4.7
    filters:
      stripParams: "temperature, top_p"
      setParams:
        provider:
          data_collection: "deny"
          zdr: true
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("API_KEY_1", "sk-one")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or")


def test_the_go_example_resolves_as_in_go() -> None:
    config = load_config_text(GO_EXAMPLE)
    model = config.models["gpt-oss-120b"]
    # the macro-in-macro `latest-llama` brings ${PORT}, yet a fixed `proxy` keeps the model
    # off the port list; the `# ${latest-llama}` comment line is dropped before expansion
    assert model.argv == ["/path/to/llama-server/llama-server-ec9e0301", "--port", "10002", "--model",
                          "path/to/gpt-oss-120B.gguf", "--ctx-size", "16384", "--temperature", "0.7"]
    assert model.metadata == {
        "port": 10002, "temperature": 0.7,
        "note": "The gpt-oss-120b is running on port 10002 temp=0.7, context=16384",
        "an_obj": {"c": [0.7, False, "model: gpt-oss-120b"]},
    }
    assert config.aliases == {"gpt-4o-mini": "gpt-oss-120b", "gpt-oss-120b:high": "gpt-oss-120b"}
    assert (model.ttl, model.concurrency_limit, model.send_loading_state) == (60, 10, False)
    assert (model.timeouts.connect, model.timeouts.keepalive, model.timeouts.response_header) == (30, 0, 60)
    assert config.models["unlisted-model"].proxy == "http://localhost:10003"  # ports in sorted-id order
    assert config.models["docker-llama"].proxy == "http://127.0.0.1:10001"
    assert config.models["docker-llama"].stop_argv == ["docker", "stop", "docker-llama"]
    assert config.api_keys == ["sk-hunter2", "sk-one"]
    assert config.peers["openrouter"].api_key == "sk-or"
    assert config.preload == ["gpt-oss-120b"]
    assert config.health_check_timeout == 500
    assert config.warnings == []


# internal/config/model_config_anchor_test.go: a top-level key llama-swap does not know
# (`defs`) holds YAML anchors that models merge with `<<: [*anchor]`.
ANCHORS = """
macros:
  default_ctx: 98304
defs:
  vlm-capabilities: &vlm-capabilities
    in: [text, image]
    out: [text]
  llm-capabilities: &llm-capabilities
    in: [text]
    out: [text]
    tools: true
    context: ${default_ctx}
models:
  model1:
    cmd: path/to/cmd --port ${PORT}
    macros:
      default_ctx: 4096
    capabilities:
      <<: [*llm-capabilities]
  model2:
    cmd: path/to/cmd --port ${PORT}
    capabilities:
      <<: *vlm-capabilities
      context: 202752
  model3:
    cmd: path/to/cmd --port ${PORT}
    capabilities:
      <<: [*llm-capabilities]
"""


def test_an_anchor_holding_key_is_ignored_and_merges_resolve() -> None:
    config = load_config_text(ANCHORS)
    caps = {model_id: model.capabilities for model_id, model in config.models.items()}
    assert (caps["model1"].inputs, caps["model1"].tools, caps["model1"].context) == (["text"], True, 4096)
    assert (caps["model2"].inputs, caps["model2"].tools, caps["model2"].context) == (["text", "image"], False, 202752)
    assert caps["model3"].context == 98304
    assert "defs" not in Config.model_fields
    assert config.warnings == [f"config.yaml:4: defs: {IGNORED}"]


def test_anchor_holders_in_a_config_dir_file_are_ignored_too(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("models:\n  m:\n    cmd: srv --port ${PORT}\n")
    (tmp_path / "b.yaml").write_text(
        "x-common: &common {ttl: 300}\nmodels:\n  n:\n    <<: *common\n    cmd: srv --port ${PORT}\n")
    config = load_config(config_dir=tmp_path)
    assert (config.models["m"].ttl, config.models["n"].ttl) == (0, 300)
    assert config.warnings == [f"{tmp_path / 'b.yaml'}:1: x-common: {IGNORED}"]


def test_an_anchor_holder_is_dropped_before_macros_are_expanded() -> None:
    # `${PORT}` and `${MODEL_ID}` mean something only once merged into a model
    config = load_config_text(
        "x-server: &server\n  cmd: srv --port ${PORT} --alias ${MODEL_ID}\n"
        "models:\n  a:\n    <<: *server\n  b:\n    <<: *server\n")
    assert config.models["b"].argv == ["srv", "--port", "5801", "--alias", "b"]
    assert config.warnings == [f"config.yaml:1: x-server: {IGNORED}"]


def test_a_known_key_with_an_anchor_is_still_validated() -> None:
    with pytest.raises(ConfigError, match=r"config.yaml:1: startPort: must be an integer"):
        load_config_text("startPort: &p abc\nmodels: {}\n")


# --- unknown keys: llama-swap ignores them at every level; a typo of a known key is an error

IGNORED = "unknown key, ignored (llama-swap for Python does not know it)"


def test_unknown_keys_at_every_level_are_ignored_with_a_located_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config_text("""
tailcat:
  allow: []
  models: ["*"]
hooks:
  on_startup:
    profile: coding
models:
  qwen:
    cmd: srv --port ${PORT}
    tailcatKey: ephemeral
    timeouts: {connect: 5, dialer: fast}
    filters: {strip_params: top_k, renameParams: {a: b}}
performance:
  enable: true
peers:
  p:
    proxy: http://h
    models: [a]
    headers: {X-A: b}
routing:
  router:
    use: group
    settings:
      groups:
        g: {members: [qwen], color: blue}
  scheduler:
    strategy: fair
""")
    assert config.models["qwen"].timeouts.connect == 5
    assert config.models["qwen"].filters.strip_params == "top_k"
    assert config.routing_spec.groups["g"].members == ("qwen",)
    assert config.warnings == [f"config.yaml:{line}: {path}: {IGNORED}" for line, path in [
        (2, "tailcat"), (7, "hooks.on_startup.profile"), (11, "models.qwen.tailcatKey"),
        (12, "models.qwen.timeouts.dialer"), (13, "models.qwen.filters.renameParams"),
        (15, "performance.enable"), (20, "peers.p.headers"),
        (26, "routing.router.settings.groups.g.color"), (28, "routing.scheduler.strategy")]]
    # the warnings are what start-up and every reload log (cli._warn), one per key
    with caplog.at_level(logging.WARNING, "llama_swap"):
        cli._warn(config)
    logged = [record.getMessage() for record in caplog.records if IGNORED in record.getMessage()]
    assert logged == config.warnings


@pytest.mark.parametrize(("text", "message"), [
    ("modles: &m {}\nmodels: {}\n", 'config.yaml:1: modles: unknown key (did you mean "models"?)'),
    ("models:\n  qwen:\n    cmd: srv --port ${PORT}\n    cmdd: oops\n",
     'config.yaml:4: models.qwen.cmdd: unknown key (did you mean "cmd"?)'),
    ("models:\n  m:\n    cmd: srv --port ${PORT}\n    timeouts: {idleConnection: 5}\n",
     'config.yaml:4: models.m.timeouts.idleConnection: unknown key (did you mean "idleConn"?)'),
    ("routing:\n  scheduler:\n    settings:\n      lifo: {}\nmodels: {}\n",
     'config.yaml:4: routing.scheduler.settings.lifo: unknown key (did you mean "fifo"?)'),
])
def test_an_unknown_key_that_looks_like_a_typo_is_still_an_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert str(caught.value) == message


def test_unknown_keys_in_config_dir_files_are_located_in_their_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("defs: {ttl: 1}\nmodels:\n  m:\n    cmd: srv --port ${PORT}\n")
    (tmp_path / "b.yaml").write_text("\ndefs: {ttl: 2}\nmodels:\n  n:\n    cmd: srv --port ${PORT}\n")
    config = load_config(config_dir=tmp_path)  # the two `defs` would conflict if merged
    assert config.warnings == [f"{tmp_path / 'a.yaml'}:1: defs: {IGNORED}", f"{tmp_path / 'b.yaml'}:2: defs: {IGNORED}"]


def test_a_reload_with_an_unknown_key_still_reloads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  a:\n    cmd: srv --port ${PORT}\n")
    args = cli.parse_args(["-config", str(path)])
    config = cli._load(args)
    path.write_text("models:\n  a:\n    cmd: srv --port ${PORT}\n  b:\n    cmd: srv --port ${PORT}\n"
                    "    tailcatKey: ephemeral\n")
    running = SimpleNamespace(processes={"a": SimpleNamespace(config=config.models["a"])})
    with caplog.at_level(logging.WARNING, "llama_swap"):
        reloaded = cli._load(args, running)  # type: ignore[arg-type]  # what a reload loads
        cli._warn(reloaded)
    assert sorted(reloaded.models) == ["a", "b"] and reloaded.models["a"].port == config.models["a"].port
    assert [record.getMessage() for record in caplog.records] == [f"{path}:6: models.b.tailcatKey: {IGNORED}"]


# --- booleans: yaml.v3 reads YAML 1.1's words into a bool field, quoted or not

@pytest.mark.parametrize("word", ["y", "Y", "yes", "Yes", "YES", "on", "On", "ON"])
def test_yaml_11_true_words_are_true_in_every_boolean_key(word: str) -> None:
    for quoted in (word, f'"{word}"'):
        config = load_config_text(f"""
sendLoadingState: {quoted}
performance: {{disabled: {quoted}}}
models:
  m:
    cmd: srv --port ${{PORT}}
    unlisted: {quoted}
    sendLoadingState: {quoted}
    capabilities: {{tools: {quoted}}}
groups:
  g: {{members: [m], persistent: {quoted}}}
""")
        model = config.models["m"]
        assert (config.send_loading_state, config.performance.disabled, model.unlisted, model.send_loading_state,
                model.capabilities.tools, config.routing_spec.groups["g"].persistent) == (True,) * 6


@pytest.mark.parametrize("word", ["n", "N", "no", "No", "NO", "off", "Off", "OFF"])
def test_yaml_11_false_words_are_false_in_every_boolean_key(word: str) -> None:
    for quoted in (word, f"'{word}'"):
        config = load_config_text(f"""
models:
  m:
    cmd: srv --port ${{PORT}}
    sendLoadingState: {quoted}
    compat: {{ignoreWebsockets: {quoted}}}
selectors:
  s: {{strategy: warm, targets: [m], unlisted: {quoted}}}
groups:
  g: {{members: [m], swap: {quoted}, exclusive: {quoted}}}
""")
        group = config.routing_spec.groups["g"]
        assert (config.models["m"].send_loading_state, config.models["m"].compat.ignore_websockets,
                config.selectors["s"].unlisted, group.swap, group.exclusive) == (False,) * 5


@pytest.mark.parametrize(("text", "message"), [
    ("models:\n  m:\n    cmd: srv --port ${PORT}\n    unlisted: maybe\n",
     "config.yaml:4: models.m.unlisted: must be true or false"),
    ("logRequests: 'true'\n", "config.yaml:1: logRequests: must be true or false"),  # yaml.v3 refuses it too
    ("warmSwap: yess\n", "config.yaml:1: warmSwap: must be true or false"),
    ("models:\n  m:\n    cmd: srv --port ${PORT}\ngroups:\n  g: {members: [m], swap: maybe}\n",
     "config.yaml:5: groups.g.swap: must be true or false"),
])
def test_other_words_in_a_boolean_key_are_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert str(caught.value) == message


def test_yaml_11_words_stay_text_outside_boolean_keys() -> None:
    config = load_config_text("models:\n  m:\n    cmd: srv --port ${PORT}\n    name: yes\n"
                              "    metadata: {answer: no}\n")
    assert (config.models["m"].name, config.models["m"].metadata) == ("yes", {"answer": "no"})


# --- integers: yaml.v3 reads a float into an int field; here only a whole one

def test_whole_floats_are_integers_in_every_integer_key() -> None:
    config = load_config_text("""
healthCheckTimeout: 60.0
startPort: 9000.0
globalTTL: 3e2
models:
  m:
    cmd: srv --port ${PORT}
    ttl: 60.0
    timeouts: {connect: 5.0, idleConn: 2.0}
    capabilities: {context: 32768.0}
groups:
  g: {members: [m]}
routing:
  scheduler:
    settings:
      fifo:
        priority: {m: 10.0}
""")
    model = config.models["m"]
    assert (config.health_check_timeout, config.global_ttl, model.port, model.ttl) == (60, 300, 9000, 60)
    assert (model.timeouts.connect, model.timeouts.idle_conn, model.capabilities.context) == (5, 2, 32768)
    assert config.routing_spec.priorities == {"m": 10}
    assert all(type(value) is int for value in (config.health_check_timeout, model.ttl, model.timeouts.connect))


@pytest.mark.parametrize(("text", "message"), [
    ("models:\n  m:\n    cmd: srv --port ${PORT}\n    ttl: 60.5\n", "config.yaml:4: models.m.ttl: must be an integer"),
    ("healthCheckTimeout: .inf\n", "config.yaml:1: healthCheckTimeout: must be an integer"),
    ("globalTTL: '60'\n", "config.yaml:1: globalTTL: must be an integer"),
    ("models:\n  m:\n    cmd: srv --port ${PORT}\nmatrix:\n  evict_costs: {m: 1.5}\n  sets: {s: m}\n",
     "config.yaml:5: matrix.evict_costs.m: must be a positive integer"),
])
def test_fractional_numbers_in_an_integer_key_are_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert str(caught.value) == message


def test_set_params_by_id_keys_resolving_to_one_name_are_an_error() -> None:
    # internal/config/macros_refactor_test.go: "setParamsByID key collisions fail"
    with pytest.raises(ConfigError) as caught:
        load_config_text("""
macros:
  FIRST: shared
  SECOND: shared
models:
  model1:
    cmd: server
    proxy: http://localhost:8080
    filters:
      setParamsByID:
        "${FIRST}":
          temperature: 0.1
        "${SECOND}":
          temperature: 0.2
""")
    assert str(caught.value) == ('config.yaml:13: models.model1.filters.setParamsByID.${SECOND}: '
                                 'resolves to "shared", as does "${FIRST}"')


def test_macros_across_the_configuration() -> None:
    # internal/config/macros_refactor_test.go: a quoted exact "${X}" takes the macro's type
    config = load_config_text("""
macros:
  GLOBAL_TTL: 120
  MODEL_TTL: 45
  SESSION_HEADER: X-Macro-Session
  LOADING: true
  MODEL_NAME: model1
globalTTL: "${GLOBAL_TTL}"
sendLoadingState: "${LOADING}"
ui:
  activity:
    session_id: ["${SESSION_HEADER}"]
hooks:
  on_startup:
    preload: ["${MODEL_NAME}"]
models:
  model1:
    macros:
      MODEL_TTL: 30
      CONNECT_TIMEOUT: 12
    cmd: server --port ${PORT}
    ttl: "${MODEL_TTL}"
    timeouts:
      connect: "${CONNECT_TIMEOUT}"
    env:
      - "MODEL=${MODEL_ID}"
""")
    model = config.models["model1"]
    assert (config.global_ttl, config.send_loading_state, config.ui.activity.session_id, config.preload) == (
        120, True, ["X-Macro-Session"], ["model1"])
    assert (model.ttl, model.timeouts.connect, model.env) == (30, 12, ["MODEL=model1"])


def test_port_and_model_id_macros() -> None:
    # internal/config/config_test.go TestConfig_MacroModelId and macros_refactor_test.go
    config = load_config_text("""
startPort: 9000
macros:
  "docker-llama": docker run --name ${MODEL_ID} -p ${PORT}:8080 docker_img
  "docker-stop": docker stop ${MODEL_ID}
models:
  model1:
    cmd: /path/to/server -p ${PORT} -hf ${MODEL_ID}
    checkEndpoint: /health/${PORT}
    aliases: ["port-${PORT}"]
    metadata:
      port: "${PORT}"
  model2:
    cmd: ${docker-llama}
    cmdStop: ${docker-stop}
  author/model:F16:
    cmd: /path/to/server -p ${PORT} -hf ${MODEL_ID}
    cmdStop: kill ${PID}
""")
    models = config.models
    assert models["author/model:F16"].argv == ["/path/to/server", "-p", "9000", "-hf", "author/model:F16"]
    assert models["author/model:F16"].cmd_stop == "kill ${PID}"
    assert (models["model1"].check_endpoint, models["model1"].aliases, models["model1"].metadata) == (
        "/health/9001", ["port-9001"], {"port": 9001})
    assert models["model2"].argv == ["docker", "run", "--name", "model2", "-p", "9002:8080", "docker_img"]
    assert models["model2"].stop_argv == ["docker", "stop", "model2"]
