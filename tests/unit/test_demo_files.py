"""The demo plays the examples' pair: the same schemas and the same table rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_bridge.config import parse_config

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "cdc_bridge" / "demo"
EXAMPLES = ROOT / "examples"
ENV = {
    "ERP_DATABASE_URL": "postgresql://localhost/erp",
    "SHOP_DATABASE_URL": "postgresql://localhost/shop",
    "BRIDGE_SECRET": "unused",
    **{f"{side}_{port}_PORT": "1" for side in ("ERP", "SHOP") for port in ("INBOUND", "METRICS")},
}


@pytest.mark.parametrize("side", ["erp", "shop"])
def test_demo_configs_have_the_example_tables(side: str) -> None:
    demo = parse_config((DEMO / f"{side}.yaml").read_text(), f"demo/{side}.yaml", ENV)
    example = parse_config((EXAMPLES / f"{side}.yaml").read_text(), f"{side}.yaml", ENV)
    assert demo.tables == example.tables


@pytest.mark.parametrize("side", ["erp", "shop"])
def test_demo_schemas_are_the_example_schemas(side: str) -> None:
    demo = (DEMO / f"{side}.sql").read_text()
    example = (EXAMPLES / f"schema-{side}.sql").read_text()
    # The demo's shop adds one rule of its own (a price cap) for the rejected change.
    assert demo.startswith(example)
    extra = demo.removeprefix(example)
    assert extra.count(";") == (1 if side == "shop" else 0)
