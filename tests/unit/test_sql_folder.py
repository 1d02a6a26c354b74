"""The reviewed install SQL in sql/ is exactly what `sql render` prints for the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config

ROOT = Path(__file__).parents[2]
ENV = {
    "ERP_DATABASE_URL": "postgresql://localhost/erp",
    "SHOP_DATABASE_URL": "postgresql://localhost/shop",
    "BRIDGE_SECRET": "unused",
}


@pytest.mark.parametrize("side", ["erp", "shop"])
def test_checked_in_install_sql_matches_sql_render(side: str) -> None:
    path = ROOT / "examples" / f"{side}.yaml"
    config = parse_config(path.read_text(), str(path), ENV)
    checked_in = (ROOT / "sql" / f"{side}.sql").read_text()
    assert render_install(config) == checked_in, (
        f"sql/{side}.sql is out of date: regenerate it as sql/README.md shows"
    )
