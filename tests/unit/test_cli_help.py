"""Every command explains itself: `--help` works and shows an example."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from cdc_bridge.cli import cli


def commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, (*path, name))


@pytest.mark.parametrize("path", list(commands(cli)), ids=lambda p: " ".join(p) or "cdc-bridge")
def test_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`cdc-bridge {' '.join(path)} --help` shows no example"
    assert "Usage: " in result.output
