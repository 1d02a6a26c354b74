"""What exact values cost `serve` per batch: parsing a batch of 500 changes, and writing
the rows JSON that apply binds, with the wire codec against the lossy path it replaced
(pydantic's own JSON parser, which reads decimals as floats; orjson for the rows), in the
same run. No database: this is the CPU the codec adds per batch.

    .venv/bin/python bench/inbound/bench_codec.py [--changes 500] [--repeat 200]

Three batches: integers and text only (the codec's fast path), money as numeric(20,6)
(decimals: the exact path), and jsonb holding integers past 64 bits (the exact path;
the old path could not write these rows at all).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from cdc_bridge.peer import codec
from cdc_bridge.peer.protocol import Batch, Change, Op, dumps


def _batch(changes: int, fields: Callable[[int], dict[str, Any]]) -> bytes:
    now = datetime.now(UTC)
    return dumps(
        Batch(
            source="erp",
            batch_id="bench",
            changes=[
                Change(
                    idempotency_key=f"erp:1:{i}",
                    table="public.customers",
                    op=Op.UPDATE,
                    key={"id": i},
                    fields={"id": i, **fields(i)},
                    committed_at=now,
                    origin="erp",
                )
                for i in range(changes)
            ],
        )
    )


BATCHES: dict[str, Callable[[int], dict[str, Any]]] = {
    "ints and text": lambda i: {"name": f"customer {i}", "email": f"c{i}@example.com", "n": i},
    "numeric(20,6)": lambda i: {
        "name": f"customer {i}",
        "price": Decimal(i * 1_000_003).scaleb(-6),
        "total": Decimal("12345678901234.123456"),
    },
    "jsonb past 64 bits": lambda i: {"name": f"customer {i}", "doc": {"n": 10**30 + i}},
}


def _old(body: bytes) -> bytes:
    batch = Batch.model_validate_json(body)
    return orjson.dumps([{**c.key, **(c.fields or {})} for c in batch.changes])


def _new(body: bytes) -> bytes:
    batch = Batch.model_validate(codec.loads(body))
    return codec.dumps([{**c.key, **(c.fields or {})} for c in batch.changes])


def _time_ms(work: Callable[[bytes], bytes], body: bytes) -> float | None:
    started = time.perf_counter()
    try:
        work(body)
    except (TypeError, orjson.JSONEncodeError):
        return None  # the old path cannot write this batch at all
    return (time.perf_counter() - started) * 1000


def _medians(body: bytes, repeat: int) -> tuple[float | None, float]:
    """Old and new in turns, so a change in machine load hits both alike."""
    old: list[float] = []
    new: list[float] = []
    for _ in range(repeat):
        took = _time_ms(_old, body)
        if took is not None:
            old.append(took)
        new.append(_time_ms(_new, body) or 0.0)
    return (statistics.median(old) if old else None), statistics.median(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    print(f"{'batch':<20} {'old ms':>8} {'codec ms':>9} {'ratio':>6}")
    for name, fields in BATCHES.items():
        body = _batch(args.changes, fields)
        old, new = _medians(body, args.repeat)
        old_text = "fails" if old is None else f"{old:.2f}"
        ratio = "-" if old is None else f"{new / old:.2f}"
        print(f"{name:<20} {old_text:>8} {new:>9.2f} {ratio:>6}")


if __name__ == "__main__":
    main()
