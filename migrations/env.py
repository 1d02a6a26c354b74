"""Alembic environment of cdc-bridge: raw SQL revisions, no ORM models.

The URL comes from `-x url=...`, else from the config file (`-x config=FILE`, else
$CDC_BRIDGE_CONFIG, else ./cdc-bridge.yaml). Offline (`--sql`) needs neither.
Revisions are written by `cdc-bridge migrations generate`; each one freezes its SQL.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

from cdc_bridge.config import load_config
from cdc_bridge.db import mask_dsn

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    options = context.get_x_argument(as_dictionary=True)
    url = options.get("url") or config.attributes.get("url")
    if url:
        return str(url)
    return load_config(options.get("config")).database.url.get_secret_value()


def run_offline() -> None:
    # Named paramstyle: a `%` in the SQL stays single in the printed script.
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    dsn = database_url()

    def connect() -> Any:
        return psycopg.connect(dsn, application_name="cdc-bridge migrations")

    # A creator accepts both URL and key=value DSNs, and keeps the password out of the URL.
    engine = sa.create_engine("postgresql+psycopg://", creator=connect, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, transactional_ddl=True)
            with context.begin_transaction():
                context.run_migrations()
    except sa.exc.OperationalError as exc:
        raise SystemExit(f"cannot run migrations on {mask_dsn(dsn)}: {exc.orig}") from None
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
