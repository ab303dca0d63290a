"""The README's command examples name commands and options that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import typer.main
from strato._cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    section = text.split("## The command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's command-line section has a bash block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line.startswith("strato ")]


def test_the_readme_has_examples_for_every_area():
    first_words = {line.split()[1] for line in _examples()}
    assert {"train", "quantize", "models", "edge", "cloud", "quickstart"} <= first_words


@pytest.mark.parametrize("example", _examples())
def test_readme_example_parses(example):
    command = typer.main.get_command(app)
    tokens = shlex.split(example)[1:]
    context = None
    # Typer ships its own click; groups are whatever has list_commands.
    while hasattr(command, "list_commands") and tokens and not tokens[0].startswith("-"):
        context = command.make_context(command.name, [], resilient_parsing=True, parent=context)
        sub = command.get_command(context, tokens[0])
        assert sub is not None, f"{example}: no command {tokens[0]!r}"
        command, tokens = sub, tokens[1:]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for token in tokens:
        if token.startswith("-"):
            assert token.split("=", 1)[0] in known, f"{example}: no option {token}"
    # and click accepts the whole line (types, required arguments, choices)
    try:
        command.make_context(command.name, list(tokens), resilient_parsing=False)
    except typer.Exit as done:  # an eager option (--version, --help) that answers and stops
        assert done.exit_code == 0
