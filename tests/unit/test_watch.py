"""The config poller's change detection (snapshot comparison; no sleeps)."""

from __future__ import annotations

import os
from pathlib import Path

from llama_swap.watch import snapshot


def test_content_change_rename_and_symlink_swap_are_changes(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models: {}\n")
    before = snapshot([config], [])
    assert snapshot([config], []) == before

    config.write_text("models: {a: {}}\n")
    after_write = snapshot([config], [])
    assert after_write != before

    tmp = tmp_path / "config.yaml.tmp"  # an editor's write-then-rename save
    tmp.write_text("models: {b: {}}\n")
    os.replace(tmp, config)
    assert snapshot([config], []) != after_write

    target_a, target_b, link = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "link.yaml"
    target_a.write_text("x: 1\n")
    target_b.write_text("x: 2\n")
    link.symlink_to(target_a)
    on_a = snapshot([link], [])
    link.unlink()
    link.symlink_to(target_b)
    assert snapshot([link], []) != on_a


def test_missing_then_present_is_a_change(tmp_path: Path) -> None:
    config = tmp_path / "late.yaml"
    missing = snapshot([config], [])
    config.write_text("models: {}\n")
    assert snapshot([config], []) != missing


def test_directory_tracks_yaml_files_only(tmp_path: Path) -> None:
    base = snapshot([], [tmp_path])
    (tmp_path / "notes.txt").write_text("ignored")
    assert snapshot([], [tmp_path]) == base
    (tmp_path / "extra.yml").write_text("models: {}\n")
    added = snapshot([], [tmp_path])
    assert added != base
    (tmp_path / "extra.yml").unlink()
    assert snapshot([], [tmp_path]) == base
