"""The pure rules behind `triggers status` and `check` (the catalog side is integration)."""

from __future__ import annotations

from cdc_bridge.capture.check import TableFacts, table_problems
from cdc_bridge.capture.render import STAMP_PREFIX
from cdc_bridge.capture.status import Expected, InstalledFacts, State, classify
from cdc_bridge.config import TableConfig, TableSpec

STAMP = STAMP_PREFIX + "abc"
TRIGGERS = {"cdc_bridge_capture_ins", "cdc_bridge_capture_upd"}
SOURCES = {"capture_v3_x_ins": "BEGIN INSERT ...; RETURN NEW; END"}


def facts(**changes: object) -> InstalledFacts:
    base: dict[str, object] = {
        "recorded_hash": "abc",
        "recorded_columns": ("id", "name"),
        "live_columns": ("id", "name"),
        "trigger_stamps": dict.fromkeys(TRIGGERS, STAMP),
        "function_sources": dict(SOURCES),
    }
    base.update(changes)
    return InstalledFacts(**base)  # type: ignore[arg-type]


def state(found: InstalledFacts) -> tuple[State, tuple[str, ...]]:
    result = classify("public.t", Expected("abc", TRIGGERS, SOURCES), found)
    return result.state, result.reasons


def test_everything_matching_is_installed() -> None:
    assert state(facts()) == (State.INSTALLED, ())


def test_nothing_recorded_is_missing() -> None:
    assert state(facts(recorded_hash=None, recorded_columns=None, trigger_stamps={}))[0] is (
        State.MISSING
    )
    assert state(facts(live_columns=None))[0] is State.MISSING


def test_each_kind_of_drift_is_outdated_with_a_reason() -> None:
    cases = {
        "config changed": facts(recorded_hash="old"),
        "added since install: phone": facts(live_columns=("id", "name", "phone")),
        "dropped since install: name": facts(live_columns=("id",)),
        "missing: cdc_bridge_capture_upd": facts(trigger_stamps={"cdc_bridge_capture_ins": STAMP}),
        "another definition stamp": facts(
            trigger_stamps={"cdc_bridge_capture_ins": STAMP, "cdc_bridge_capture_upd": "hand made"}
        ),
        "not in the config: cdc_bridge_guard": facts(
            trigger_stamps={**dict.fromkeys(TRIGGERS, STAMP), "cdc_bridge_guard": STAMP}
        ),
        "function(s) missing: capture_v3_x_ins": facts(function_sources={}),
        "function(s) changed since install: capture_v3_x_ins": facts(
            function_sources={"capture_v3_x_ins": "BEGIN RETURN NEW; END"}
        ),
    }
    for expected, found in cases.items():
        got, reasons = state(found)
        assert got is State.OUTDATED and any(expected in r for r in reasons), (expected, reasons)


def spec(**table: object) -> TableSpec:
    return TableSpec.build("public.t", TableConfig.model_validate({"key": ["id"], **table}))


def test_table_problems_names_each_missing_piece() -> None:
    wanted = spec(sor={"name": "local", "price": "peer"}, where="status <> 'x'")
    problems = table_problems(wanted, TableFacts(columns=("id", "name"), unique_keys=()))
    assert [p.split(";")[0] for p in problems] == [
        "public.t: field 'price' does not exist in public.t",
        "public.t.where: column 'status' does not exist in public.t",
        "public.t: key (id) is not unique: no primary key or unique index covers exactly "
        "these columns",
    ]


def test_unique_key_and_present_columns_give_no_problem() -> None:
    found = TableFacts(columns=("id", "name"), unique_keys=(frozenset({"id"}),))
    assert table_problems(spec(sor="local"), found) == []
    assert table_problems(spec(sor="local"), TableFacts(columns=None, unique_keys=()))[
        0
    ].startswith("public.t: table public.t does not exist")


def test_the_unique_index_hint_quotes_names_so_it_can_be_pasted() -> None:
    hostile = TableSpec.build(
        '"Odd schema"."my;table"', TableConfig.model_validate({"key": ['we"ird'], "sor": "local"})
    )
    [problem] = table_problems(hostile, TableFacts(columns=('we"ird',), unique_keys=()))
    assert 'fix: CREATE UNIQUE INDEX ON "Odd schema"."my;table" ("we""ird")' in problem
