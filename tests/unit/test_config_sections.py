"""Sections acted on by later features: parsed, typed and checked at load."""

from datetime import timedelta

import pytest

from llama_swap.config import ConfigError, load_config_text

MODELS = """
models:
  llama:
    cmd: srv ${PORT}
    aliases: [l3]
  qwen:
    cmd: srv ${PORT}
"""


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return str(caught.value)


def test_section_defaults() -> None:
    cfg = load_config_text("")
    assert cfg.store is None
    assert cfg.performance.disabled is False
    assert cfg.performance.every == timedelta(seconds=5)
    assert cfg.ui.activity.session_id == ["X-Session-ID", "X-Litellm-Session-Id"]
    assert cfg.upstream.ignore_paths == [r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$"]
    assert cfg.hooks.on_startup.preload == []
    assert cfg.preload == []
    assert cfg.warnings == []
    assert cfg.peers == {} and cfg.profiles == {} and cfg.selectors == {}


def test_peer_keys_and_defaults() -> None:
    peer = load_config_text("""
peers:
  openrouter:
    proxy: https://openrouter.ai/api
    apiKey: sk-or-1
    models: [meta/llama-3.1-8b, qwen/qwen3]
    filters: {stripParams: "top_k", setParams: {provider: {zdr: true}}}
    timeouts: {connect: 5}
""").peers["openrouter"]
    assert peer.proxy == "https://openrouter.ai/api"
    assert peer.api_key == "sk-or-1"
    assert peer.models == ["meta/llama-3.1-8b", "qwen/qwen3"]
    assert peer.filters.strip_params == "top_k"
    assert peer.filters.set_params == {"provider": {"zdr": True}}
    assert (peer.timeouts.connect, peer.timeouts.response_header, peer.timeouts.idle_conn) == (5, 60, 90)


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("{models: [a]}", "config.yaml:3: peers.p.proxy: is required"),
        ("{proxy: 'h:80', models: [a]}", "config.yaml:3: peers.p.proxy: must be an http:// or https:// URL"),
        ("{proxy: 'http://h'}", "config.yaml:3: peers.p.models: is required"),
        ("{proxy: 'http://h', models: []}", "config.yaml:3: peers.p.models: must not be empty"),
        ("{proxy: 'http://h', models: ['']}", "config.yaml:3: peers.p.models[0]: must not be empty"),
        ("{proxy: 'http://h', models: [a], apiKeyy: x}",
         'config.yaml:3: peers.p.apiKeyy: unknown key (did you mean "apiKey"?)'),
        ("{proxy: 'http://h', models: [a], timeouts: {responseHeaders: 1}}",
         'config.yaml:3: peers.p.timeouts.responseHeaders: unknown key (did you mean "responseHeader"?)'),
    ],
)
def test_invalid_peers(peer: str, expected: str) -> None:
    assert _error(f"\npeers:\n  p: {peer}\n") == expected


def test_peer_model_names_may_not_shadow_local_names() -> None:
    assert _error(MODELS + """
  p/a:
    cmd: srv ${PORT}
    aliases: [q/x]
peers:
  p: {proxy: 'http://h', models: [a, x/y]}
  q: {proxy: 'http://h', models: [x, x]}
  p/x: {proxy: 'http://h', models: [y]}
""") == (
        'config.yaml:13: peers.p.models[0]: peer model "p/a" is already used as a model id\n'
        'config.yaml:14: peers.q.models[0]: peer model "q/x" is already used as an alias of model p/a\n'
        'config.yaml:15: peers.p/x.models[0]: peer model "p/x/y" is already used as a model of peers.p'
    )


def test_profiles() -> None:
    cfg = load_config_text(MODELS + """
profiles:
  small:
    description: Only small models
    pins: {llama: qwen, gpt-4o: l3, big: ~, huge: ""}
  empty: {}
""")
    assert cfg.profiles["small"].description == "Only small models"
    assert cfg.profiles["small"].pins == {"llama": "qwen", "gpt-4o": "l3", "big": "", "huge": ""}
    assert cfg.profiles["empty"].pins == {}


def test_legacy_list_profile_has_a_migration_hint() -> None:
    message = _error(MODELS + "profiles:\n  coding: [llama, qwen]\n")
    assert message.startswith(
        "config.yaml:9: profiles.coding: must be a mapping with description and pins; "
        "the legacy list syntax is no longer supported")
    assert "swap: false" in message


def test_selectors() -> None:
    cfg = load_config_text(MODELS + """
peers:
  cloud: {proxy: 'https://h', models: [big, other]}
selectors:
  fast:
    strategy: warm
    targets: [l3, qwen]
    name: Fast
    description: Whatever is loaded
    unlisted: true
    metadata: {tier: 1}
  pool:
    strategy: spillover
    targets: [llama, cloud/big, other]
    settings: {spillover: 4}
  first: {strategy: pin, targets: [big]}
""")
    fast, pool, first = cfg.selectors["fast"], cfg.selectors["pool"], cfg.selectors["first"]
    assert (fast.strategy, fast.targets, fast.settings.spillover) == ("warm", ["l3", "qwen"], 1)
    assert (fast.name, fast.description, fast.unlisted, fast.metadata) == (
        "Fast", "Whatever is loaded", True, {"tier": 1})
    assert (pool.strategy, pool.settings.spillover) == ("spillover", 4)
    assert first.targets == ["big"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("{targets: [llama]}", "selectors.s.strategy: is required"),
        ("{strategy: fastest, targets: [llama]}",
         "selectors.s.strategy: must be one of 'warm', 'pin' or 'spillover'"),
        ("{strategy: pin}", "selectors.s.targets: is required"),
        ("{strategy: pin, targets: []}", "selectors.s.targets: must not be empty"),
        ("{strategy: spillover, targets: [llama], settings: {spillover: 0}}",
         "selectors.s.settings.spillover: must be >= 1"),
        ("{strategy: pin, targets: [llama], setting: {}}",
         'selectors.s.setting: unknown key (did you mean "settings"?)'),
        ("{strategy: pin, targets: [gpt]}", 'selectors.s.targets[0]: unknown model "gpt"'),
        ("{strategy: pin, targets: [other]}",
         'selectors.s.targets[0]: "other" is a selector; a selector cannot target another selector'),
        ("{strategy: warm, targets: [llama, a/big]}",
         'selectors.s.targets[1]: strategy warm needs local models; "a/big" is a peer model'),
        ("{strategy: pin, targets: [dup]}",
         'selectors.s.targets[0]: "dup" is served by several peers; use a/dup or b/dup'),
    ],
)
def test_invalid_selectors(selector: str, expected: str) -> None:
    text = MODELS + f"""peers:
  a: {{proxy: 'http://h', models: [big, dup]}}
  b: {{proxy: 'http://h', models: [dup]}}
selectors:
  other: {{strategy: pin, targets: [qwen]}}
  s: {selector}
"""
    assert _error(text) == f"config.yaml:13: {expected}"


@pytest.mark.parametrize(
    ("selector_id", "owner"),
    [("qwen", "a model id"), ("l3", "an alias of model llama"), ("a/big", "a model of peers.a")],
)
def test_selector_ids_may_not_shadow_other_names(selector_id: str, owner: str) -> None:
    text = MODELS + f"""peers:
  a: {{proxy: 'http://h', models: [big]}}
selectors:
  {selector_id}: {{strategy: pin, targets: [llama]}}
"""
    assert _error(text) == (
        f'config.yaml:11: selectors.{selector_id}: selector "{selector_id}" is already used as {owner}')


def test_store() -> None:
    store = load_config_text("store: {path: /var/lib/ls.db}\n").store
    assert store is not None and store.path == "/var/lib/ls.db"
    assert load_config_text("store:\n").store is None
    assert _error("store: {}\n") == "config.yaml:1: store.path: is required"
    assert _error("store: {path: ''}\n") == "config.yaml:1: store.path: must not be empty"
    assert _error("store: {path: x, paths: y}\n") == (
        'config.yaml:1: store.paths: unknown key (did you mean "path"?)')


def test_store_path_must_be_writable(tmp_path) -> None:
    assert _error(f"store: {{path: {tmp_path}/missing/a.db}}\n") == (
        f"config.yaml:1: store.path: directory {tmp_path}/missing does not exist"
    )
    assert "is a directory" in _error(f"store: {{path: {tmp_path}}}\n")
    store = load_config_text(f"store: {{path: {tmp_path}/a.db}}\n").store
    assert store is not None and store.path == f"{tmp_path}/a.db"


@pytest.mark.parametrize(
    ("every", "seconds"),
    [("5s", 5), ("1m", 60), ("1m30s", 90), ("1.5h", 5400), ("5000ms", 5), ("2h0m0.5s", 7200.5)],
)
def test_performance_every_is_a_go_duration(every: str, seconds: float) -> None:
    cfg = load_config_text(f"performance: {{disabled: true, every: {every}}}\n")
    assert cfg.performance.disabled is True
    assert cfg.performance.every == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("every", "expected"),
    [
        ("1s", "must be at least 5s"),
        ("4999ms", "must be at least 5s"),
        ("'0'", "must be at least 5s"),
        ("-10s", "must be at least 5s"),
        ("10", 'must be a duration such as "5s" or "1m30s"'),
        ("'10'", '"10" is not a duration such as "5s" or "1m30s"'),
        ("5 s", '"5 s" is not a duration such as "5s" or "1m30s"'),
        ("1d", '"1d" is not a duration such as "5s" or "1m30s"'),
    ],
)
def test_invalid_performance_every(every: str, expected: str) -> None:
    assert _error(f"performance:\n  every: {every}\n") == f"config.yaml:2: performance.every: {expected}"


def test_performance_disabled_is_a_bool() -> None:
    assert _error("performance: {disabled: 1}\n") == (
        "config.yaml:1: performance.disabled: must be true or false")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("[' X-Trace-ID ', '', x-trace-id, X-Session-ID]", ["X-Trace-ID", "X-Session-ID"]),
        ("[]", []),
        ("", ["X-Session-ID", "X-Litellm-Session-Id"]),
    ],
)
def test_ui_session_headers(given: str, expected: list[str]) -> None:
    cfg = load_config_text(f"ui:\n  activity:\n    session_id: {given}\n")
    assert cfg.ui.activity.session_id == expected


def test_ui_unknown_key() -> None:
    assert _error("ui:\n  activity:\n    sessionId: [x]\n") == (
        'config.yaml:3: ui.activity.sessionId: unknown key (did you mean "session_id"?)')


def test_upstream_ignore_paths() -> None:
    cfg = load_config_text(r"upstream: {ignorePaths: ['^/static/', '\.map$']}" + "\n")
    assert cfg.upstream.ignore_paths == ["^/static/", r"\.map$"]
    assert [bool(p.search("/static/app.map")) for p in cfg.upstream.ignore_patterns] == [True, True]
    assert load_config_text("upstream: {ignorePaths: []}\n").upstream.ignore_paths == [
        r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$"]


def test_bad_ignore_path_regex() -> None:
    assert _error("upstream:\n  ignorePaths: ['ok', '(unclosed']\n") == (
        "config.yaml:2: upstream.ignorePaths[1]: invalid regular expression: "
        "missing ), unterminated subpattern at position 0")


def test_preload_resolves_aliases_and_drops_unknown_names() -> None:
    cfg = load_config_text(MODELS + """peers:
  p: {proxy: 'http://h', models: [remote]}
hooks:
  on_startup:
    preload: [l3, missing, qwen, llama, p/remote]
""")
    assert cfg.hooks.on_startup.preload == ["l3", "missing", "qwen", "llama", "p/remote"]
    assert cfg.preload == ["llama", "qwen"]
    assert cfg.warnings == [
        f'config.yaml:12: hooks.on_startup.preload[{index}]: "{name}" is not a local model or alias; '
        "not preloaded"
        for index, name in [(1, "missing"), (4, "p/remote")]
    ]


def test_hooks_unknown_key() -> None:
    assert _error("hooks:\n  on_startup:\n    preloads: [a]\n") == (
        'config.yaml:3: hooks.on_startup.preloads: unknown key (did you mean "preload"?)')
