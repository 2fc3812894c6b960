"""A throwaway PostgreSQL cluster: initdb + pg_ctl in a temp dir, torn down after.

Runs the server binaries as the ``postgres`` user when we are root (initdb refuses
root). ``fsync`` is off by default for speed; crash tests ask for it on.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """The binaries are missing or the cluster would not start."""


def _bindir() -> Path:
    # Debian keeps the real binaries per version; /usr/bin wrappers need a cluster config.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable("PostgreSQL server binaries (pg_ctl, initdb) were not found")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = _bindir()
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="stateward-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self._prefix = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--init-groups",
                "--",
            ]
            self.sockets.mkdir()
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        else:
            self.sockets.mkdir()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._prefix, *args], capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> PostgresCluster:
        try:
            if not self.data.exists():
                self._run(
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "stateward",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                )
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} "
                f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
            )
            self._run(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "start",
                "-o",
                options,
            )
        except (subprocess.CalledProcessError, OSError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            log_text = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(f"PostgreSQL did not start: {detail}\n{log_text}") from error
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://stateward@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database and return its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=stateward dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
