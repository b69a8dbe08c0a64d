"""Turn a configured command line into argv without ever invoking a shell.

Users write `cmd` as a (often multi-line) shell-looking string; llama-swap splits it with
POSIX quoting rules only, so there is no globbing, no `$VAR` expansion and no injection.
"""

import re
import shlex

_MID_WORD_HASH = re.compile(r"(?<=\S)#")
_PLACEHOLDER = "\x00"


def strip_comment_lines(text: str) -> str:
    """Drop lines whose stripped text starts with `#` (commented-out flags in a block)."""
    return "\n".join(line for line in text.split("\n") if not line.strip().startswith("#"))


def split_command(text: str) -> list[str]:
    """Split a command like a POSIX shell would, after removing comment lines.

    A trailing backslash joins a line to the next one. As in a shell, an unquoted `#`
    that starts a word comments out the rest of its line (`-c 4096  # context`), while
    a `#` inside a word (`repo#rev`) is kept. Raises ValueError on unbalanced quotes.
    An empty or comment-only command gives [].
    """
    lines = []
    for line in strip_comment_lines(text).split("\n"):
        stripped = line.strip()
        lines.append(stripped[:-1] + " " if stripped.endswith("\\") else line)
    protected = _MID_WORD_HASH.sub(_PLACEHOLDER, "\n".join(lines))
    return [arg.replace(_PLACEHOLDER, "#") for arg in shlex.split(protected, comments=True, posix=True)]
