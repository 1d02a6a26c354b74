"""The root command group and the options every command shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg

from cdc_bridge import __version__
from cdc_bridge.config import CONFIG_ENV, BridgeConfig, load_config, resolve_config_path
from cdc_bridge.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    config_path: str | None = None

    def config(self) -> BridgeConfig:
        return load_config(self.config_path)

    def daemon_config(self) -> BridgeConfig:
        """The config, with its entity mappings checked against the database (exit 2 when
        one does not fit). A database that does not answer yet is the daemon's to wait for."""
        config = self.config()
        if not any(s.fields is not None or s.defaults for s in config.table_specs):
            return config
        from cdc_bridge.capture.check import mapping_preflight

        try:
            with psycopg.connect(
                config.database.url.get_secret_value(), connect_timeout=5, autocommit=True
            ) as conn:
                problems = mapping_preflight(config, conn)
        except psycopg.OperationalError:
            return config
        if problems:
            raise ConfigError(str(self.shown_config_path), problems)
        return config

    @property
    def shown_config_path(self) -> Path:
        return resolve_config_path(self.config_path)


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).config_path = value


def config_option(func: F) -> F:
    """`--config FILE` on every command (and on the group); CDC_BRIDGE_CONFIG works too."""
    return click.option(
        "--config",
        "-c",
        metavar="FILE",
        expose_value=False,
        is_eager=True,
        callback=_remember_config,
        help=f"Config file [default: ${CONFIG_ENV} or ./cdc-bridge.yaml].",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@config_option
@click.version_option(__version__, prog_name="cdc-bridge")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Keep two business applications in step with trigger-based change-data-capture.

    \b
    Example:
      cdc-bridge demo                       # see it work on an embedded PostgreSQL
      cdc-bridge --config erp.yaml sql render > install.sql
    """
    ctx.ensure_object(Context)


pass_context = click.make_pass_decorator(Context, ensure=True)
