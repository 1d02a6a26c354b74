"""The newcomer's first command, end to end, exactly as the README gives it."""

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

import psycopg
import pytest


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
                "PATH": "/usr/bin:/bin", "COLUMNS": "200", "TERM": "dumb", "TMPDIR": str(demo_tmp)
            },
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
        with psycopg.connect(urls[0]) as conn:  # the databases really are up
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (1,)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    left = sorted(demo_tmp.glob("cdc-bridge-demo-*"))
    assert left == [], f"the demo left {left} behind"
