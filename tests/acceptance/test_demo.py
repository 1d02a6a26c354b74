"""The newcomer's first command, end to end, exactly as the README gives it.

The demo plays its story between the two unlike schemas of examples/ (an ERP and a
shop); with `--keep-running` its databases stay up, and each record is compared here as
the `row(...)::text` of the fields both sides hold (tests/acceptance/example_pair.py).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.example_pair import PROJECTIONS, differences, texts

BIG = "123456789012345678901234567890"


def check_the_story(erp: str, shop: str) -> None:
    """Both databases hold the story's records, field for field."""
    assert differences(erp, shop) == {}
    assert texts(erp, PROJECTIONS["product"][0]) == [
        '(ITEM-1,ITEM-1,"Cordless drill",1200.000000,1428.00,t,'
        f'"{{""batch"": {BIG}, ""weight_g"": 1650}}")',
        "(ITEM-2,ITEM-2,Saw,24.500000,29.16,f,)",
    ]
    assert texts(erp, PROJECTIONS["customer"][0]) == [
        '(CUST-1042,"Anna Müller-Lüdenscheidt",anna@shop.example,"+49 30 1234")'
    ]
    # The shop-born order and its lines: shop ids as the ERP's numbers, the shop's customer
    # id as the ERP's customer number, the shop's product ids as item numbers.
    assert texts(erp, "SELECT row(order_no, customer_no, state)::text FROM sales_orders") == [
        "(shop-1001,CUST-1042,S)"
    ]
    assert texts(shop, "SELECT status::text FROM orders") == ["open"]
    assert texts(
        erp, "SELECT row(line_no, order_no, item_no)::text FROM sales_order_lines ORDER BY 1"
    ) == ["(shop-5001,shop-1001,ITEM-1)", "(shop-5002,shop-1001,ITEM-2)"]


@pytest.fixture
def demo_tmp() -> Iterator[Path]:
    """A temporary directory of the demo's own, so what it leaves behind is its own and
    not another run's (the demo's embedded server runs as another user: world-readable)."""
    tmp = Path(tempfile.mkdtemp(prefix="cdcb-demo-test-"))
    tmp.chmod(0o755)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def test_demo_converges_and_cleans_up(demo_tmp: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cdc_bridge", "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "120", "TERM": "dumb", "TMPDIR": str(demo_tmp)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for sign in (
        "refused by the guard",
        "handed off",
        "rejected by shop",
        "replayed",
        "Converged.",
    ):
        assert sign in output, f"{sign!r} missing from the demo output:\n{output}"
    left = sorted(demo_tmp.glob("cdc-bridge-demo-*"))
    assert left == [], f"the demo left {left} behind"


def _ctrl_c_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_keep_running_prints_where_to_connect_and_stops_on_ctrl_c(
    tmp_path: Path, demo_tmp: Path
) -> None:
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "cdc_bridge", "demo", "--keep-running"],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                "PATH": "/usr/bin:/bin",
                "COLUMNS": "200",
                "TERM": "dumb",
                "TMPDIR": str(demo_tmp),
            },
            # Ctrl-C at a terminal: the demo must get SIGINT as an operator's shell gives it.
            # A test run started in the background by a script (as .ci/run starts its two
            # passes) ignores SIGINT, and a child would inherit that.
            preexec_fn=_ctrl_c_as_at_a_terminal,
        )
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C to stop." not in log_path.read_text():
            assert demo.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        output = log_path.read_text()
        urls = re.findall(r"psql '(postgresql://[^']+)'", output)
        assert len(urls) == 2, output
        check_the_story(*urls)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    left = sorted(demo_tmp.glob("cdc-bridge-demo-*"))
    assert left == [], f"the demo left {left} behind"
