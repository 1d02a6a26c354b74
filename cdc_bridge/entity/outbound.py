"""Outbound translation: this side's rows as the peer knows them, entity changes.

Tables configured without `fields` ship as they are (their entity is the table). For the
others the relay renames columns to fields, maps values, computes `expr` fields, and
translates keys and references through the cross-reference, all for a whole read at
once: one query for every key the cross-reference holds (minting the missing ones), and
one per table with computed fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from cdc_bridge.capture.filters import expression_for_row
from cdc_bridge.config import BridgeConfig, TableMode
from cdc_bridge.entity import Entities, EntityMap, local_key_value
from cdc_bridge.errors import ConfigError, FilterError, Unmapped, Unresolved
from cdc_bridge.outbox import OutboxRow
from cdc_bridge.peer import codec
from cdc_bridge.sql import query


@dataclass(frozen=True, slots=True)
class EntityChange:
    """A change as it ships: the entity's name, key and fields."""

    entity: str
    key: dict[str, Any]
    fields: dict[str, Any] | None
    old: dict[str, Any] | None


@dataclass
class Lookups:
    """What translating a read needs from the database, looked up once for all of it."""

    # (entity, local key value) -> the entity key (a dict of its fields).
    keys: dict[tuple[str, Any], dict[str, Any]] = field(default_factory=dict)
    # (referenced entity, local key value) -> the value of its one key field.
    refs: dict[tuple[str, Any], Any] = field(default_factory=dict)
    computed: dict[int, dict[str, Any]] = field(default_factory=dict)  # outbox id -> fields


class Outbound:
    """Turns this side's outbox rows into entity changes for one config."""

    def __init__(self, config: BridgeConfig, source: str = "config") -> None:
        self.entities = Entities(config)
        self.system = config.system
        self.schema = config.bridge_schema
        self._computed = self._computed_queries(source)

    def mapped(self, label: str) -> bool:
        emap = self.entities.of_table(label)
        return emap is not None and emap.spec.mapped

    def encoded_entities(self) -> dict[str, dict[str, Any]]:
        """The mapped tables whose changes PostgreSQL can translate as it reads them
        (`relay_fetch_pending`), as label -> entity, columns (column -> field) and maps
        (column -> {code -> entity value}): this side's whole rows (`sor: local`) with
        renames and maps of text codes only. Computed fields, references, generated keys
        and 1:1 side tables (named by their main table's key) need lookups, and codes of
        other types compare by Python's rules: those tables are translated here."""
        found: dict[str, dict[str, Any]] = {}
        for label, emap in self.entities.maps.items():
            spec = emap.spec
            if (
                not spec.mapped
                or emap.identity
                or spec.mode is not TableMode.LOCAL
                or spec.part_of is not None
                or spec.xref is not None
                or spec.computed
                or emap.references
                or any(c not in emap.by_column for c in spec.key)
                or any(
                    m.to_entity is not None and not all(isinstance(k, str) for k in m.to_entity)
                    for m in emap.fields
                )
            ):
                continue
            found[label] = {
                "entity": emap.entity,
                "columns": {m.column: m.name for m in emap.fields},
                "maps": {m.column: dict(m.to_entity) for m in emap.fields if m.to_entity},
            }
        return found

    def _computed_queries(self, source: str) -> dict[str, sql.Composed]:
        queries: dict[str, sql.Composed] = {}
        problems: list[str] = []
        for label, emap in self.entities.maps.items():
            pairs: list[sql.Composable] = []
            for name, expr in emap.spec.computed.items():
                try:
                    bound = expression_for_row(expr, "t")
                except FilterError as exc:
                    problems.append(f'tables."{label}".fields.{name}.expr: {exc}')
                    continue
                pairs.append(sql.SQL("{}, {}").format(sql.Literal(name), sql.SQL(bound)))
            if pairs:
                queries[label] = query(
                    "entity_computed",
                    table=emap.spec.name.identifier,
                    pairs=sql.SQL(", ").join(pairs),
                )
        if problems:
            raise ConfigError(source, problems)
        return queries

    # ------------------------------------------------------------- lookups

    async def prepare(
        self, conn: psycopg.AsyncConnection[Any], rows: Sequence[OutboxRow]
    ) -> Lookups:
        """Look up (and mint) the entity keys and computed values `rows` need."""
        found = Lookups()
        for statement, params, absorb in self._lookups(rows, found):
            cur = await conn.execute(statement, params)
            absorb(await cur.fetchall())
        return found

    def prepare_sync(self, conn: psycopg.Connection[Any], rows: Sequence[OutboxRow]) -> Lookups:
        """`prepare` on a blocking connection (reconcile, the read endpoint)."""
        found = Lookups()
        for statement, params, absorb in self._lookups(rows, found):
            absorb(conn.execute(statement, params).fetchall())
        return found

    def _lookups(
        self, rows: Sequence[OutboxRow], found: Lookups
    ) -> Iterator[tuple[sql.Composed, dict[str, Any], Callable[[list[Any]], None]]]:
        """The queries `rows` need, each with what takes its answer into `found`."""
        wanted = list(self._xref_wanted(rows))
        if wanted:
            items = [
                {
                    "entity": emap.entity,
                    "local_key": _local_key(emap, value),
                    "minted": self._minted(emap, value, fields),
                }
                for emap, value, fields in wanted
            ]

            def keys(answer: list[Any]) -> None:
                for (emap, value, _), (_n, text) in zip(wanted, answer, strict=True):
                    if text is None:
                        continue  # the minted key is another record's: unresolved, refused
                    entity_key: dict[str, Any] = codec.loads(text)
                    found.keys[(emap.entity, value)] = entity_key
                    if len(entity_key) == 1:
                        found.refs[(emap.entity, value)] = next(iter(entity_key.values()))

            yield (
                query("entity_keys_of_local", schema=self.schema),
                {"rows": codec.dumps_text(items)},
                keys,
            )
        for label, statement in self._computed.items():
            members = [r for r in rows if r.table_name == label and r.op != "D" and r.fields]
            if members:
                yield (
                    statement,
                    {"rows": codec.dumps_text([r.fields for r in members])},
                    _computed_into(found, members),
                )

    def entity_rows(
        self,
        conn: psycopg.Connection[Any],
        label: str,
        rows: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    ) -> list[EntityChange | Unmapped | Unresolved]:
        """Rows of a table (key, fields) as the entity records they are, or why not: what
        reconcile compares, and what the read endpoint answers."""
        now = datetime.now(UTC)
        outbox_rows = [
            OutboxRow(i, "0", label, "U", key, "", fields, None, None, self.system, now)
            for i, (key, fields) in enumerate(rows)
        ]
        found = self.prepare_sync(conn, outbox_rows)
        results: list[EntityChange | Unmapped | Unresolved] = []
        for row in outbox_rows:
            try:
                results.append(self.translate(row, row.fields, None, found))
            except (Unmapped, Unresolved) as exc:
                results.append(exc)
        return results

    def _xref_wanted(
        self, rows: Iterable[OutboxRow]
    ) -> Iterable[tuple[EntityMap, Any, Mapping[str, Any] | None]]:
        """(map of the keyed table, local key value, the row's fields if it is that
        table's own row) for each lookup."""
        for row in rows:
            emap = self.entities.of_table(row.table_name)
            if emap is None or not emap.spec.mapped or row.key is None:
                continue
            keyed, key = self._keyed_by(emap, row.key)
            if keyed.uses_xref:
                yield keyed, local_key_value(keyed.spec, key), row.fields if keyed is emap else None
            for fmap in emap.references:
                value = (row.fields or {}).get(fmap.column)
                target = self.entities.of_entity(fmap.ref or "")
                if value is not None and target is not None and target.uses_xref:
                    yield target, value, None

    def _keyed_by(
        self, emap: EntityMap, key: Mapping[str, Any]
    ) -> tuple[EntityMap, dict[str, Any]]:
        """The table whose key names the record, and that key: a 1:1 side table's row is
        named by its main table's key, which its own key holds."""
        if emap.spec.part_of is None:
            return emap, dict(key)
        main = self.entities.main_of(emap)
        return main, dict(zip(main.spec.key, (key[c] for c in emap.spec.key), strict=True))

    def _minted(
        self, emap: EntityMap, value: Any, fields: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The entity key of a record born here: the column holding it where one does,
        else `<system>-<local key>`."""
        assert emap.spec.xref is not None
        name = emap.spec.xref[0]
        fmap = emap.by_field.get(name)
        if fmap is not None and fields is not None and fields.get(fmap.column) is not None:
            shipped = emap.outbound_values({fmap.column: fields[fmap.column]}, {}) or {}
            return {name: shipped[name]}
        parts = value if isinstance(value, tuple) else (value,)
        return {name: "-".join(str(p) for p in (self.system, *parts))}

    # ----------------------------------------------------------- translate

    def translate(
        self,
        row: OutboxRow,
        fields: Mapping[str, Any] | None,
        old: Mapping[str, Any] | None,
        found: Lookups,
    ) -> EntityChange:
        """The entity change of one row; Unmapped or Unresolved when it cannot be."""
        emap = self.entities.of_table(row.table_name)
        assert emap is not None and row.key is not None
        for fmap in emap.references:
            value = (fields or {}).get(fmap.column)
            target = self.entities.of_entity(fmap.ref or "")
            if (
                value is not None
                and target is not None
                and target.uses_xref
                and (target.entity, value) not in found.refs
            ):
                raise Unresolved(
                    f"{emap.entity}.{fmap.name}: {fmap.ref} {value!r} has no entity key "
                    "(its minted key is taken by another record)"
                )
        refs = found.refs
        keyed, local_key = self._keyed_by(emap, row.key)
        key = keyed.outbound_key(local_key, found.keys)
        shipped = emap.outbound_values(fields, refs)
        if shipped is not None:
            shipped.update(found.computed.get(row.id, {}))
        return EntityChange(emap.entity, key, shipped, emap.outbound_values(old, refs) or None)


def _computed_into(
    found: Lookups, members: list[OutboxRow]
) -> Callable[[list[Any]], None]:
    def absorb(answer: list[Any]) -> None:
        for row, (text,) in zip(members, answer, strict=True):
            found.computed[row.id] = codec.loads(text)

    return absorb


def _local_key(emap: EntityMap, value: Any) -> dict[str, Any]:
    parts = value if isinstance(value, tuple) else (value,)
    return dict(zip(emap.spec.key, parts, strict=True))
