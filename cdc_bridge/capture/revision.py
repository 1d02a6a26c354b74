"""`cdc-bridge migrations generate`: an Alembic revision that freezes the rendered SQL.

A revision holds string constants only: its full install SQL, the SQL that detaches its
tables (drops their triggers, grants and records), and the previous revision's two texts
so that it can go back. It never imports the config, so a later config change cannot
alter what an old revision does. The previous texts are read from the previous revision's
own constants, never re-rendered.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from psycopg import sql

from cdc_bridge.capture.render import (
    render_install,
    render_uninstall,
    revokes,
    to_text,
    uninstall_table,
)
from cdc_bridge.config import BridgeConfig
from cdc_bridge.errors import UserError

MIGRATIONS_DIR = Path("migrations")
FROZEN_NAMES = ("INSTALL_SQL", "DETACH_SQL")

# A colon that SQLAlchemy's text() would take for a bind parameter (`:word`), or one
# after a backslash that text() would un-escape. Each gets a backslash in front, which
# text() removes again: the statement reaches the server (or `--sql` output) unchanged.
_BIND_TRAP = re.compile(r"(?<![:\w\\]):(?=\w+(?![:\w]))|(?<=\\):(?=\w*(?![:\w]))")


def escape_bind_colons(text: str) -> str:
    """`text` made safe for sqlalchemy.text(): no `:word` becomes a bind parameter."""
    return _BIND_TRAP.sub(r"\\:", text)


def render_detach(config: BridgeConfig) -> str:
    """Removes this config's triggers, table grants and install records; keeps the schema."""
    statements: list[sql.Composable] = []
    for spec in config.table_specs:
        statements += uninstall_table(config, spec)
    return to_text(statements + revokes(config))


@dataclass(frozen=True)
class Previous:
    revision: str | None
    install_sql: str | None
    detach_sql: str | None


def previous_revision(migrations_dir: Path, versions_dir: Path) -> Previous:
    """The current head of the versions folder and its frozen SQL (none for a first revision)."""
    script = ScriptDirectory(str(migrations_dir), version_locations=[str(versions_dir)])
    heads = script.get_heads()
    if not heads:
        return Previous(None, None, None)
    if len(heads) > 1:
        raise UserError(
            f"{versions_dir} has {len(heads)} heads ({', '.join(heads)}); "
            "fix: merge them with `alembic merge heads` first"
        )
    module: Any = script.get_revision(heads[0]).module
    missing = [name for name in FROZEN_NAMES if not isinstance(getattr(module, name, None), str)]
    if missing:
        raise UserError(
            f"head revision {heads[0]} holds no {', '.join(missing)}; fix: generate revisions "
            "with `cdc-bridge migrations generate` only"
        )
    return Previous(heads[0], module.INSTALL_SQL, module.DETACH_SQL)


def _slug(message: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "cdc_bridge"


def python_string(text: str) -> str:
    """A Python literal for `text`: readable triple quotes when safe, repr() otherwise."""
    if "'''" in text or "\\" in text or text.endswith("'") or "\r" in text:
        return repr(text)
    return "'''" + text + "'''"


def generate_revision(
    config: BridgeConfig,
    message: str,
    migrations_dir: Path = MIGRATIONS_DIR,
    versions_dir: Path | None = None,
) -> Path:
    """Write a new revision file into the versions folder; return its path."""
    versions = versions_dir or migrations_dir / "versions"
    if not (migrations_dir / "env.py").is_file():
        raise UserError(
            f"{migrations_dir}/env.py not found; fix: run from the folder that holds migrations/ "
            "(or pass --migrations DIR)"
        )
    versions.mkdir(parents=True, exist_ok=True)
    previous = previous_revision(migrations_dir, versions)
    revision = secrets.token_hex(6)
    body = _TEMPLATE.format(
        message=message.replace('"""', "'''").replace("\\", "/"),
        revision=revision,
        down_revision=repr(previous.revision),
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        system=config.system,
        tables=", ".join(spec.label for spec in config.table_specs).replace("\\", "/"),
        install_sql=python_string(render_install(config)),
        detach_sql=python_string(render_detach(config)),
        uninstall_sql=python_string(render_uninstall(config)),
        previous_install_sql=_optional(previous.install_sql),
        previous_detach_sql=_optional(previous.detach_sql),
    )
    path = versions / f"{revision}_{_slug(message)}.py"
    path.write_text(body, encoding="utf-8")
    return path


def _optional(text: str | None) -> str:
    return "None" if text is None else python_string(text)


_TEMPLATE = '''\
"""{message}

Revision ID: {revision}
Revises: {down_revision}
Create Date: {created}

Frozen by `cdc-bridge migrations generate` for system {system}.
Tables: {tables}
This file holds the rendered SQL itself: it does not read the config.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down_revision}
branch_labels = None
depends_on = None

# The complete install for this revision (what `cdc-bridge sql render` printed).
INSTALL_SQL = {install_sql}

# Drops this revision's triggers, table grants and install records (the schema stays).
DETACH_SQL = {detach_sql}

# Removes every bridge object; used when going below the first revision.
UNINSTALL_SQL = {uninstall_sql}

# The previous revision's frozen texts (None for the first revision).
PREVIOUS_INSTALL_SQL = {previous_install_sql}
PREVIOUS_DETACH_SQL = {previous_detach_sql}

# op.execute() reads `:word` as a bind parameter, even in comments and string literals
# (and renders it as NULL with --sql). A backslash before such a colon keeps it literal.
_BIND_TRAP = re.compile(r"(?<![:\\w\\\\]):(?=\\w+(?![:\\w]))|(?<=\\\\):(?=\\w*(?![:\\w]))")


def _run(script: str) -> None:
    op.execute(sa.text(_BIND_TRAP.sub(r"\\\\:", script.strip().removesuffix(";"))))


def upgrade() -> None:
    if PREVIOUS_DETACH_SQL is not None:
        _run(PREVIOUS_DETACH_SQL)
    _run(INSTALL_SQL)


def downgrade() -> None:
    if PREVIOUS_INSTALL_SQL is None:
        _run(UNINSTALL_SQL)
        return
    _run(DETACH_SQL)
    _run(PREVIOUS_INSTALL_SQL)
'''
