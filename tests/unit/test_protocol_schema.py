"""docs/protocol.schema.json is the public contract: it must equal what the models say.

Regenerate after changing cdc_bridge/peer/protocol.py:
    CDC_BRIDGE_WRITE_SCHEMA=1 .venv/bin/python -m pytest -q tests/unit/test_protocol_schema.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
from pydantic.json_schema import models_json_schema

from cdc_bridge.peer.protocol import Batch, BatchResponse

SCHEMA_PATH = Path(__file__).parents[2] / "docs" / "protocol.schema.json"


def protocol_schema() -> dict[str, Any]:
    _, schema = models_json_schema(
        [(Batch, "validation"), (BatchResponse, "validation")],
        title="cdc-bridge batch protocol v2",
        description="POST /v1/batches: the request is a Batch, the 200 answer a BatchResponse.",
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["anyOf"] = [{"$ref": "#/$defs/Batch"}, {"$ref": "#/$defs/BatchResponse"}]
    return schema


def test_committed_schema_equals_the_models() -> None:
    generated = json.dumps(protocol_schema(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("CDC_BRIDGE_WRITE_SCHEMA"):
        SCHEMA_PATH.write_text(generated)
    assert SCHEMA_PATH.read_text() == generated, "regenerate: see this module's docstring"


def test_schema_accepts_a_batch_and_refuses_a_bad_op() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    batch = {
        "protocol": "cdc-bridge/2",
        "source": "erp",
        "batch_id": "erp-1",
        "changes": [
            {
                "idempotency_key": "erp:771:42",
                "entity": "public.customers",
                "op": "update",
                "key": {"id": 7},
                "fields": {"id": 7, "name": "Ann"},
                "committed_at": "2026-01-01T00:00:00Z",
                "origin": "erp",
            }
        ],
    }
    jsonschema.validate(batch, schema)
    batch["changes"][0]["op"] = "upsert"  # type: ignore[index]
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid(batch)
