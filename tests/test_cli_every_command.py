"""Every ``flow3d`` command keeps the bad-input contract (tests/contract.py).

The command list comes from the parser itself, so a new command is covered the day it is
added: each must refuse an unknown option (or report its missing required arguments) in one
line with exit 2 before anything runs, and each must have its own contract cases
(``assert_user_error`` called with its argv) in a test module.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from contract import assert_user_error

from flow3d import cli

TESTS = Path(__file__).resolve().parent


def leaf_commands() -> list[tuple[str, ...]]:
    """Every runnable command path, e.g. ("splat", "fit"), from the real parser."""
    found: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and path:
            found.append(path)
        for action in subs:
            for name, child in action.choices.items():
                walk(child, (*path, name))

    walk(cli.build_parser(), ())
    return found


COMMANDS = leaf_commands()


def test_the_command_list_is_complete():
    names = {" ".join(c) for c in COMMANDS}
    for expected in ("train", "sample", "eval", "protein design", "protein eval",
                     "protein cache", "mesh generate", "mesh reconstruct", "mesh edit", "mesh eval",
                     "mesh retrieve", "mesh library",
                     "splat views", "splat fit", "splat render", "splat convert", "view",
                     "appearance transfer", "splat reconstruct", "splat generate",
                     "splat complete", "splat edit", "splat poses"):
        assert expected in names, sorted(names)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_unknown_option_is_one_line(command, capsys, tmp_path):
    """Parsing fails before anything runs: the unknown option, or the missing required
    arguments argparse reports first, in one line."""
    line = assert_user_error([*command, "--no-such-option"], capsys, watch=[tmp_path])
    assert "--no-such-option" in line or "required" in line, line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_command_has_its_own_contract_cases(command):
    """Some test module calls assert_user_error with this command's argv."""
    literal = ", ".join(f'"{word}"' for word in command)
    pattern = re.compile(r"\[\s*" + re.escape(literal) + r"\s*[,\]]")
    users = [p for p in TESTS.rglob("test_*.py")
             if p.name != Path(__file__).name and "assert_user_error" in p.read_text()]
    assert any(pattern.search(p.read_text()) for p in users), \
        f"no contract test runs `flow3d {' '.join(command)}`"
