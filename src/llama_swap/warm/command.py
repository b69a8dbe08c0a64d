"""Which commands take part in warm swaps, and the directory their llama-server saves into.

The rule, documented in README: a model with warm swaps on (its `warmSwap`, else the global
one) whose command runs `llama-server` (an argument whose file name is `llama-server`, so a
path or `docker run … llama-server` count) or already has `--slot-save-path`. A command with
`--slot-save-path DIR` keeps it, and its caches are saved in DIR; one without gets
`--slot-save-path <warmSwapDir>/<model>` appended. Nothing is added for a model with warm
swaps off, whatever its command.
"""

from __future__ import annotations

import os

SAVE_PATH_FLAG = "--slot-save-path"
SERVER_NAME = "llama-server"


def save_path_in(argv: list[str]) -> str | None:
    """The `--slot-save-path` a command gives (`--slot-save-path DIR` or `--slot-save-path=DIR`)."""
    for index, arg in enumerate(argv):
        if arg == SAVE_PATH_FLAG and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(SAVE_PATH_FLAG + "="):
            return arg.split("=", 1)[1]
    return None


def runs_llama_server(argv: list[str]) -> bool:
    """Whether a command runs llama-server (the slot save and restore API is its own)."""
    return save_path_in(argv) is not None or any(os.path.basename(arg) == SERVER_NAME for arg in argv)


def takes_part(warm_swap: bool | None, argv: list[str]) -> bool:
    """Whether a model with this setting and command gets warm swaps."""
    return bool(warm_swap) and runs_llama_server(argv)


def with_save_path(argv: list[str], own_dir: str) -> tuple[list[str], str]:
    """The command to run and the directory its server saves slots into: the command's own
    `--slot-save-path`, else ``own_dir`` added to it."""
    given = save_path_in(argv)
    if given is not None:
        return argv, given
    return [*argv, SAVE_PATH_FLAG, own_dir], own_dir
