"""Error messages: file, line, dotted key path, short wording; file loading."""

from pathlib import Path

import pytest

from llama_swap.config import ConfigError, load_config, load_config_text

LLAMA3_BAD_TTL = """\
healthCheckTimeout: 60
logLevel: info

models:
  llama3:
    cmd: llama-server --port ${PORT}
    aliases: [l3]
    ttl: five minutes
"""


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return str(caught.value)


def test_wrong_type_names_file_line_and_path() -> None:
    assert _error(LLAMA3_BAD_TTL) == "config.yaml:8: models.llama3.ttl: must be an integer"


def test_source_name_is_used_in_messages() -> None:
    with pytest.raises(ConfigError, match=r"^/etc/ls\.yaml:8: models\.llama3\.ttl"):
        load_config_text(LLAMA3_BAD_TTL, source="/etc/ls.yaml")


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("startPort: abc\n", "config.yaml:1: startPort: must be an integer"),
        ("startPort: 0\n", "config.yaml:1: startPort: must be >= 1"),
        ("sendLoadingState: 'true'\n", "config.yaml:1: sendLoadingState: must be true or false"),
        ("models:\n  m:\n    cmd: [a, b]\n", "config.yaml:3: models.m.cmd: must be a string"),
        (
            "models:\n  m:\n    cmd: srv ${PORT}\n    aliases: x\n",
            "config.yaml:4: models.m.aliases: must be a list",
        ),
        ("models:\n  m:\n", "config.yaml:2: models.m: must be a mapping"),
        (
            "models:\n  m:\n    cmd: srv ${PORT}\n    timeouts: {connect: 1.5}\n",
            "config.yaml:4: models.m.timeouts.connect: must be an integer",
        ),
    ],
)
def test_short_messages(yaml_text: str, expected: str) -> None:
    assert _error(yaml_text) == expected


def test_several_errors_are_listed_one_per_line() -> None:
    lines = _error("healthCheckTimeout: x\nstartPort: y\ncaptureBuffer: -1\n").splitlines()
    assert lines == [
        "config.yaml:1: healthCheckTimeout: must be an integer",
        "config.yaml:2: startPort: must be an integer",
        "config.yaml:3: captureBuffer: must be >= 0",
    ]


def test_schema_errors_come_before_rule_errors() -> None:
    lines = _error("""
models:
  fixed:
    cmd: srv --port 8080
    ttl: abc
  other:
    cmd: srv ${PORT} ${nope}
    unlisted: 1
startPort: x
""").splitlines()
    assert lines == [
        "config.yaml:5: models.fixed.ttl: must be an integer",
        "config.yaml:8: models.other.unlisted: must be true or false",
        "config.yaml:9: startPort: must be an integer",
        "config.yaml:3: models.fixed.proxy: uses ${PORT} but cmd does not; "
        "a model with a fixed port must set proxy to its URL",
        "config.yaml:7: models.other.cmd: unknown macro ${nope}",
    ]


def test_name_clashes_are_all_listed() -> None:
    lines = _error("""
models:
  a:
    cmd: srv ${PORT}
    aliases: [b, x]
  b:
    cmd: srv ${PORT}
    aliases: [x]
""").splitlines()
    assert lines == [
        'config.yaml:5: models.a.aliases[0]: alias "b" is already used as a model id',
        'config.yaml:8: models.b.aliases[0]: alias "x" is already used as an alias of model a',
    ]


def test_many_errors_are_capped() -> None:
    text = "".join(f"startPort{i}: 1\n" for i in range(8))  # typos of startPort: errors
    lines = _error(text).splitlines()
    assert len(lines) == 6
    assert lines[0] == 'config.yaml:1: startPort0: unknown key (did you mean "startPort"?)'
    assert lines[-1] == "... and 3 more errors"


def test_bad_yaml_reports_a_line() -> None:
    message = _error("models:\n  m:\n    cmd: srv\n   bad: [\n")
    assert message.startswith("config.yaml:")
    assert "invalid YAML" in message


def test_duplicate_keys_are_an_error() -> None:
    message = _error("models:\n  m:\n    cmd: a\n    cmd: b\n")
    assert message.startswith('config.yaml:4: invalid YAML: found duplicate key "cmd"')


def test_root_must_be_a_mapping() -> None:
    assert _error("- a\n- b\n") == "config.yaml:1: the config must be a mapping of keys to values"


def test_merged_keys_fall_back_to_the_nearest_line() -> None:
    message = _error("""
base: &base
  ttl: never
models:
  m:
    <<: *base
    cmd: srv ${PORT}
""")
    # `base:` only holds an anchor, so it is ignored as llama-swap ignores it
    # (test_config_go_compat.py); the merged `ttl` has no line of its own.
    assert message == "config.yaml:5: models.m.ttl: must be an integer"


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("/nonexistent/dir/x.yaml")
    assert str(caught.value) == "config file not found: /nonexistent/dir/x.yaml"


def test_load_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "ls.yaml"
    path.write_text("models:\n  m:\n    cmd: srv ${PORT}\n    ttl: bad\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: models\.m\.ttl: must be an integer$"):
        load_config(path)
    path.write_text("models:\n  m:\n    cmd: srv ${PORT}\n")
    cfg = load_config(path)
    assert cfg.source_path == str(path)
    assert cfg.models["m"].argv == ["srv", "5800"]
