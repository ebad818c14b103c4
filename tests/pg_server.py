"""A throw-away PostgreSQL cluster for the tests: Debian's binaries, a temp dir, a private socket.

Why a real server: lensd's PostgreSQL backend is only as right as the SQL it sends, the locks it
takes and the COMMITs it waits for, and none of those can be checked against a stand-in. So the
session starts one real cluster (``initdb`` into a temp dir, ``pg_ctl start``), and every test that
needs a database gets a fresh one in it (``CREATE DATABASE``, dropped afterwards).

- Binaries: ``pg_config --bindir``, else the newest ``/usr/lib/postgresql/*/bin``; ``make test``
  installs Debian's ``postgresql`` package when neither has them.
- PostgreSQL refuses to run as root, so when the suite runs as root the cluster runs as an
  unprivileged system user (``lensd-pgtest``, created here on first use); otherwise as the
  suite's own user.
- It listens on a Unix socket in its 0700 temp dir (trust: only its owner and root get in) and on
  127.0.0.1 with password (scram) authentication only, so TCP is never open to anyone.
- Ready means ``pg_isready`` answered and a real connection ran ``SELECT 1``.
- It trades power-loss durability for speed (``fsync=off``): a test kills daemons, never the
  machine, and an acknowledged commit still has to reach the server's WAL before it returns.

If the server cannot start, the fixture raises :class:`PgServerError` with the reason and the
server log's tail, so each test that needs it fails and says why; nothing is skipped.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

OS_USER = "lensd-pgtest"
SUPERUSER = "lensd"
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_permissions": "0700",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "200",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


class PgServerError(RuntimeError):
    """The test PostgreSQL server could not be found, set up or started; the message says why."""


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "pg_isready")):
            return folder
    raise PgServerError("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found via pg_config or in "
                        "/usr/lib/postgresql/*/bin: install Debian's `postgresql` package (make test does, as root)")


def ensure_os_user() -> pwd.struct_passwd | None:
    """As root: the unprivileged system user the server runs as, made on first use; else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                           "--shell", "/usr/sbin/nologin", OS_USER], capture_output=True, text=True, check=False)
    try:  # another suite may have made it at the same moment (useradd exits 9): either way it exists now
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise PgServerError(f"could not create the system user {OS_USER!r} to run PostgreSQL as "
                            f"(it refuses root): useradd exited {made.returncode}: {made.stderr.strip()}") from None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PgServer:
    """One running cluster: where it lives and how to reach it."""

    bindir: Path
    root: Path
    port: int
    owner: pwd.struct_passwd | None
    settings: dict[str, str] = field(default_factory=dict)  # postgresql.conf lines beyond _SETTINGS

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL over the private Unix socket (no password: the socket's folder is the guard)."""
        where = f"host={quote(str(self.root))}&port={self.port}"
        return f"postgresql://{quote(user, safe='')}@/{quote(dbname, safe='')}?{where}"

    def tcp_url(self, dbname: str, user: str) -> str:
        """A libpq URL over loopback TCP, where the server asks for a password."""
        return f"postgresql://{quote(user, safe='')}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=30)

    def create_database(self) -> str:
        """A fresh empty database; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:  # FORCE: a test's leftover connection (a killed daemon's) must not block it
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """One server binary, as the cluster's owner."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self.owner is None:
            return subprocess.run(argv, capture_output=True, text=True, cwd=self.root, env=env, timeout=timeout,
                                  check=False)
        # extra_groups=[]: drop root's supplementary groups too, not only the uid
        return subprocess.run(argv, capture_output=True, text=True, cwd=self.root, env=env, timeout=timeout,
                              check=False, user=self.owner.pw_uid, group=self.owner.pw_gid, extra_groups=[])

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return "(no server log)"

    def start(self) -> None:
        initdb = self.run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8", "--locale=C",
                          "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions")
        if initdb.returncode != 0:
            raise PgServerError(f"initdb failed ({initdb.returncode}): {initdb.stderr.strip()[-2000:]}")
        settings = {**_SETTINGS, **self.settings, "unix_socket_directories": f"'{self.root}'"}
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))
        for _attempt in range(5):
            self.port = _free_port()
            started = self.run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "90",
                               "-o", f"-p {self.port}")
            if started.returncode == 0:
                break
            if "already in use" not in self.log_tail():  # a port race with another suite: try another port
                raise PgServerError(f"pg_ctl start failed ({started.returncode}): {started.stderr.strip()} "
                                    f"{started.stdout.strip()}\nserver log:\n{self.log_tail()}")
        else:
            raise PgServerError(f"pg_ctl start found no free port in 5 tries\nserver log:\n{self.log_tail()}")
        ready = self.run("pg_isready", "-h", str(self.root), "-p", str(self.port), "-t", "60")
        if ready.returncode != 0:
            raise PgServerError(f"pg_isready: {ready.stdout.strip()}\nserver log:\n{self.log_tail()}")
        with self.admin() as conn:
            conn.execute("SELECT 1")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
        shutil.rmtree(self.root, ignore_errors=True)


def start_server(settings: dict[str, str] | None = None) -> PgServer:
    """Find the binaries, make the user and the temp dir, start the cluster, wait until it answers.

    ``settings``: postgresql.conf values over the tests' (bench/pg.py gives it a bench's memory)."""
    bindir = find_bindir()
    owner = ensure_os_user()
    root = Path(tempfile.mkdtemp(prefix="lpg", dir="/tmp"))  # short: a socket path must fit ~100 bytes
    os.chmod(root, 0o700)
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PgServer(bindir, root, 0, owner, dict(settings or {}))
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL cluster, stopped and removed when the session ends."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty database for one test, as a libpq URL; dropped afterwards."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)
