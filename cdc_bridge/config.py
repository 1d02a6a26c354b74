"""Configuration: one YAML file validated into frozen, typed objects.

Every problem names the file, the key path and the fix; all problems are
reported at once (`ConfigError`, exit code 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from cdc_bridge.errors import ConfigError, IdentifierError
from cdc_bridge.identifiers import QualifiedName, parse_qualified_name
from cdc_bridge.identifiers import check_identifier as _check_identifier

DEFAULT_CONFIG_PATH = "cdc-bridge.yaml"
CONFIG_ENV = "CDC_BRIDGE_CONFIG"

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def check_identifier(name: str) -> str:
    # A ValueError, so that pydantic reports it with the key path like any other problem.
    try:
        return _check_identifier(name)
    except IdentifierError as exc:
        raise ValueError(str(exc)) from None


def _check_table_name(label: str) -> None:
    try:
        parse_qualified_name(label)
    except IdentifierError as exc:
        raise ValueError(str(exc)) from None


class Owner(StrEnum):
    """Who owns a field, seen from this side."""

    LOCAL = "local"
    PEER = "peer"
    BOTH = "both"


class TableMode(StrEnum):
    """How a whole table is owned, seen from this side."""

    LOCAL = "local"  # 1-way, this side is the SOR
    PEER = "peer"  # 1-way, the peer is the SOR: only received here
    HANDOFF = "handoff"  # born here, owned by the peer after its first sync
    ADOPT = "adopt"  # born at the peer, owned here once it has arrived
    FIELDS = "fields"  # per-field ownership map


class ConflictPolicy(StrEnum):
    NEWER_WINS = "newer_wins"
    LOCAL_WINS = "local_wins"
    PEER_WINS = "peer_wins"
    MANUAL = "manual"


_WHOLE_TABLE_MODES = ", ".join(m.value for m in TableMode if m is not TableMode.FIELDS)
_OWNERS = ", ".join(o.value for o in Owner)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT; fix: write it like 127.0.0.1:8081")
    return value


HostPort = Annotated[str, Field(min_length=3)]


class DatabaseConfig(_Frozen):
    url: SecretStr
    schema_name: str = Field(default="cdc_bridge", alias="schema")
    relay_role: str = "cdc_bridge_relay"
    # Capture runs as the functions' owner, so writers need no grant at all. `invoker` (the
    # writer inserting its own outbox row) was removed: it let any role add outbox rows by
    # hand, and the relay ships what the outbox holds (docs/security.md).
    capture_security: Literal["definer"] = "definer"

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("schema_name", "relay_role")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier(value)

    @field_validator("capture_security", mode="before")
    @classmethod
    def _definer_only(cls, value: Any) -> Any:
        if value == "invoker":
            raise ValueError(
                "`invoker` is no longer offered: it let every role add outbox rows by hand "
                "(docs/security.md); fix: remove the key, capture runs as the definer"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw.startswith(("postgresql://", "postgres://")) and "=" not in raw:
            raise ValueError("is not a PostgreSQL URL; fix: use postgresql://USER@HOST:PORT/DBNAME")
        return value


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(
            f"{value!r} is not an environment variable name; fix: name the variable that "
            "holds the secret, e.g. SHOP_API_TOKEN (the secret itself never goes in the file)"
        )
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]


def _json_pointers(value: dict[str, str]) -> dict[str, str]:
    """A map of column to JSON pointer (webhook and poll fields)."""
    for column, pointer in value.items():
        check_identifier(column)
        if pointer and not pointer.startswith("/"):
            raise ValueError(
                f"field {column!r} points at {pointer!r}, which is not a JSON pointer; "
                'fix: write it like "/id" or "/billing/email"'
            )
    return value


class WebhookSignature(_Frozen):
    """How the peer application signs its webhooks: an HMAC of the raw body."""

    header: str
    secret_env: EnvName
    algorithm: Literal["sha256", "sha1"] = "sha256"
    encoding: Literal["base64", "hex"] = "base64"
    prefix: str = ""
    timestamp_header: str | None = None


class WebhookRoute(_Frozen):
    """One route of `serve` that takes the peer application's own webhooks for a table."""

    path: str
    table: str
    signature: WebhookSignature
    fields: dict[str, str] = Field(min_length=1)
    delivery_id_header: str | None = None
    op_header: str | None = None
    delete_when: tuple[str, ...] = ()

    @field_validator("path")
    @classmethod
    def _route(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("/v1/") or value == "/healthz":
            raise ValueError(
                f"{value!r} is not a free route; fix: use a path such as /hooks/orders "
                "(not under /v1/, which the bridge protocol uses)"
            )
        return value

    _fields = field_validator("fields")(classmethod(lambda cls, v: _json_pointers(v)))


class Pagination(_Frozen):
    """How a list endpoint pages: by page number, by offset, by a cursor, or by `Link`."""

    kind: Literal["page", "offset", "cursor", "link"] = "page"
    param: str | None = None
    size_param: str | None = None
    size: int = Field(default=100, gt=0, le=10_000)
    first: int = 1
    next: str | None = None

    @property
    def position_param(self) -> str:
        """The query parameter carrying the page, offset or cursor (default: the kind)."""
        return self.param or self.kind

    @model_validator(mode="after")
    def _complete(self) -> Pagination:
        if self.kind == "cursor" and not (self.next and self.next.startswith("/")):
            raise ValueError(
                "cursor pagination needs `next`, the JSON pointer of the next cursor in the "
                'body; fix: e.g. next: "/meta/next_cursor"'
            )
        return self


class PollSource(_Frozen):
    """A list endpoint of the peer application read for records modified since a cursor."""

    name: str
    table: str
    path: str
    modified_since: str
    modified_field: str
    records: str = ""
    fields: dict[str, str] = Field(min_length=1)
    page: Pagination = Field(default_factory=Pagination)
    interval_s: float = Field(default=60.0, gt=0)
    overlap_s: float = Field(default=5.0, ge=0)
    # How often to read the whole list and delete what it no longer has (null: on demand).
    full_interval_s: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_identifier(value)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not a path; fix: write it like /api/customers")
        return value

    _fields = field_validator("fields")(classmethod(lambda cls, v: _json_pointers(v)))


def _pem_file(value: str | None) -> str | None:
    if value is not None and not Path(value).is_file():
        raise ValueError(f"file {value!r} not found; fix: give the path of a PEM file")
    return value


PemFile = Annotated[str, AfterValidator(_pem_file)]


class InboundTls(_Frozen):
    """`serve` over HTTPS; with `client_ca`, only clients with a certificate it signed."""

    cert: PemFile
    key: PemFile
    client_ca: PemFile | None = None


class PeerTls(_Frozen):
    """How every request to the peer talks TLS (the relay's, the tools' reads): a private
    CA to trust, and a client certificate to present (mutual TLS)."""

    ca: PemFile | None = None
    cert: PemFile | None = None
    key: PemFile | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> PeerTls:
        if (self.cert is None) != (self.key is None):
            raise ValueError(
                "a client certificate needs its key; fix: set both cert and key, or neither"
            )
        return self


class InboundConfig(_Frozen):
    listen: HostPort = "127.0.0.1:8081"
    tls: InboundTls | None = None
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    timestamp_tolerance_s: float = Field(default=300.0, gt=0)
    applied_key_retention_days: float = Field(default=7.0, gt=0)
    webhooks: tuple[WebhookRoute, ...] = ()
    polls: tuple[PollSource, ...] = ()

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: _host_port(v)))


class RestOperation(_Frozen):
    """`PUT /api/products/{sku}`: a method and a URL path template."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str


def _parse_rest_operation(value: Any) -> Any:
    if isinstance(value, str):
        method, _, path = value.strip().partition(" ")
        return {"method": method.upper(), "path": path.strip()}
    return value


class BodyValue(_Frozen):
    """One value of a REST body: a field of the change (optionally cast) or a constant."""

    field: str | None = None
    const: Any = None
    # string: the value as text; with `scale`, a number with exactly that many decimals
    # ("12.50"). integer / number: JSON numbers.
    cast: Literal["string", "integer", "number"] | None = None
    scale: int | None = Field(default=None, ge=0, le=30)

    @model_validator(mode="before")
    @classmethod
    def _field_as_text(cls, data: Any) -> Any:
        return {"field": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> BodyValue:
        if (self.field is None) == ("const" not in self.model_fields_set):
            raise ValueError(
                "a body value is a field or a constant; fix: write `price` or "
                "{field: price, cast: string, scale: 2}, or {const: simple}"
            )
        if self.scale is not None and self.cast != "string":
            raise ValueError("`scale` applies to cast: string; fix: add cast: string")
        return self


_OPERATIONS = ("insert", "update", "delete", "read", "search")


class RestTableMapping(_Frozen):
    insert: Annotated[RestOperation, Field()] | None = None
    update: RestOperation | None = None
    delete: RestOperation | None = None
    rename: dict[str, str] = Field(default_factory=dict)
    read: RestOperation | None = None
    # Created ids: where a create's answer holds the id the API gave the record. The id is
    # kept in the bridge's cross-reference and fills `{peer_id}` in the other paths.
    id: str | None = None
    search: RestOperation | None = None
    found: str | None = None
    exists: tuple[int, ...] = (409, 422)
    body: dict[str, BodyValue] | None = None

    @model_validator(mode="before")
    @classmethod
    def _operations_as_strings(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {
                k: _parse_rest_operation(v) if k in _OPERATIONS else v
                for k, v in data.items()
            }
        return data

    @model_validator(mode="after")
    def _created_ids(self) -> RestTableMapping:
        uses_id = any(
            op is not None and "{peer_id}" in op.path
            for op in (self.insert, self.update, self.delete, self.read)
        )
        if uses_id and self.id is None:
            raise ValueError(
                "a path uses {peer_id}, the API's own id, but `id` does not say where a create's "
                'answer holds it; fix: add id: "/id" (a JSON pointer)'
            )
        if (self.search is None) != (self.found is None):
            raise ValueError(
                "`search` and `found` go together; fix: e.g. search: "
                '"GET /api/products?sku={sku}" and found: "/0/id"'
            )
        pointers = [p for p in (self.id, self.found, *(self.body or {})) if p is not None]
        bad = [p for p in pointers if not p.startswith("/")]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a JSON pointer; fix: write it like /id")
        return self


class HeaderAuth(_Frozen):
    """The older form (`peer.auth_header` + `peer.auth_env`): one header, its whole value."""

    kind: Literal["header"]
    header: str = "Authorization"
    value_env: EnvName


class BearerAuth(_Frozen):
    kind: Literal["bearer"]
    token_env: EnvName


class BasicAuth(_Frozen):
    kind: Literal["basic"]
    username_env: EnvName
    password_env: EnvName


class ApiKeyAuth(_Frozen):
    kind: Literal["api_key"]
    key_env: EnvName
    header: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if (self.header is None) == (self.query is None):
            raise ValueError(
                "an API key goes in a header or in a query parameter; fix: set exactly one "
                "of `header: X-Api-Key` or `query: api_key`"
            )
        return self


class ClientCredentialsAuth(_Frozen):
    kind: Literal["oauth2_client_credentials"]
    token_url: str
    client_id_env: EnvName
    client_secret_env: EnvName
    scope: str | None = None

    @field_validator("token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an HTTP URL; fix: write https://HOST/oauth/token")
        return value


PeerAuth = Annotated[
    HeaderAuth | BearerAuth | BasicAuth | ApiKeyAuth | ClientCredentialsAuth,
    Field(discriminator="kind"),
]


class RateLimit(_Frozen):
    """How hard the REST adapter may use the peer's API (per peer, across all tables)."""

    requests_per_s: float | None = Field(default=None, gt=0)
    concurrency: int = Field(default=8, gt=0, le=256)


class PeerBase(_Frozen):
    """What every kind of peer endpoint has: a name, a URL, TLS and a timeout.

    One config model per kind (`adapter`), each served by one module of `peer/`.
    """

    adapter: str
    name: str = Field(min_length=1)
    url: str
    # One secret, or a list during a rotation: the first signs, any of them verifies.
    # The bridge kind signs its batches with it; `serve` verifies incoming batches with it.
    secret: SecretStr | list[SecretStr] | None = None
    tls: PeerTls | None = None
    timeout_s: float = Field(default=10.0, gt=0)

    @property
    def credentials(self) -> PeerAuth | None:
        """The credential sent with each request (None: the kind signs or sends none)."""
        return None

    def table_problems(self, tables: Mapping[str, TableConfig]) -> list[str]:
        """What the kind needs from `tables` and does not get (none by default)."""
        return []

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an HTTP URL; fix: write http://HOST:PORT")
        return value.rstrip("/")

    @property
    def secrets(self) -> tuple[str, ...]:
        """The shared secrets, the signing one first (empty when none is set)."""
        if self.secret is None:
            return ()
        listed = self.secret if isinstance(self.secret, list) else [self.secret]
        return tuple(s.get_secret_value() for s in listed)

    @model_validator(mode="after")
    def _no_empty_secret(self) -> PeerBase:
        if not all(self.secrets):
            raise ValueError(
                "peer.secret holds an empty secret; fix: remove it, or set its variable"
            )
        return self

    @model_validator(mode="after")
    def _tls_needs_https(self) -> PeerBase:
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError(
                f"peer.tls is set but peer.url {self.url!r} is not HTTPS; "
                "fix: write https://HOST:PORT"
            )
        return self


class BridgePeer(PeerBase):
    """`adapter: bridge` (the default): another cdc-bridge's `serve`, signed batches."""

    adapter: Literal["bridge"] = "bridge"

    @model_validator(mode="before")
    @classmethod
    def _auth_is_for_rest(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and ("auth" in data or "auth_env" in data):
            raise ValueError(
                "`auth` and `auth_env` are for the rest adapter (the bridge adapter signs "
                "with `secret`); fix: remove them, or set adapter: rest"
            )
        return data

    @model_validator(mode="after")
    def _bridge_needs_secret(self) -> BridgePeer:
        if not self.secrets:
            raise ValueError(
                "the bridge adapter signs every batch; fix: set peer.secret "
                '(for example secret: "${BRIDGE_SECRET}")'
            )
        return self


class RestPeer(PeerBase):
    """`adapter: rest`: an application's own REST API, one request per change."""

    adapter: Literal["rest"]
    auth_header: str = "Authorization"
    auth_env: str | None = None
    auth: PeerAuth | None = None
    rate_limit: RateLimit = Field(default_factory=RateLimit)

    @property
    def credentials(self) -> PeerAuth | None:
        """`auth`, or the older `auth_header` + `auth_env` as a header credential."""
        if self.auth is not None or self.auth_env is None:
            return self.auth
        return HeaderAuth(kind="header", header=self.auth_header, value_env=self.auth_env)

    @model_validator(mode="after")
    def _one_auth(self) -> RestPeer:
        if self.auth is not None and self.auth_env is not None:
            raise ValueError(
                "both `auth` and `auth_env` are set; fix: keep `auth` and remove `auth_env`"
            )
        return self

    def table_problems(self, tables: Mapping[str, TableConfig]) -> list[str]:
        """Every change this side ships needs a request: insert, update, and delete
        unless the peer owns the key (then this side never deletes)."""
        missing = []
        for label, table in tables.items():
            spec = TableSpec.build(label, table)
            needed = ["insert", "update"] + ([] if spec.key_owned_by_peer else ["delete"])
            absent = [op for op in needed if table.rest is None or getattr(table.rest, op) is None]
            if spec.captures and absent:
                missing.append(f'tables."{label}".rest.{"/".join(absent)}')
        if not missing:
            return []
        return [
            f"the rest adapter sends every change this side ships, but {', '.join(missing)} "
            'is not set; fix: map each operation, e.g. update: "PUT /api/items/{id}"'
        ]


# The kinds of peer, by `peer.adapter`. A new kind: a model here, a module in peer/.
PEER_KINDS: dict[str, type[PeerBase]] = {"bridge": BridgePeer, "rest": RestPeer}


def _peer_kind(value: Any) -> str:
    if isinstance(value, PeerBase):
        return value.adapter
    return str(value.get("adapter", "bridge")) if isinstance(value, Mapping) else "bridge"


# (The default kind last: docs/config.md's check reads `adapter`'s default from the last.)
PeerConfig = Annotated[
    Annotated[RestPeer, Tag("rest")] | Annotated[BridgePeer, Tag("bridge")],
    Discriminator(_peer_kind),
]


class RelayConfig(_Frozen):
    batch_size: int = Field(default=500, gt=0, le=100_000)
    max_wait_ms: float = Field(default=20.0, ge=0)
    poll_interval_s: float = Field(default=5.0, gt=0)
    concurrency: int = Field(default=4, gt=0, le=256)
    # A source transaction with more changes than this ships in parts of this size, each
    # applied at once by the peer (docs/delivery.md): it bounds both sides' memory.
    max_transaction_changes: int = Field(default=10_000, gt=0, le=1_000_000)
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    lag_threshold_s: float = Field(default=300.0, gt=0)
    peer_unreachable_grace_s: float = Field(default=60.0, ge=0)
    metrics_listen: HostPort | None = "127.0.0.1:9181"
    shutdown_timeout_s: float = Field(default=20.0, gt=0)
    # Sized in README.md (Sizing): history grows with the load, so its default is an hour
    # (a day at 1,500 changes/s stays within the stated budget); audits of operator actions
    # grow only with those actions.
    delivered_retention_days: float = Field(default=0.0417, ge=0)  # about an hour
    audit_retention_days: float = Field(default=30.0, ge=0)
    retention_interval_s: float = Field(default=300.0, gt=0)
    # The relay rotates the outbox this often (TRUNCATE of its drained slot, see
    # create_outbox in sql/outbox.sql), so it stays small without autovacuum; null leaves
    # the outbox to autovacuum alone. `vacuum_interval_s` is its earlier name.
    rotate_interval_s: float | None = Field(
        default=10.0, gt=0, validation_alias=AliasChoices("rotate_interval_s", "vacuum_interval_s")
    )

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return None if value is None else _host_port(value)


class LoggingConfig(_Frozen):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


_ENTITY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")


def _entity_name(value: str) -> str:
    if not _ENTITY_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an entity name; fix: use letters, digits, '_', '-' or '.' "
            "(e.g. product), the same at both sides"
        )
    return value


EntityName = Annotated[str, AfterValidator(_entity_name)]


class FieldRule(_Frozen):
    """How this side holds one field of the entity: a column (renamed, its values mapped),
    a value computed from the row (shipped only), or a reference to another entity."""

    column: str | None = None
    # This side's value -> the entity's value; received values go through its inverse.
    map: dict[Any, Any] | None = None
    expr: str | None = None
    ref: EntityName | None = None

    @model_validator(mode="before")
    @classmethod
    def _column_as_text(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data

    @field_validator("column")
    @classmethod
    def _column(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value)

    @model_validator(mode="after")
    def _one_source(self) -> FieldRule:
        if (self.column is None) == (self.expr is None):
            raise ValueError(
                "a field is a column or an expression; fix: write `name: description`, "
                "{column: status, map: {A: true, I: false}} or {expr: \"round(price * 1.2, 2)\"}"
            )
        if self.expr is not None and (self.map is not None or self.ref is not None):
            raise ValueError(
                "a computed field takes no `map` or `ref`; fix: compute the entity's value "
                "in `expr` itself"
            )
        if self.map is not None:
            values = list(self.map.values())
            twice = sorted({repr(v) for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(
                    f"map gives {', '.join(twice)} for more than one value, so a received "
                    "value could not be mapped back; fix: map each value to its own one"
                )
        return self


class TableConfig(_Frozen):
    """One entry of `tables:`, as written by the user."""

    key: tuple[str, ...] = Field(min_length=1)
    sor: TableMode | dict[str, Owner]
    conflicts: ConflictPolicy | None = None
    where: str | None = None
    guard: bool = True
    rest: RestTableMapping | None = None
    # The shared record this table holds (the name on the wire; default: the table's name).
    entity: EntityName | None = None
    # Entity field -> how this side holds it; without it every column is a field of its name.
    fields: dict[str, FieldRule] | None = None
    # The entity's key, when this side generates its own key instead (e.g. a bigserial
    # id): the bridge keeps entity key <-> local key in its cross-reference.
    xref: tuple[str, ...] | None = None
    # Values for columns the entity does not carry but an insert here needs.
    defaults: dict[str, Any] = Field(default_factory=dict)
    # A 1:1 side table of the entity's main table: its `key` columns hold the main table's
    # key (in the same order), and its fields are more fields of the same entity.
    part_of: str | None = None

    @field_validator("part_of")
    @classmethod
    def _part_of_name(cls, value: str | None) -> str | None:
        if value is not None:
            _check_table_name(value)
        return value

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, FieldRule] | None) -> dict[str, FieldRule] | None:
        for name in value or {}:
            check_identifier(name)
        return value

    @field_validator("xref")
    @classmethod
    def _xref_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("names no field; fix: list the entity's key field, e.g. [number]")
        return None if value is None else tuple(check_identifier(v) for v in value)

    @field_validator("defaults")
    @classmethod
    def _default_columns(cls, value: dict[str, Any]) -> dict[str, Any]:
        for column in value:
            check_identifier(column)
        return value

    @field_validator("key")
    @classmethod
    def _key_identifiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a column twice; fix: name each key column once")
        return tuple(check_identifier(v) for v in value)

    @field_validator("sor", mode="before")
    @classmethod
    def _sor_shape(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value == TableMode.FIELDS.value or value not in set(TableMode):
                raise ValueError(
                    f"{value!r} is not an owner; fix: use one of {_WHOLE_TABLE_MODES}, "
                    f"or a map of field: {_OWNERS}"
                )
            return value
        if isinstance(value, Mapping):
            if not value:
                raise ValueError("the field map is empty; fix: name at least one field")
            for field_name, owner in value.items():
                if not isinstance(field_name, str):
                    raise ValueError(f"field name {field_name!r} is not text; fix: quote it")
                check_identifier(field_name)
                if owner not in set(Owner):
                    raise ValueError(
                        f"field {field_name!r} has owner {owner!r}; fix: use one of {_OWNERS}"
                    )
            return value
        raise ValueError(f"must be one of {_WHOLE_TABLE_MODES}, or a map of field: {_OWNERS}")

    @model_validator(mode="after")
    def _consistent(self) -> TableConfig:
        owners = self.sor if isinstance(self.sor, dict) else {}
        has_both = Owner.BOTH in owners.values()
        if self.conflicts is not None and not has_both:
            raise ValueError(
                "`conflicts` only applies to fields owned by both sides; fix: remove it, "
                "or mark a field `both` in `sor`"
            )
        if self.where is not None and self.sor in (TableMode.PEER, TableMode.ADOPT):
            raise ValueError(
                "`where` filters what this side ships, and this table is only received; "
                "fix: remove `where`"
            )
        problem = self._mapping_problem()
        if problem:
            raise ValueError(problem)
        return self

    def _mapping_problem(self) -> str | None:
        """What is wrong with `fields`/`xref`, as a message naming the fix, or None."""
        fields = self.fields
        if fields is None:
            if self.xref is not None:
                return "`xref` needs `fields` (the entity's other fields); fix: add fields"
            return None
        xref = self.xref or ()
        if self.part_of is not None and (self.entity is None or xref):
            return (
                "a side table (`part_of`) names its entity and has no `xref` of its own "
                "(its key is the main table's); fix: set `entity` as on the main table, "
                "and remove `xref`"
            )
        if xref and (len(xref) != 1 or len(self.key) != 1):
            return (
                "`xref` keeps a one-field entity key for a one-column generated key; fix: "
                "name one field in `xref` and one column in `key`"
            )
        columns = [r.column for r in fields.values() if r.column is not None]
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            return f"column(s) {', '.join(twice)} hold two fields; fix: map each column once"
        unmapped = [k for k in self.key if k not in columns]
        if unmapped and not xref and self.part_of is None:
            return (
                f"key column(s) {', '.join(unmapped)} are not mapped to a field; fix: map "
                "them in `fields`, or name the entity's key in `xref` if this side "
                "generates its own key"
            )
        computed = sorted(n for n, r in fields.items() if r.expr is not None)
        received = self.sor in (TableMode.PEER, TableMode.ADOPT)
        if isinstance(self.sor, dict):
            known = set(fields) | set(xref)
            strange = sorted(set(self.sor) - known)
            if strange:
                return (
                    f"sor names {', '.join(strange)}, which `fields` does not map; fix: "
                    "write sor per entity field"
                )
            received = False
            computed = [n for n in computed if self.sor.get(n, Owner.LOCAL) is not Owner.LOCAL]
        if computed and (received or isinstance(self.sor, dict)):
            return (
                f"computed field(s) {', '.join(computed)} are shipped only (one-way), but "
                "the config has this side receive them; fix: make them `local` in sor, "
                "or map a column instead of `expr`"
            )
        return None


class BridgeConfig(_Frozen):
    system: str = Field(min_length=1, max_length=63)
    database: DatabaseConfig
    peer: PeerConfig
    inbound: InboundConfig = Field(default_factory=InboundConfig)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tables: dict[str, TableConfig] = Field(min_length=1)

    @field_validator("system")
    @classmethod
    def _system_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(
                f"{value!r} may only hold letters, digits, '_', '-' and '.'; "
                "fix: pick a plain name such as erp"
            )
        return value

    @field_validator("tables", mode="before")
    @classmethod
    def _table_names(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for name in value:
                _check_table_name(str(name))
        return value

    @field_validator("peer", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        kind = _peer_kind(value)
        if kind not in PEER_KINDS:
            raise ValueError(
                f"adapter {kind!r} is not a kind of peer this bridge knows; "
                f"fix: use one of {', '.join(PEER_KINDS)}"
            )
        return value

    @model_validator(mode="after")
    def _peer_gets_what_it_needs(self) -> BridgeConfig:
        problems = self.peer.table_problems(self.tables)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _incoming_sources_feed_received_tables(self) -> BridgeConfig:
        sources: list[tuple[str, WebhookRoute | PollSource]] = [
            *((f"inbound.webhooks.{i}", r) for i, r in enumerate(self.inbound.webhooks)),
            *((f"inbound.polls.{i}", p) for i, p in enumerate(self.inbound.polls)),
        ]
        problems = [
            problem for where, source in sources if (problem := self._source_problem(where, source))
        ]
        names = [p.name for p in self.inbound.polls]
        if len(set(names)) != len(names):
            problems.append("inbound.polls: two polls share a name; fix: name each once")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _source_problem(self, where: str, route: WebhookRoute | PollSource) -> str | None:
        """Why a webhook route or poll cannot feed its table, or None."""
        # Built here, not through `table_specs`: a cached value would survive model_copy.
        specs = (TableSpec.build(label, table) for label, table in self.tables.items())
        spec = next((s for s in specs if route.table in (s.label, s.name.dotted)), None)
        if spec is None:
            return f"{where}.table {route.table!r} is not in `tables`; fix: configure it there"
        received = set(spec.field_names(spec.received_fields))
        if not (spec.receives_whole_rows or received):
            return (
                f"{where}.table {spec.label} receives nothing from the peer "
                f"(sor: {spec.mode.value}); fix: point the webhook at a table the peer owns"
            )
        missing = [k for k in spec.entity_key if k not in route.fields]
        if missing:
            return f"{where}.fields lacks key field(s) {', '.join(missing)}; fix: map them"
        unowned = [] if spec.receives_whole_rows else sorted(
            set(route.fields) - received - set(spec.entity_key)
        )
        if unowned:
            return (
                f"{where}.fields maps {', '.join(unowned)}, which this side owns; "
                "fix: map only fields the peer owns"
            )
        return None

    @model_validator(mode="after")
    def _entities_resolve(self) -> BridgeConfig:
        problems: list[str] = []
        # Built here, not through `table_specs`: a cached value would survive model_copy.
        specs = [TableSpec.build(label, table) for label, table in self.tables.items()]
        by_entity: dict[str, list[TableSpec]] = {}
        for spec in specs:
            if spec.part_of is None:
                by_entity.setdefault(spec.entity, []).append(spec)
            else:
                problems += _part_problems(spec, specs)
        for entity, specs in by_entity.items():
            if len(specs) > 1:
                problems.append(
                    f"tables {', '.join(s.label for s in specs)} all hold entity {entity!r}; "
                    "fix: give each table its own `entity`"
                )
        for spec in specs:
            for name, rule in (spec.fields or {}).items():
                if rule.ref is None:
                    continue
                target = by_entity.get(rule.ref)
                where = f'tables."{spec.label}".fields.{name}.ref'
                if target is None:
                    problems.append(
                        f"{where}: no table holds entity {rule.ref!r}; fix: configure the "
                        "referenced table too (its key translates the reference)"
                    )
                elif len(target[0].entity_key) != 1:
                    problems.append(
                        f"{where}: entity {rule.ref!r} has a key of "
                        f"{len(target[0].entity_key)} fields; fix: reference an entity with "
                        "a one-field key"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def spec_of_entity(self, entity: str) -> TableSpec | None:
        """The main table holding an entity (or a table of that name: a twin's entity)."""
        for spec in self.table_specs:
            if spec.entity == entity and spec.part_of is None:
                return spec
        for spec in self.table_specs:
            if spec.fields is None and spec.name.dotted == entity:
                return spec
        return None

    @model_validator(mode="after")
    def _peer_is_another_system(self) -> BridgeConfig:
        if self.peer.name == self.system:
            raise ValueError(
                f"peer.name equals system ({self.system!r}); fix: give each side its own name"
            )
        return self

    @cached_property
    def table_specs(self) -> tuple[TableSpec, ...]:
        return tuple(TableSpec.build(label, table) for label, table in self.tables.items())

    def table(self, label: str) -> TableSpec:
        for spec in self.table_specs:
            if spec.label == label or spec.name.dotted == label:
                return spec
        known = ", ".join(spec.label for spec in self.table_specs)
        raise ConfigError("config", [f"table {label!r} is not configured; known: {known}"])

    @property
    def bridge_schema(self) -> str:
        return self.database.schema_name


class TableSpec(_Frozen):
    """A table's sync rules, resolved from this side's point of view."""

    label: str
    name: QualifiedName
    key: tuple[str, ...]
    mode: TableMode
    owners: dict[str, Owner]  # per-field owners; empty unless mode is FIELDS
    conflicts: ConflictPolicy
    where: str | None
    guard: bool
    rest: RestTableMapping | None
    entity: str
    fields: dict[str, FieldRule] | None  # None: every column is a field of its own name
    xref: tuple[str, ...] | None
    defaults: dict[str, Any]
    part_of: str | None

    @classmethod
    def build(cls, label: str, table: TableConfig) -> TableSpec:
        if isinstance(table.sor, dict):
            mode, owners = TableMode.FIELDS, _column_owners(table, table.sor)
        else:
            mode, owners = table.sor, {}
        return cls(
            label=label,
            name=parse_qualified_name(label),
            key=table.key,
            mode=mode,
            owners=owners,
            conflicts=table.conflicts or ConflictPolicy.NEWER_WINS,
            where=table.where,
            guard=table.guard,
            rest=table.rest,
            entity=table.entity or label,
            fields=table.fields,
            xref=table.xref,
            defaults=table.defaults,
            part_of=table.part_of,
        )

    @property
    def mapped(self) -> bool:
        """The entity's names or values differ from this table's (else it ships as is)."""
        return self.fields is not None or self.entity != self.label

    @property
    def entity_key(self) -> tuple[str, ...]:
        """The entity's key fields (this table's key columns, by their field names; a side
        table's key is its main table's, known to the entity layer)."""
        if self.part_of is not None:
            return ()
        if self.xref is not None:
            return self.xref
        if self.fields is None:
            return self.key
        field_of = {r.column: n for n, r in self.fields.items() if r.column is not None}
        return tuple(field_of[k] for k in self.key)

    def field_names(self, columns: tuple[str, ...]) -> tuple[str, ...]:
        """The entity fields these columns hold (columns no field maps are left out)."""
        if self.fields is None:
            return columns
        field_of = {r.column: n for n, r in self.fields.items() if r.column is not None}
        return tuple(field_of[c] for c in columns if c in field_of)

    @property
    def computed(self) -> dict[str, str]:
        """Fields computed from the row (shipped only): field -> SQL expression."""
        return {n: r.expr for n, r in (self.fields or {}).items() if r.expr is not None}

    @property
    def ships_whole_rows(self) -> bool:
        """Whole-row tables ship every column, whatever columns the table has."""
        return self.mode in (TableMode.LOCAL, TableMode.HANDOFF)

    @property
    def receives_whole_rows(self) -> bool:
        return self.mode in (TableMode.PEER, TableMode.ADOPT)

    @property
    def captures(self) -> bool:
        return self.ships_whole_rows or bool(self.shipped_fields)

    def _fields_owned_by(self, *owners: Owner) -> tuple[str, ...]:
        return tuple(f for f, o in self.owners.items() if o in owners and f not in self.key)

    @property
    def shipped_fields(self) -> tuple[str, ...]:
        """Non-key fields this side ships (empty for whole-row tables: see ships_whole_rows)."""
        return self._fields_owned_by(Owner.LOCAL, Owner.BOTH)

    @property
    def received_fields(self) -> tuple[str, ...]:
        return self._fields_owned_by(Owner.PEER, Owner.BOTH)

    @property
    def both_fields(self) -> tuple[str, ...]:
        return self._fields_owned_by(Owner.BOTH)

    @property
    def peer_fields(self) -> tuple[str, ...]:
        """Fields only the peer may change (the guard refuses local writes)."""
        return self._fields_owned_by(Owner.PEER)

    @property
    def key_owned_by_peer(self) -> bool:
        """Rows are created and deleted only by the side that owns the key."""
        if self.mode is TableMode.PEER:
            return True
        return any(self.owners.get(k) is Owner.PEER for k in self.key)

    @property
    def synced_columns(self) -> tuple[str, ...] | None:
        """Every column the bridge reads or writes; None means the whole row."""
        if self.mode is not TableMode.FIELDS:
            return None
        return self.key + tuple(f for f in self.owners if f not in self.key)


def _part_problems(part: TableSpec, specs: list[TableSpec]) -> list[str]:
    where = f'tables."{part.label}".part_of'
    main = next(
        (s for s in specs if part.part_of in (s.label, s.name.dotted)), None
    )
    if main is None or main.part_of is not None:
        return [
            f"{where}: {part.part_of!r} is not a main table in `tables`; fix: name the "
            "configured table whose key this table's key holds"
        ]
    if main.entity != part.entity or len(main.key) != len(part.key):
        return [
            f"{where}: a side table holds the same entity as {main.label} ({main.entity}) "
            f"and a key of as many columns ({len(main.key)}); fix: set entity: "
            f"{main.entity} and a key holding {main.label}'s key"
        ]
    clash = sorted(set(part.fields or {}) & set(main.fields or {}))
    if clash:
        return [f"{where}: field(s) {', '.join(clash)} are held by {main.label} too; "
                "fix: map each field in one table"]
    return []


def _column_owners(table: TableConfig, owners: Mapping[str, Owner]) -> dict[str, Owner]:
    """`sor` per entity field, as owners per column (computed fields have no column)."""
    if table.fields is None:
        return dict(owners)
    column_of = {n: r.column for n, r in table.fields.items() if r.column is not None}
    result: dict[str, Owner] = {}
    for name, owner in owners.items():
        column = column_of.get(name)
        if column is not None:
            result[column] = owner
        elif name in (table.xref or ()):
            for key_column in table.key:
                result[key_column] = owner
    return result


# ---------------------------------------------------------------- loading


def resolve_config_path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: str | os.PathLike[str] | None = None) -> BridgeConfig:
    """Read, interpolate and validate a config file, or raise ConfigError listing every problem."""
    config_path = resolve_config_path(path)
    shown = str(config_path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            shown,
            [
                "file not found; fix: create it (see examples/), or pass --config FILE "
                f"or set {CONFIG_ENV}"
            ],
        ) from None
    except OSError as exc:
        raise ConfigError(shown, [f"cannot read the file ({exc.strerror})"]) from None
    return parse_config(text, shown, os.environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> BridgeConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            source, [f"{where}not valid YAML ({problem}); fix: correct the syntax"]
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the file must hold a mapping of keys such as system, tables"])
    problems: list[str] = []
    data = _interpolate(raw, (), environ, problems)
    try:
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        # A missing variable already explains the errors it causes further down.
        unset = [p.split(": ", 1)[0] for p in problems]
        for error in exc.errors():
            problem = _describe(error)
            path = problem.split(": ", 1)[0]
            if not any(path.startswith(u) or u.startswith(path) for u in unset):
                problems.append(problem)
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)
    return config


def _interpolate(
    node: Any, path: tuple[Any, ...], environ: Mapping[str, str], problems: list[str]
) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, (*path, k), environ, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, (*path, i), environ, problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in environ:
            problems.append(
                f"{_dotted(path)}: environment variable {name} is not set; "
                f"fix: export {name}=... before running (or write $${{{name}}} for a literal)"
            )
            return ""
        return environ[name]

    return _ENV_REFERENCE.sub(substitute, node)


def _dotted(path: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
            continue
        text = str(part)
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
            parts.append(("." if parts else "") + text)
        else:
            parts.append(("." if parts else "") + '"' + text.replace('"', '\\"') + '"')
    return "".join(parts) or "(top level)"


_FIXES = {
    "missing": "fix: add this key",
    "extra_forbidden": "fix: remove it, or check its spelling",
    "int_parsing": "fix: write a whole number",
    "int_type": "fix: write a whole number",
    "float_parsing": "fix: write a number",
    "float_type": "fix: write a number",
    "bool_parsing": "fix: write true or false",
    "bool_type": "fix: write true or false",
    "string_type": "fix: write a text value",
    "dict_type": "fix: write a mapping (key: value)",
    "tuple_type": "fix: write a list, e.g. [id]",
    "too_short": "fix: give at least one entry",
}


def _describe(error: Any) -> str:
    # Drop the union/model tags pydantic puts in the location.
    loc = tuple(
        part
        for index, part in enumerate(error["loc"])
        if not (isinstance(part, str) and (part.startswith("function-") or "[" in part))
        and part not in ("TableMode", "dict[str,Owner]", "str")
        and not (index == 1 and error["loc"][0] == "peer" and part in PEER_KINDS)
    )
    kind = error["type"]
    message = str(error["msg"])
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        # Checks across the whole file may name their keys themselves.
        if not loc and message.startswith(("tables.", "inbound.", "peer.")):
            return message
        return f"{_dotted(loc)}: {message}"
    if kind == "literal_error" or kind == "enum":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{_dotted(loc)}: {error.get('input')!r} is not allowed; fix: use {expected}"
    fix = _FIXES.get(kind, "fix: see docs/config.md")
    return f"{_dotted(loc)}: {message.lower()}; {fix}"
