"""The newcomer's first command, end to end, exactly as the README gives it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def test_demo_converges_and_cleans_up() -> None:
    before = set(Path(tempfile.gettempdir()).glob("cdc-bridge-demo-*"))
    result = subprocess.run(
        [sys.executable, "-m", "cdc_bridge", "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "120", "TERM": "dumb"},
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
    after = set(Path(tempfile.gettempdir()).glob("cdc-bridge-demo-*"))
    assert after <= before, f"the demo left {sorted(after - before)} behind"
