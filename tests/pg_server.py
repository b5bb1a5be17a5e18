"""A throwaway PostgreSQL server for tests: initdb in a temp dir, listen on 127.0.0.1 only.

The server binaries come from the distribution's packages (`/usr/lib/postgresql/*/bin`); CI
installs them (see `.ci/run`), so their absence is an error here, not a reason to skip. initdb
refuses to run as root, so as root everything runs as the `postgres` system user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from conftest import free_port

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"  # the database role; trust auth, so no password
SYSTEM_USER = "postgres"  # the OS user the server runs as when tests run as root
START_TIMEOUT_S = 30.0
_INITDB_OPTIONS = ("-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
_SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
    "-c full_page_writes=off -c max_connections=200"
)


def find_bin_dir() -> Path:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb and pg_ctl."""
    candidates = []
    for bin_dir in PG_ROOT.glob("*/bin"):
        version = bin_dir.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and all(
            (bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")
        ):
            candidates.append((tuple(int(p) for p in version.split(".")), bin_dir))
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL server binaries not found under {PG_ROOT}/*/bin (initdb, pg_ctl, "
            "postgres); install them with `apt-get install -y postgresql` (.ci/run does)"
        )
    return max(candidates)[1]


def _system_user() -> pwd.struct_passwd | None:
    """The OS user to run the server as: None when not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


@dataclass
class PgServer:
    host: str
    port: int
    root: Path
    bin_dir: Path
    user: pwd.struct_passwd | None = field(repr=False)
    stopped: bool = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={database}"

    def connect(self, database: str = "postgres", *, timeout_s: int = 5) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(database), autocommit=True, connect_timeout=timeout_s)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` (dropped first if it exists); its SQLAlchemy URL."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def pg_ctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return _run(self.user, self.root, [str(self.bin_dir / "pg_ctl"), *args], check, timeout)

    def stop(self) -> None:
        """Stop the server (immediate mode: nothing here is worth a checkpoint), delete its
        directory. Safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self.pg_ctl("stop", "-D", str(self.data_dir), "-m", "immediate", "-w", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _run(
    user: pwd.struct_passwd | None, cwd: Path, argv: list[str], check: bool, timeout: float
) -> str:
    """Run a PostgreSQL tool, as `user` when given; stdout+stderr, raising on failure."""
    if user is not None:
        argv = ["runuser", "-u", user.pw_name, "--", *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}")
    return result.stdout


def _wait_ready(server: PgServer, deadline: float) -> None:
    """Until a real connection and query succeed (pg_ctl -w alone can race a slow start)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with server.connect(timeout_s=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.1)
    raise RuntimeError(
        f"PostgreSQL on 127.0.0.1:{server.port} did not accept connections within "
        f"{START_TIMEOUT_S:.0f} s ({last})\n--- server log tail ---\n{server.log_tail()}"
    )


def start_postgres(attempts: int = 3) -> PgServer:
    """initdb a fresh cluster in a temp dir and start it on a free 127.0.0.1 port.

    Raises RuntimeError (with the server log's tail) if the binaries are missing or the server
    does not come up. The caller must `stop()` it; an atexit hook does so as a last resort."""
    bin_dir = find_bin_dir()
    user = _system_user()
    root = Path(tempfile.mkdtemp(prefix="bv-pg-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    server = PgServer("127.0.0.1", 0, root, bin_dir, user)
    atexit.register(server.stop)
    try:
        _run(
            user,
            root,
            [str(bin_dir / "initdb"), "-D", str(server.data_dir), *_INITDB_OPTIONS],
            check=True,
            timeout=120,
        )
        errors = []
        for _ in range(attempts):
            # The port is free now; another process could take it before the server binds it,
            # in which case the start fails and is retried on a new port.
            server.port = free_port()
            options = f"{_SERVER_OPTIONS} -p {server.port} -k {root}"
            deadline = time.monotonic() + START_TIMEOUT_S
            out = server.pg_ctl(
                "start", "-D", str(server.data_dir), "-l", str(server.log_path), "-o", options,
                "-w", "-t", str(int(START_TIMEOUT_S)), check=False, timeout=START_TIMEOUT_S + 10,
            )  # fmt: skip
            try:
                if not (server.data_dir / "postmaster.pid").exists():  # it exited: no retry wait
                    raise RuntimeError(f"--- server log tail ---\n{server.log_tail()}")
                _wait_ready(server, deadline)
                return server
            except RuntimeError as exc:
                errors.append(f"pg_ctl start on port {server.port}: {out.strip()}\n{exc}")
                server.pg_ctl("stop", "-D", str(server.data_dir), "-m", "immediate", check=False)
        raise RuntimeError("could not start PostgreSQL:\n" + "\n\n".join(errors))
    except BaseException:
        server.stop()
        raise


@contextlib.contextmanager
def running_postgres() -> Iterator[PgServer]:
    """A started server for the `with` block (wrap it in a module-scoped fixture)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
