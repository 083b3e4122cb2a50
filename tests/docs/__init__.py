"""Tests that the guide in docs/ tells the truth: its examples run, its keys, commands and options exist.
The Markdown readers and the argparse check they share are here."""
from __future__ import annotations

import re
import shlex

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of a Markdown text, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def manage_calls(text: str) -> list[list[str]]:
    """The words after `manage.py` of every call in the text's ```sh blocks (continuations joined, comments
    dropped)."""
    calls = []
    for info, body in fenced_blocks(text):
        if info != "sh":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            at = [i for i, w in enumerate(words) if w.endswith("manage.py")]
            if at:
                calls.append(words[at[0] + 1:])
    return calls


def assert_parses(words: list[str], where: str) -> None:
    """`manage.py WORDS...` as a doc shows it must be accepted by that command's own argument parser."""
    import pytest
    from django.core.management import CommandError, get_commands, load_command_class

    commands = get_commands()
    name, args = words[0], words[1:]
    assert name in commands, f"{where}: no command {name!r}"
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    try:
        parser.parse_args(args)
    except (CommandError, SystemExit) as exc:
        pytest.fail(f"{where}: `manage.py {' '.join(words)}` is refused by its parser: {exc}")
