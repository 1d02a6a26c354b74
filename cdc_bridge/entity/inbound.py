"""Inbound translation: the peer's entity changes as this side's rows.

For each change of a batch: the table holding its entity here, its key (the entity key
itself, renamed, or the local key the cross-reference holds for it), and its fields as
columns (renamed, values mapped back, references translated to this side's keys). A
record new to a table whose key this side generates gets its key now, from the key
column's own sequence or default, and the cross-reference records it in the batch's
transaction, so later changes of the batch (and references to it) find it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from cdc_bridge.entity import Entities, EntityMap
from cdc_bridge.errors import Unmapped, Unresolved
from cdc_bridge.peer import codec
from cdc_bridge.peer.protocol import Change, Op
from cdc_bridge.sql import query

Connection = psycopg.Connection[Any]


@dataclass(slots=True)
class LocalChange:
    """One change of the batch in this side's terms (or why it cannot be applied)."""

    emap: EntityMap | None = None
    key: dict[str, Any] | None = None
    fields: dict[str, Any] | None = None
    old: dict[str, Any] | None = None
    refused: str | None = None  # the reason it is rejected
    absent: bool = False  # a delete of a record this side never had: nothing to do
    parts: list[LocalChange] = field(default_factory=list)  # its 1:1 side tables' rows


class Translator:
    """Translates batches for one config (caches how each table generates its key)."""

    def __init__(self, entities: Entities, schema: str, peer_ids: bool = False) -> None:
        self.entities = entities
        # The peer is an application that names records by ids of its own: a reference
        # in what it sends is such an id, kept in the peer's cross-reference (`xref`).
        self.peer_ids = peer_ids
        self.schema = schema
        self._generated: dict[str, sql.Composable] = {}
        self._resolvers: dict[tuple[str, bool], bytes] = {}  # entity_resolve_keys, composed

    def translate(self, conn: Connection, changes: list[Change]) -> list[LocalChange]:
        maps = [self.entities.of_entity(c.entity) for c in changes]
        # Each change's key as text, for tables whose key the cross-reference holds.
        texts = [
            None if emap is None or not emap.uses_xref else _text(change.key)
            for change, emap in zip(changes, maps, strict=True)
        ]
        keys = self._xref_keys(conn, changes, maps, texts)
        refs = self._references(conn, changes, maps, keys)
        return [
            self._one(
                change,
                emap,
                None if emap is None or text is None else keys.get((emap.entity, text)),
                refs,
            )
            for change, emap, text in zip(changes, maps, texts, strict=True)
        ]

    def _one(
        self,
        change: Change,
        emap: EntityMap | None,
        xref_key: dict[str, Any] | None,
        refs: dict[tuple[str, Any], Any],
    ) -> LocalChange:
        if emap is None:
            return LocalChange(refused=f"entity {change.entity!r} is not configured on this side")
        parts_of = self.entities.parts_of(emap.entity)
        if emap.identity and not parts_of:
            # A twin's table: the change is already in this side's terms (the hot path).
            return LocalChange(emap, change.key, change.fields, change.old or None)
        try:
            if not emap.uses_xref:
                key = emap.inbound_key(change.key)
            elif xref_key is not None:
                key = xref_key
            elif change.op is Op.DELETE:
                return LocalChange(emap, absent=True)
            else:
                raise Unresolved(
                    f"{emap.entity} {change.key} has no cross-reference entry here and none "
                    "could be recorded (the key generated for it is taken)"
                )
            fields = None
            if change.fields is not None:
                fields = emap.inbound_values(change.fields, refs)
            old = emap.inbound_values(change.old, refs) if change.old else None
            parts = list(self._parts(change, emap, key, refs)) if parts_of else []
        except (Unmapped, Unresolved) as exc:
            return LocalChange(emap, refused=str(exc))
        return LocalChange(emap, key, fields, old or None, parts=parts)

    def _parts(
        self,
        change: Change,
        emap: EntityMap,
        key: dict[str, Any],
        refs: dict[tuple[str, Any], Any],
    ) -> Iterable[LocalChange]:
        """The change's rows of the entity's 1:1 side tables: keyed by the main row's key;
        an insert or update only where it carries some of their fields."""
        for part in self.entities.parts_of(emap.entity):
            part_key = dict(zip(part.spec.key, (key[c] for c in emap.spec.key), strict=True))
            fields = None
            if change.fields is not None:
                fields = part.inbound_values(change.fields, refs)
                if not fields:
                    continue
            old = part.inbound_values(change.old, refs) if change.old else None
            yield LocalChange(part, part_key, fields, old or None)

    # --------------------------------------------------------------- keys

    def _xref_keys(
        self,
        conn: Connection,
        changes: list[Change],
        maps: list[EntityMap | None],
        texts: list[str | None],
    ) -> dict[tuple[str, str], dict[str, Any] | None]:
        """(entity, key text) -> local key, for tables whose key is generated here; new
        records (not deletes) get a key now, recorded in the cross-reference."""
        wanted: dict[str, dict[str, list[Any]]] = {}
        for change, emap, text in zip(changes, maps, texts, strict=True):
            if emap is not None and text is not None:
                creates = change.op is not Op.DELETE
                item = wanted.setdefault(emap.entity, {}).setdefault(text, [change.key, creates])
                item[1] = item[1] or creates
        found: dict[tuple[str, str], dict[str, Any] | None] = {}
        for entity, items in wanted.items():
            emap = self.entities.of_entity(entity)
            assert emap is not None
            texts_of = list(items)
            local = self._resolve(conn, emap, list(items.values()))
            # A key a concurrent batch recorded first: it has committed by now.
            again = [i for i, t in enumerate(texts_of) if local[i] is None and items[t][1]]
            if again:
                keys = self._lookup(conn, entity, [items[texts_of[i]][0] for i in again])
                for i, key in zip(again, keys, strict=True):
                    local[i] = key
            found.update(((entity, t), key) for t, key in zip(texts_of, local, strict=True))
        return found

    def _resolve(
        self, conn: Connection, emap: EntityMap, items: list[list[Any]]
    ) -> list[dict[str, Any] | None]:
        """The local key of each [entity key, creates]: looked up, or generated and
        recorded for one that creates (one statement for the lot)."""
        params = {
            "entity": emap.entity,
            "column": emap.spec.key[0],
            "keys": codec.dumps_text(items),
        }
        try:
            with conn.transaction():
                row = conn.execute(self._resolver(conn, emap, careful=False), params).fetchone()
        except psycopg.errors.UniqueViolation:
            # A key recorded meanwhile by a concurrent batch, or a generated key already
            # taken: this time a conflicting entry is skipped (NULL, looked at again).
            row = conn.execute(self._resolver(conn, emap, careful=True), params).fetchone()
        assert row is not None
        local: list[dict[str, Any] | None] = codec.loads(row[0])
        return local

    def _resolver(self, conn: Connection, emap: EntityMap, careful: bool) -> bytes:
        """entity_resolve_keys for the table, composed once."""
        name = (emap.spec.label, careful)
        statement = self._resolvers.get(name)
        if statement is None:
            conflict = sql.SQL("ON CONFLICT DO NOTHING" if careful else "")
            statement = query(
                "entity_resolve_keys",
                schema=self.schema,
                generated=self._generator(conn, emap),
                conflict=conflict,
            ).as_bytes(conn)
            self._resolvers[name] = statement
        return statement

    def _lookup(
        self, conn: Connection, entity: str, keys: list[dict[str, Any]]
    ) -> list[dict[str, Any] | None]:
        rows = conn.execute(
            query("entity_local_keys", schema=self.schema),
            {"entity": entity, "keys": codec.dumps_text(keys)},
        ).fetchall()
        return [None if text is None else codec.loads(text) for _, text in rows]

    def _generator(self, conn: Connection, emap: EntityMap) -> sql.Composable:
        label = emap.spec.label
        if label not in self._generated:
            relation = emap.spec.name.regclass_literal
            row = conn.execute(
                query("entity_key_default", relation=relation), {"column": emap.spec.key[0]}
            ).fetchone()
            sequence, default = row if row is not None else (None, None)
            if sequence is not None:
                self._generated[label] = sql.SQL("nextval({}::regclass)").format(
                    sql.Literal(sequence)
                )
            elif default is not None:
                # The table's own DEFAULT, as the catalog prints it (not user input).
                self._generated[label] = sql.SQL(default)
            else:
                raise Unresolved(
                    f"{label}.{emap.spec.key[0]} has no sequence or default to generate a key "
                    "for a record new here; fix: give the column one, or map the entity key "
                    "to a column instead of `xref`"
                )
        return self._generated[label]

    # --------------------------------------------------------- references

    def _references(
        self,
        conn: Connection,
        changes: list[Change],
        maps: list[EntityMap | None],
        keys: dict[tuple[str, str], dict[str, Any] | None],
    ) -> dict[tuple[str, Any], Any]:
        """(referenced entity, its key value) -> the local key value, for references to
        tables whose key is generated here, or to records an application peer knows by
        its own ids; None where the record has not arrived."""
        wanted: dict[str, set[Any]] = {}
        for change, emap in zip(changes, maps, strict=True):
            for ref, value in _references_of(change, emap):
                target = self.entities.of_entity(ref)
                if target is not None and value is not None and (self.peer_ids or target.uses_xref):
                    wanted.setdefault(ref, set()).add(value)
        refs: dict[tuple[str, Any], Any] = {}
        if self.peer_ids:
            return self._peer_id_references(conn, wanted)
        for entity, values in wanted.items():
            target = self.entities.of_entity(entity)
            assert target is not None and target.spec.xref is not None
            field = target.spec.xref[0]
            ordered = list(values)
            entity_keys = [{field: v} for v in ordered]
            local = self._lookup(conn, entity, entity_keys)
            for value, entity_key, key in zip(ordered, entity_keys, local, strict=True):
                key = key or keys.get((entity, _text(entity_key)))
                refs[(entity, value)] = None if key is None else next(iter(key.values()))
        return refs


    def _peer_id_references(
        self, conn: Connection, wanted: dict[str, set[Any]]
    ) -> dict[tuple[str, Any], Any]:
        """References by the application's own ids: the records this side created there
        (their ids learned from its answers, `rest.id`) or adopted (`rest.search`)."""
        refs: dict[tuple[str, Any], Any] = {}
        for entity, values in wanted.items():
            target = self.entities.of_entity(entity)
            assert target is not None
            ordered = list(values)
            rows = conn.execute(
                query("entity_keys_of_peer_ids", schema=self.schema),
                {"table": target.spec.label, "ids": [str(v) for v in ordered]},
            ).fetchall()
            known = {peer_id: codec.loads(text) for peer_id, text in rows}
            for value in ordered:
                key = known.get(str(value))
                refs[(entity, value)] = None if key is None else key[target.spec.key[0]]
        return refs


def _references_of(change: Change, emap: EntityMap | None) -> Iterable[tuple[str, Any]]:
    if emap is None or change.fields is None:
        return
    for fmap in emap.references:
        if fmap.name in change.fields and fmap.ref is not None:
            yield fmap.ref, change.fields[fmap.name]


def _text(key: dict[str, Any]) -> str:
    return codec.dumps_text(key, sort_keys=True)
