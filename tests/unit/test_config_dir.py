"""-config-dir: merging several YAML files into one config, with errors naming the file."""

from pathlib import Path

import pytest

from llama_swap.config import ConfigError, load_config

BASE = """\
logLevel: debug
macros:
  bin: llama-server
apiKeys: [k1]
models:
  llama:
    cmd: ${bin} --port ${PORT}
"""


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def _error(path: Path | None, config_dir: Path | None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, config_dir=config_dir)
    return str(caught.value)


def test_files_merge_in_name_order_after_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BASE)
    conf_d = tmp_path / "conf.d"
    _write(conf_d, {
        "20-qwen.yml": "models:\n  qwen:\n    cmd: ${bin} --port ${PORT}\napiKeys: [k3]\n",
        "10-keys.yaml": "apiKeys: [k2]\nlogLevel: debug\nglobalTTL:\n",
        "notes.txt": "not: yaml: at all: [",
        "empty.yaml": "# nothing yet\n",
    })
    (conf_d / "sub.yaml").mkdir()
    (conf_d / "sub.yaml" / "ignored.yaml").write_text("models: {x: {cmd: srv}}\n")
    cfg = load_config(config, config_dir=conf_d)
    assert cfg.api_keys == ["k1", "k2", "k3"]
    assert cfg.log_level == "debug"
    assert sorted(cfg.models) == ["llama", "qwen"]
    assert cfg.models["qwen"].argv == ["llama-server", "--port", "5801"]
    assert cfg.source_path == str(config)
    assert cfg.sources == [str(config), str(conf_d / "10-keys.yaml"), str(conf_d / "20-qwen.yml"),
                           str(conf_d / "empty.yaml")]


def test_config_dir_alone(tmp_path: Path) -> None:
    _write(tmp_path, {"a.yaml": BASE, "b.yaml": "models:\n  b:\n    cmd: srv ${PORT}\n"})
    cfg = load_config(config_dir=tmp_path)
    assert sorted(cfg.models) == ["b", "llama"]
    assert cfg.source_path == str(tmp_path)


def test_nested_mappings_merge_and_nulls_yield(tmp_path: Path) -> None:
    _write(tmp_path, {
        "a.yaml": "hooks:\n  on_startup:\n    preload: [llama]\nui:\n  activity:\n" + BASE,
        "b.yaml": "hooks:\n  on_startup:\n    preload: [llama]\nui:\n  activity:\n    session_id: []\n",
    })
    cfg = load_config(config_dir=tmp_path)
    assert cfg.hooks.on_startup.preload == ["llama", "llama"]
    assert cfg.preload == ["llama"]
    assert cfg.ui.activity.session_id == []


GROUPS = "routing:\n  router:\n    settings:\n      groups:\n        g: {members: [llama]}\n"
PEERS = "peers:\n  p: {proxy: 'http://h', models: [x]}\n"


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (BASE, "models:\n  llama:\n    cmd: other\n",
         "b.yaml:2: models.llama: duplicate models entry, already defined at a.yaml:6"),
        ("\n" + PEERS, PEERS, "b.yaml:2: peers.p: duplicate peers entry, already defined at a.yaml:3"),
        (BASE + GROUPS, GROUPS,
         "b.yaml:5: routing.router.settings.groups.g: duplicate routing.router.settings.groups entry, "
         "already defined at a.yaml:12"),
        (BASE, "logLevel: info\n", "b.yaml:1: logLevel: 'info' conflicts with 'debug' set at a.yaml:1"),
        ("startPort: 5800\n", "startPort: '5800'\n",
         "b.yaml:1: startPort: '5800' conflicts with 5800 set at a.yaml:1"),
        (BASE, "apiKeys: k2\n", "b.yaml:1: apiKeys: is a value here but a list at a.yaml:4"),
        (BASE, "macros: [x]\n", "b.yaml:1: macros: is a list here but a mapping at a.yaml:2"),
    ],
)
def test_conflicts_name_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str,
                                   second: str, expected: str) -> None:
    _write(tmp_path, {"a.yaml": first, "b.yaml": second})
    monkeypatch.chdir(tmp_path)
    assert _error(None, Path(".")) == expected


def test_errors_after_merging_point_into_the_right_file(tmp_path: Path) -> None:
    _write(tmp_path, {
        "a.yaml": BASE + "    ttl: 60\n",
        "b.yaml": "apiKeys: [ok, 'has space']\nmodels:\n  qwen:\n    cmd: srv ${PORT}\n    ttl: soon\n",
    })
    assert _error(None, tmp_path) == (
        f"{tmp_path}/b.yaml:1: apiKeys[2]: must not contain spaces\n"
        f"{tmp_path}/b.yaml:5: models.qwen.ttl: must be an integer"
    )


def test_env_macros_apply_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_KEY", "from-env")
    monkeypatch.delenv("LS_UNSET", raising=False)
    _write(tmp_path, {"a.yaml": "apiKeys: [${env.LS_KEY}]\n", "b.yaml": "\n\nlogLevel: ${env.LS_UNSET}\n"})
    assert _error(None, tmp_path) == (
        f"{tmp_path}/b.yaml:3: environment variable LS_UNSET is not set (used as ${{env.LS_UNSET}})")
    (tmp_path / "b.yaml").write_text("apiKeys: ['${env.LS_KEY}-2']\n")
    assert load_config(config_dir=tmp_path).api_keys == ["from-env", "from-env-2"]


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    _write(tmp_path, {"a.yaml": BASE, "b.yaml": "models:\n  x: [\n"})
    assert _error(None, tmp_path).startswith(f"{tmp_path}/b.yaml:3: invalid YAML")


def test_the_config_file_may_not_also_be_in_the_directory(tmp_path: Path) -> None:
    _write(tmp_path, {"a.yaml": BASE})
    assert _error(tmp_path / "a.yaml", tmp_path) == (
        f"-config file {tmp_path}/a.yaml is also in -config-dir {tmp_path}; remove it from one")


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one of -config or -config-dir must be given"):
        load_config()
    assert _error(None, tmp_path) == f"-config-dir {tmp_path}: no *.yml or *.yaml files"
    assert _error(None, tmp_path / "missing").startswith(f"-config-dir {tmp_path}/missing: ")
