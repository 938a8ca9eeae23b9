"""`oktasync --help` and every command's `--help` show the exit codes and an example (issue 13):
an administrator reading the help of a command learns what its exit code means without the
README. The commands are found by walking the real parser, so a new command without an
example fails here."""

from __future__ import annotations

import argparse
import subprocess
import sys

from oktasync.cli import build_parser

CODES = ("0 ", "1 ", "2 ", "3 ", "4 ", "130", "143")


def _commands(parser: argparse.ArgumentParser, name: str = "") -> list[tuple[str, str]]:
    found = [(name, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, child in action.choices.items():
                if command != "emulate":  # its --help is the emulators' own
                    found += _commands(child, f"{name} {command}".strip())
    return found


def test_every_command_help_has_exit_codes_and_an_example() -> None:
    commands = _commands(build_parser())
    assert {"sync", "serve", "config check", "status"} <= {n for n, _ in commands}
    for name, text in commands:
        assert "exit codes:" in text, name
        codes = text.split("exit codes:", 1)[1]
        assert all(code in codes for code in CODES), name
        examples = text.split("examples:", 1)[1] if "examples:" in text else ""
        assert f"oktasync {name}".strip() in examples, f"{name or 'oktasync'}: no example"


def test_help_through_the_real_command() -> None:
    result = subprocess.run([sys.executable, "-m", "oktasync", "sync", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "exit codes:" in result.stdout and "--resume" in result.stdout
    assert "oktasync sync --config" in result.stdout
