"""Access-control keys: `apiKeys`, `forwardApiKeys`, `maxBodyMB`, and credential headers
refused as session-id headers."""

import pytest

from llama_swap.config import ConfigError, load_config_text


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config_text(text)
    return str(excinfo.value)


def test_defaults() -> None:
    cfg = load_config_text("")
    assert cfg.api_keys == []
    assert cfg.forward_api_keys is False
    assert cfg.max_body_mb == 1024
    assert cfg.warnings == []


def test_values() -> None:
    cfg = load_config_text("apiKeys: [k-1, k-2]\nforwardApiKeys: true\nmaxBodyMB: 16\n")
    assert (cfg.api_keys, cfg.forward_api_keys, cfg.max_body_mb) == (["k-1", "k-2"], True, 16)
    assert cfg.warnings == []


def test_empty_values_keep_the_defaults() -> None:
    cfg = load_config_text("apiKeys:\nforwardApiKeys:\nmaxBodyMB:\n")
    assert (cfg.api_keys, cfg.forward_api_keys, cfg.max_body_mb) == ([], False, 1024)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("maxBodyMB: 0\n", "config.yaml:1: maxBodyMB: must be >= 1"),
        ("maxBodyMB: -5\n", "config.yaml:1: maxBodyMB: must be >= 1"),
        ("maxBodyMB: '64'\n", "config.yaml:1: maxBodyMB: must be an integer"),
        ("maxBodyMB: 1.5\n", "config.yaml:1: maxBodyMB: must be an integer"),
        ("maxBodyMb: 64\n", 'config.yaml:1: maxBodyMb: unknown key (did you mean "maxBodyMB"?)'),
        ("forwardApiKeys: maybe\n", "config.yaml:1: forwardApiKeys: must be true or false"),
        ("forwardAPIKeys: true\n", 'config.yaml:1: forwardAPIKeys: unknown key (did you mean "forwardApiKeys"?)'),
        ("apiKeys: ['']\n", "config.yaml:1: apiKeys[0]: must not be empty"),
        ("apiKeys: ['a b']\n", "config.yaml:1: apiKeys[0]: must not contain spaces"),
    ],
)
def test_wrong_values(text: str, message: str) -> None:
    assert _error(text) == message


def test_forwarding_without_keys_is_a_warning() -> None:
    cfg = load_config_text("logLevel: info\nforwardApiKeys: true\n")
    assert cfg.warnings == ["config.yaml:2: forwardApiKeys: has no effect without apiKeys"]


def test_credential_headers_are_never_session_ids() -> None:
    """The in-flight list shows the session header's value to anyone who can read it."""
    cfg = load_config_text(
        "ui:\n  activity:\n    session_id: [X-Session-ID, Authorization, cookie, X-API-Key, X-Litellm-Session-Id]\n"
    )
    assert cfg.ui.activity.session_id == ["X-Session-ID", "X-Litellm-Session-Id"]
    assert cfg.warnings == [
        f"config.yaml:3: ui.activity.session_id[{index}]: {name} holds credentials; it is never shown as a session id"
        for index, name in [(1, "Authorization"), (2, "cookie"), (3, "X-API-Key")]
    ]


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_ACCESS_KEY", "sk-env-1")
    cfg = load_config_text("apiKeys: ['${env.LS_ACCESS_KEY}', literal]\nforwardApiKeys: false\n")
    assert cfg.api_keys == ["sk-env-1", "literal"]
