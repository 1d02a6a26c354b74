"""The `cdc-bridge` command: a thin layer that parses options, calls a function and prints.

Errors are translated to messages and exit codes here, once: 0 ok, 1 problems found,
2 user error (bad config, bad arguments).
"""

from __future__ import annotations

import importlib
import sys

import click

from cdc_bridge import __version__
from cdc_bridge.cli.common import cli
from cdc_bridge.errors import BridgeError, ConfigError

# Each module registers its commands on `cli` when imported.
COMMAND_MODULES = (
    "cdc_bridge.cli.capture",
    "cdc_bridge.cli.relay",
    "cdc_bridge.cli.inbound",
    "cdc_bridge.cli.ops",
    "cdc_bridge.cli.demo",
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="cdc-bridge", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except ConfigError as exc:
        click.echo(f"error: invalid configuration ({len(exc.problems)} problem(s)):", err=True)
        for problem in exc.problems:
            click.echo(f"  {exc.path}: {problem}", err=True)
        sys.exit(exc.exit_code)
    except BridgeError as exc:
        click.echo(f"error: {exc}", err=True)
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, BridgeError):
            detail = str(cause).strip().splitlines()
            if detail:
                click.echo(f"  caused by: {detail[0]}", err=True)
            cause = cause.__cause__
        sys.exit(exc.exit_code)


__all__ = ["__version__", "cli", "main"]
