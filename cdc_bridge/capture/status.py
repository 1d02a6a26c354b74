"""`cdc-bridge triggers status`: what is installed against what the config renders.

A table is `installed` when its recorded definition hash, the stamps on its triggers, the
source of its capture functions and its live columns all match; `outdated` when any
differs (the config changed, a column was added or dropped, a trigger or capture function
was dropped or replaced by hand); `missing` when nothing of it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg

from cdc_bridge import sql as queries
from cdc_bridge.capture.check import quoted_relation
from cdc_bridge.capture.function import CAPTURE_KINDS, capture_function_name
from cdc_bridge.capture.render import (
    STAMP_PREFIX,
    TRIGGER_PREFIX,
    capture_function_sources,
    definition_hash,
    table_triggers,
)
from cdc_bridge.config import BridgeConfig, TableSpec


class State(StrEnum):
    INSTALLED = "installed"
    OUTDATED = "outdated"
    MISSING = "missing"


@dataclass(frozen=True)
class InstalledFacts:
    """What the database records for one table; None when nothing is recorded."""

    recorded_hash: str | None
    recorded_columns: tuple[str, ...] | None
    live_columns: tuple[str, ...] | None  # None: the table does not exist
    trigger_stamps: dict[str, str] = field(default_factory=dict)
    function_sources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TableStatus:
    label: str
    state: State
    expected_hash: str
    installed_hash: str | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.label,
            "state": self.state.value,
            "expected_hash": self.expected_hash,
            "installed_hash": self.installed_hash,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Expected:
    """What the config renders for one table."""

    definition_hash: str
    triggers: set[str]
    function_sources: dict[str, str] = field(default_factory=dict)


def classify(label: str, expected: Expected, facts: InstalledFacts) -> TableStatus:
    """The state of one table from its facts (pure: no database)."""

    def status(state: State, *reasons: str) -> TableStatus:
        return TableStatus(label, state, expected.definition_hash, facts.recorded_hash, reasons)

    if facts.live_columns is None:
        return status(State.MISSING, "the table does not exist")
    if facts.recorded_hash is None and not facts.trigger_stamps:
        return status(State.MISSING, "no triggers installed")
    reasons = _drift(expected, facts)
    return status(State.OUTDATED, *reasons) if reasons else status(State.INSTALLED)


def _drift(expected: Expected, facts: InstalledFacts) -> list[str]:
    expected_hash, expected_triggers = expected.definition_hash, expected.triggers
    reasons: list[str] = []
    if facts.recorded_hash is None:
        reasons.append("not recorded in installed_tables")
    elif facts.recorded_hash != expected_hash:
        reasons.append(
            f"the config changed (installed {facts.recorded_hash}, expected {expected_hash})"
        )
    installed = set(facts.trigger_stamps)
    if missing := sorted(expected_triggers - installed):
        reasons.append("trigger(s) missing: " + ", ".join(missing))
    if extra := sorted(installed - expected_triggers):
        reasons.append("trigger(s) not in the config: " + ", ".join(extra))
    stamp = STAMP_PREFIX + expected_hash
    stale = sorted(n for n in installed & expected_triggers if facts.trigger_stamps[n] != stamp)
    if stale:
        reasons.append("trigger(s) with another definition stamp: " + ", ".join(stale))
    reasons += _function_drift(expected.function_sources, facts.function_sources)
    reasons += _column_drift(facts)
    return reasons


def _function_drift(expected: dict[str, str], installed: dict[str, str]) -> list[str]:
    reasons = []
    if missing := sorted(set(expected) - set(installed)):
        reasons.append("capture function(s) missing: " + ", ".join(missing))
    changed = sorted(n for n in set(expected) & set(installed) if expected[n] != installed[n])
    if changed:
        reasons.append("capture function(s) changed since install: " + ", ".join(changed))
    return reasons


def _column_drift(facts: InstalledFacts) -> list[str]:
    if facts.recorded_columns is None or facts.live_columns is None:
        return []
    recorded, live = set(facts.recorded_columns), set(facts.live_columns)
    reasons = []
    if added := [c for c in facts.live_columns if c not in recorded]:
        reasons.append("column(s) added since install: " + ", ".join(added))
    if dropped := [c for c in facts.recorded_columns if c not in live]:
        reasons.append("column(s) dropped since install: " + ", ".join(dropped))
    return reasons


def read_installed_facts(
    config: BridgeConfig, spec: TableSpec, conn: psycopg.Connection[Any], bridge_installed: bool
) -> InstalledFacts:
    relation = {"relation": quoted_relation(spec.name)}
    if conn.execute(queries.query("check_relation"), relation).fetchone() in (None, (None,)):
        return InstalledFacts(None, None, None)
    live = tuple(r[0] for r in conn.execute(queries.query("check_columns"), relation))
    stamps = {
        name: stamp
        for name, stamp in conn.execute(
            queries.query("status_triggers"), {**relation, "prefix": TRIGGER_PREFIX}
        )
    }
    recorded = None
    if bridge_installed:
        recorded = conn.execute(
            queries.query("status_installed_table", schema=config.bridge_schema),
            {"label": spec.label},
        ).fetchone()
    sources = _capture_function_sources(config, spec, conn)
    if recorded is None:
        return InstalledFacts(None, None, live, stamps, sources)
    return InstalledFacts(recorded[0], tuple(recorded[1]), live, stamps, sources)


def _capture_function_sources(
    config: BridgeConfig, spec: TableSpec, conn: psycopg.Connection[Any]
) -> dict[str, str]:
    params = {
        "schema": config.bridge_schema,
        "names": [capture_function_name(spec, kind) for kind in CAPTURE_KINDS],
    }
    rows = conn.execute(queries.query("status_capture_functions"), params)
    return {name: source for name, source in rows}


def _bridge_installed(config: BridgeConfig, conn: psycopg.Connection[Any]) -> bool:
    name = '"' + config.bridge_schema.replace('"', '""') + '".installed_tables'
    row = conn.execute(queries.query("status_bridge_installed"), {"installed_tables": name})
    return bool(row.fetchone() == (True,))


def trigger_status(config: BridgeConfig, conn: psycopg.Connection[Any]) -> list[TableStatus]:
    """The state of every configured table, in config order."""
    installed = _bridge_installed(config, conn)
    result = []
    for spec in config.table_specs:
        facts = read_installed_facts(config, spec, conn, installed)
        expected = Expected(
            definition_hash(config, spec),
            {t.name for t in table_triggers(config, spec)},
            capture_function_sources(config, spec),
        )
        result.append(classify(spec.label, expected, facts))
    return result


def has_drift(statuses: list[TableStatus]) -> bool:
    return any(s.state is not State.INSTALLED for s in statuses)
