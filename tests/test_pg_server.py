"""The PostgreSQL test harness itself: a real server, not root, private, a fresh database per test."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys

import psycopg
import pytest
from pg_server import OS_USER, PgServer


def test_server_answers_and_runs_unprivileged(pg_server: PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(str(version[0])) >= 130000
        encoding = conn.execute("SHOW server_encoding").fetchone()
        assert encoding == ("UTF8",)
    pid = int((pg_server.data / "postmaster.pid").read_text().split()[0])
    owner = os.stat(f"/proc/{pid}").st_uid
    assert owner != 0
    if os.geteuid() == 0:
        assert pwd.getpwuid(owner).pw_name == OS_USER
    mode = stat.S_IMODE(os.stat(pg_server.root).st_mode)
    assert mode == 0o700  # the trusted Unix socket is reachable by its owner (and root) only


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_an_empty_database(pg_url: str, turn: int) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE left_behind (x int)")  # the other turn must not see it


def test_tcp_asks_for_a_password(pg_server: PgServer, pg_url: str) -> None:
    dbname = pg_url.split("/")[3].split("?")[0]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS harness_pw")
        conn.execute("CREATE ROLE harness_pw LOGIN PASSWORD 'hunter2-harness'")
    try:
        url = pg_server.tcp_url(dbname, "harness_pw")
        env = {**os.environ, "PGPASSWORD": "hunter2-harness"}
        probe = "import sys, psycopg; psycopg.connect(sys.argv[1]).execute('SELECT 1')"
        ok = subprocess.run([sys.executable, "-c", probe, url], env=env, capture_output=True, text=True,
                            timeout=60)
        assert ok.returncode == 0, ok.stderr
        env["PGPASSWORD"] = "wrong"
        refused = subprocess.run([sys.executable, "-c", probe, url], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY harness_pw")
            conn.execute("DROP ROLE harness_pw")
