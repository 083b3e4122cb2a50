"""Tests that the guide in docs/ tells the truth: its examples run, its keys, commands and options exist."""
from __future__ import annotations


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
