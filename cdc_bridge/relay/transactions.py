"""Source transactions: grouping the outbox head, ordering, and lanes (pure: no I/O).

A source transaction ships whole, in one batch, and the peer applies it in one database
transaction. Transactions are ordered by their last outbox id: a transaction that
depends on another (it changed the same row after it, or refers to a row it inserted
under a foreign key that is checked at once) waited for that one's commit before taking
the id of the dependent change, so its last id is the higher one.

Every transaction has tokens: the records it touches, `(table, key text)`, or for a
table linked to others by foreign keys the whole group of linked tables. Two
transactions that share a token go in their order, in one lane; a transaction whose
token is held by a batch in flight, or by a transaction that had to wait, waits too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from cdc_bridge.outbox import OutboxRow

Token = tuple[str, str]
_FAMILY = "\x00family"  # a token's first part that no table label can be
_PART = "\x00txn"


@dataclass(slots=True)
class Txn:
    """The pending rows of one source transaction that this read found."""

    txid: str
    rows: list[OutboxRow]
    last_id: int
    complete: bool  # every pending row of it was read
    large: bool  # more rows than one batch may carry: ships in parts, in order
    parked: bool  # one of its keys has a failed change
    tokens: frozenset[Token] = field(default_factory=frozenset)

    @property
    def ready(self) -> bool:
        return (self.complete or self.large) and not self.parked


def families(links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each table linked by foreign keys -> the name of its group (connected tables)."""
    parent: dict[str, str] = {}

    def root(table: str) -> str:
        parent.setdefault(table, table)
        while parent[table] != table:
            parent[table] = parent[parent[table]]
            table = parent[table]
        return table

    for child, other in links:
        a, b = root(child), root(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {table: root(table) for table in parent}


def token_of(row: OutboxRow, family: Mapping[str, str]) -> Token:
    group = family.get(row.table_name)
    return (_FAMILY, group) if group is not None else (row.table_name, row.key_text)


def group(rows: Sequence[OutboxRow], family: Mapping[str, str], max_changes: int) -> list[Txn]:
    """The rows (in id order) as transactions, in the order they may be applied."""
    by_txid: dict[str, list[OutboxRow]] = {}
    for row in rows:
        members = by_txid.get(row.txid)
        if members is None:
            by_txid[row.txid] = [row]
        else:
            members.append(row)
    txns = [_txn(txid, members, family, max_changes) for txid, members in by_txid.items()]
    txns.sort(key=_LAST_ID)
    return txns


def _last_id(txn: Txn) -> int:
    return txn.last_id


_LAST_ID = _last_id


def _txn(txid: str, rows: list[OutboxRow], family: Mapping[str, str], max_changes: int) -> Txn:
    first = rows[0]
    total = first.txn_rows if first.txn_rows is not None else len(rows)
    large = total > max_changes
    if large:
        # Parts go in id order, each applied at once: the peer may see a part.
        rows = rows[:max_changes]
    if family:
        tokens = frozenset([token_of(r, family) for r in rows])
    else:  # no linked tables: every token is a record (most reads, at ~2 rows a txn)
        tokens = frozenset([(r.table_name, r.key_text) for r in rows])
    if large:
        tokens |= {(_PART, txid)}
    return Txn(
        txid,
        rows,
        first.txn_last_id if first.txn_last_id is not None else rows[-1].id,
        len(rows) >= total,
        large,
        first.txn_parked,
        tokens,
    )


def plan_lanes(
    txns: Sequence[Txn], lanes: int, per_lane: int, busy: Set[Token] = frozenset()
) -> list[list[Txn]]:
    """Transactions (in order) into at most `lanes` batches of about `per_lane` changes.

    Transactions that share a token land in one lane, in order. One that cannot go now
    (incomplete, parked, a token busy or held back, or it would join two lanes, or there
    is no room) holds its tokens back for every later one. A transaction larger than
    `per_lane` goes alone in an empty lane. A lane's transactions that are tied to it by
    a token may use the room the other lanes leave (up to `lanes x per_lane` in all):
    tied transactions cannot go in parallel anyway, and a bigger batch costs less.
    """
    held: set[Token] = set(busy)
    owner: dict[Token, int] = {}
    split: list[list[Txn]] = [[] for _ in range(lanes)]
    sizes = [0] * lanes
    for txn in txns:
        lane = _lane_for(txn, held, owner, sizes, per_lane)
        if lane is None:
            held |= txn.tokens
            continue
        split[lane].append(txn)
        sizes[lane] += len(txn.rows)
        if txn.large:
            sizes[lane] = per_lane  # a part of a large transaction goes alone
        for token in txn.tokens:
            owner[token] = lane
    return [lane for lane in split if lane]


def _lane_for(
    txn: Txn, held: set[Token], owner: dict[Token, int], sizes: list[int], per_lane: int
) -> int | None:
    if not txn.ready or not held.isdisjoint(txn.tokens):
        return None
    taken = {owner[t] for t in txn.tokens if t in owner} if owner else None
    if taken and len(taken) > 1:
        return None
    tied = bool(taken)
    lane = taken.pop() if taken else sizes.index(min(sizes))  # the least full lane
    if not sizes[lane]:
        return lane
    if txn.large:
        return None
    room = per_lane * len(sizes) - sum(sizes) if tied else per_lane - sizes[lane]
    return lane if len(txn.rows) <= room else None
