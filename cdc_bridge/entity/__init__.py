"""The entity layer: a table's rows as the record both sides agree on.

Each side maps its own table and columns to an entity and its fields (config `entity`,
`fields`, `xref`, `defaults`). The wire carries entities; the relay turns this side's rows
into entity changes (`outbound_*`), and `serve` turns the peer's entity changes into this
side's rows (`inbound_*`). A table configured without `fields` is its own entity: its
columns are the fields, and nothing is translated.

Everything in this module is pure. What needs the database (the cross-reference of
generated keys, references through it, computed fields) is looked up in bulk by
`outbound.py` (the relay, and reconcile and the read endpoint, which compare entities) and
`inbound.py` (`serve`), and handed in as `Lookup`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cdc_bridge.config import BridgeConfig, FieldRule, TableSpec
from cdc_bridge.errors import Unmapped, Unresolved

# (entity, key value) -> translated key value; filled by the caller before translating.
Lookup = Mapping[tuple[str, Any], Any]


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One entity field held in one column of this side."""

    name: str
    column: str
    to_entity: Mapping[Any, Any] | None = None
    to_local: Mapping[Any, Any] | None = None
    ref: str | None = None


def _field_map(name: str, rule: FieldRule) -> FieldMap:
    assert rule.column is not None
    inverse = None if rule.map is None else {v: k for k, v in rule.map.items()}
    return FieldMap(name, rule.column, rule.map, inverse, rule.ref)


@dataclass(frozen=True)
class EntityMap:
    """How one table of this side holds one entity (resolved from its TableSpec)."""

    spec: TableSpec
    fields: tuple[FieldMap, ...] = ()
    by_column: dict[str, FieldMap] = field(default_factory=dict)
    by_field: dict[str, FieldMap] = field(default_factory=dict)
    # The fields holding another entity's key (looked at for every row: built once).
    references: tuple[FieldMap, ...] = ()

    @classmethod
    def of(cls, spec: TableSpec) -> EntityMap:
        rules = spec.fields or {}
        maps = tuple(_field_map(n, r) for n, r in rules.items() if r.column is not None)
        return cls(
            spec,
            maps,
            by_column={m.column: m for m in maps},
            by_field={m.name: m for m in maps},
            references=tuple(m for m in maps if m.ref is not None),
        )

    @property
    def entity(self) -> str:
        return self.spec.entity

    @property
    def identity(self) -> bool:
        """Fields are the columns, by their own names: nothing to translate."""
        return self.spec.fields is None

    @property
    def uses_xref(self) -> bool:
        return self.spec.xref is not None

    # ------------------------------------------------------------- outbound

    def outbound_values(
        self, values: Mapping[str, Any] | None, refs: Lookup
    ) -> dict[str, Any] | None:
        """This side's column values as entity fields: renamed, value-mapped, references
        as the referenced entity's key. Columns no field maps are not shipped."""
        if values is None or self.identity:
            return None if values is None else dict(values)
        shipped: dict[str, Any] = {}
        for column, value in values.items():
            fmap = self.by_column.get(column)
            if fmap is not None:
                shipped[fmap.name] = self._to_entity(fmap, value, refs)
        return shipped

    def outbound_key(self, key: Mapping[str, Any], xref: Lookup) -> dict[str, Any]:
        """This side's key as the entity's key (through the cross-reference if kept)."""
        if self.identity:
            return dict(key)
        if self.spec.xref is not None:
            found = xref.get((self.entity, local_key_value(self.spec, key)))
            if found is None:
                raise Unresolved(f"{self.entity} {dict(key)} has no entity key yet")
            return dict(found)
        return {self.by_column[c].name: key[c] for c in self.spec.key}

    def _to_entity(self, fmap: FieldMap, value: Any, refs: Lookup) -> Any:
        if value is None:
            return None
        if fmap.to_entity is not None:
            if value not in fmap.to_entity:
                where = f"from {self.spec.label}.{fmap.column}"
                raise Unmapped(self.entity, fmap.name, value, where)
            return fmap.to_entity[value]
        if fmap.ref is not None and (fmap.ref, value) in refs:
            return refs[(fmap.ref, value)]
        return value

    # -------------------------------------------------------------- inbound

    def inbound_values(self, values: Mapping[str, Any] | None, refs: Lookup) -> dict[str, Any]:
        """The peer's entity fields as this side's columns. A field this side does not
        hold is left out; an unmapped value or an unresolved reference is refused."""
        if values is None:
            return {}
        if self.identity:
            return dict(values)
        row: dict[str, Any] = {}
        by_field = self.by_field
        for name, value in values.items():
            fmap = by_field.get(name)
            if fmap is None:
                continue
            if value is None or (fmap.to_local is None and fmap.ref is None):
                row[fmap.column] = value  # a plain rename (most fields): no call per value
            else:
                row[fmap.column] = self._to_local(fmap, value, refs)
        return row

    def inbound_key(self, key: Mapping[str, Any]) -> dict[str, Any]:
        """The entity key as this side's key (natural keys only: see `uses_xref`)."""
        if self.identity:
            return dict(key)
        missing = [f for f in self.spec.entity_key if f not in key]
        if missing or len(key) != len(self.spec.entity_key):
            raise Unresolved(
                f"key {sorted(key)} does not match {self.entity}'s key "
                f"{list(self.spec.entity_key)}"
            )
        return {self.by_field[f].column: key[f] for f in self.spec.entity_key}

    def _to_local(self, fmap: FieldMap, value: Any, refs: Lookup) -> Any:
        if value is None:
            return None
        if fmap.to_local is not None:
            if value not in fmap.to_local:
                raise Unmapped(self.entity, fmap.name, value, f"to {self.spec.label}.{fmap.column}")
            return fmap.to_local[value]
        if fmap.ref is not None and (fmap.ref, value) in refs:
            # Looked up because the referenced table keeps a cross-reference here.
            found = refs[(fmap.ref, value)]
            if found is None:
                raise Unresolved(
                    f"{self.entity}.{fmap.name} refers to {fmap.ref} {value!r}, which has not "
                    "arrived here; it is never applied dangling"
                )
            return found
        return value

    def with_defaults(self, row: dict[str, Any]) -> dict[str, Any]:
        """An inserted row with the configured defaults of columns it does not carry."""
        if not self.spec.defaults:
            return row
        return {**{c: v for c, v in self.spec.defaults.items() if c not in row}, **row}


def local_key_value(spec: TableSpec, key: Mapping[str, Any]) -> Any:
    """The value the cross-reference and references hold for a local key: the column's
    value for a one-column key, else the key's values in key order."""
    if len(spec.key) == 1:
        return key[spec.key[0]]
    return tuple(key[c] for c in spec.key)


class Entities:
    """Every table of one config by entity name, and by table label."""

    def __init__(self, config: BridgeConfig) -> None:
        self.maps = {spec.label: EntityMap.of(spec) for spec in config.table_specs}
        self._by_entity = {m.entity: m for m in self.maps.values() if m.spec.part_of is None}
        self._parts: dict[str, list[EntityMap]] = {}
        for m in self.maps.values():
            if m.spec.part_of is not None:
                self._parts.setdefault(m.entity, []).append(m)
        # A twin peer names tables by their dotted name too.
        for m in list(self.maps.values()):
            if m.identity:
                self._by_entity.setdefault(m.spec.name.dotted, m)

    def of_table(self, label: str) -> EntityMap | None:
        return self.maps.get(label)

    def of_entity(self, entity: str) -> EntityMap | None:
        """The entity's main table (its side tables: `parts_of`)."""
        return self._by_entity.get(entity)

    def parts_of(self, entity: str) -> list[EntityMap]:
        return self._parts.get(entity, [])

    def main_of(self, part: EntityMap) -> EntityMap:
        main = self._by_entity.get(part.entity)
        assert main is not None  # the config insists on it
        return main

    @property
    def any_mapped(self) -> bool:
        return any(m.spec.mapped for m in self.maps.values())
