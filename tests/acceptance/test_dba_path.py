"""The DBA path through the real commands: generate, alembic upgrade, status, downgrade."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import FIXTURES, SECRET

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generate_upgrade_status_downgrade(db: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CDC_BRIDGE_CONFIG"}
    env.update(ERP_DATABASE_URL=db, BRIDGE_SECRET=SECRET)
    (tmp_path / "cdc-bridge.yaml").write_text((FIXTURES / "erp.yaml").read_text())
    ini = (
        (REPO / "alembic.ini")
        .read_text()
        .replace(
            "script_location = %(here)s/migrations",
            f"script_location = {REPO / 'migrations'}\nversion_locations = {tmp_path / 'versions'}",
        )
    )
    (tmp_path / "alembic.ini").write_text(ini)

    made = run(
        "cdc-bridge", "migrations", "generate", "-m", "first sync",
        "--migrations", str(REPO / "migrations"), "--versions", str(tmp_path / "versions"),
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    offline = run("alembic", "upgrade", "head", "--sql", cwd=tmp_path, env={**env, "PATH": ""})
    assert offline.returncode == 0, offline.stderr
    assert "CREATE TRIGGER" in offline.stdout and "= NULL" not in offline.stdout

    upgraded = run("alembic", "upgrade", "head", cwd=tmp_path, env=env)  # URL from the config
    assert upgraded.returncode == 0, upgraded.stderr
    status = run("cdc-bridge", "triggers", "status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(" installed") == 5

    down = run("alembic", "-x", f"url={db}", "downgrade", "base", cwd=tmp_path, env=env)
    assert down.returncode == 0, down.stderr
    status = run("cdc-bridge", "triggers", "status", cwd=tmp_path, env=env)
    assert status.returncode == 1 and status.stdout.count(" missing") == 5

    (tmp_path / "cdc-bridge.yaml").rename(tmp_path / "other.yaml")
    again = run("alembic", "-x", "config=other.yaml", "upgrade", "head", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    status = run("cdc-bridge", "-c", "other.yaml", "triggers", "status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
