"""Splitting `cmd`/`cmdStop` into argv: quotes, YAML blocks, comments, continuations."""

import pytest

from llama_swap.config import ConfigError, load_config_text
from llama_swap.config.command import split_command, strip_comment_lines


def test_split_respects_quotes() -> None:
    assert split_command("""srv -m "/my models/a.gguf" --chat 'a b' x\\ y""") == [
        "srv",
        "-m",
        "/my models/a.gguf",
        "--chat",
        "a b",
        "x y",
    ]


def test_split_never_expands_shell_syntax() -> None:
    assert split_command("srv $HOME * ; rm -rf x") == ["srv", "$HOME", "*", ";", "rm", "-rf", "x"]


def test_hash_inside_a_word_is_kept() -> None:
    assert split_command("srv --tag a#b --prompt '# title' -x \"#y\"") == [
        "srv", "--tag", "a#b", "--prompt", "# title", "-x", "#y"
    ]


def test_hash_starting_a_word_comments_out_the_rest_of_the_line() -> None:
    assert split_command("srv -c 4096  # context size\n  --port 8080 #x\n  --last") == [
        "srv", "-c", "4096", "--port", "8080", "--last"
    ]


def test_comment_lines_are_dropped() -> None:
    assert strip_comment_lines("a\n  # b\nc") == "a\nc"
    assert split_command("srv\n  # --old-flag\n  --new-flag") == ["srv", "--new-flag"]


def test_backslash_continuation_joins_lines() -> None:
    assert split_command("srv \\\n  --a 1 \\\n  --b 2") == ["srv", "--a", "1", "--b", "2"]


def test_unbalanced_quote_raises() -> None:
    with pytest.raises(ValueError):
        split_command("srv 'open")


def test_empty_or_comment_only_is_empty() -> None:
    assert split_command("") == []
    assert split_command("  # nothing\n") == []


def _argv(cmd_yaml: str) -> list[str]:
    return load_config_text(f"models:\n  m:\n{cmd_yaml}    proxy: http://h:1\n").models["m"].argv


def test_literal_block_with_comments_and_continuations() -> None:
    assert _argv("""    cmd: |
      llama-server
      # --ctx-size 4096
      --model "/models/a b.gguf" \\
        --port 9000
      --jinja
""") == ["llama-server", "--model", "/models/a b.gguf", "--port", "9000", "--jinja"]


def test_folded_block() -> None:
    assert _argv("""    cmd: >
      llama-server
      --port 9000
      --alias 'my model'
""") == ["llama-server", "--port", "9000", "--alias", "my model"]


def test_cmd_keeps_text_after_comment_removal() -> None:
    model = load_config_text(
        "models:\n  m:\n    cmd: |\n      srv\n      # x\n      -v\n    proxy: http://h:1\n"
    ).models["m"]
    assert model.cmd == "srv\n-v\n"


def test_empty_cmd_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"config.yaml:3: models\.m\.cmd: is required"):
        load_config_text("models:\n  m:\n    cmd: |\n      # all commented\n")


def test_missing_cmd_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("models:\n  m:\n    name: x\n")
    assert str(caught.value) == "config.yaml:2: models.m.cmd: is required"


def test_unbalanced_quote_in_cmd_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"models\.m\.cmd: cannot be split into arguments"):
        load_config_text('models:\n  m:\n    cmd: srv "open ${PORT}\n')


def test_cmd_stop_keeps_pid_placeholder() -> None:
    model = load_config_text("""
models:
  m:
    cmd: docker run --name ${MODEL_ID} -p ${PORT}:8080 img
    cmdStop: |
      # stop politely
      docker stop ${MODEL_ID} --pid ${PID}
""").models["m"]
    assert model.stop_argv == ["docker", "stop", "m", "--pid", "${PID}"]
    assert model.argv == ["docker", "run", "--name", "m", "-p", "5800:8080", "img"]
