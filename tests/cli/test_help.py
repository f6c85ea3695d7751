"""`nightowl --help` lists each command with its own help, never a second copy that drifts."""

from __future__ import annotations

import importlib

import click

from nightowl.cli import COMMANDS, HELP


def test_the_listing_gives_each_command_its_own_docstring() -> None:
    assert set(HELP) == set(COMMANDS)
    for name, ref in COMMANDS.items():
        module, _, attr = ref.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        assert HELP[name] == command.get_short_help_str(limit=200), name
