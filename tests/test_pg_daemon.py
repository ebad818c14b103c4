"""Daemons on PostgreSQL: real ``lensd start --db postgresql://...`` processes, real client
processes (tests/workers.py), the session's real PostgreSQL cluster (tests/pg_server.py).

- two daemons on one database, 32 client processes each, the same fits sent through both:
  every fit stored once, no client error;
- kill -9 of a daemon while its clients submit, five times over: every acknowledged record is
  there after each;
- PyAutoFit folders ingested through a daemon on PostgreSQL (and by ``lensd ingest --db URL``
  directly) read back as they do from sqlite, through the daemon's reads and directly;
  ``lensd tag`` and ``lensd delete`` with a PostgreSQL ``--db``; no password in any output;
- ``--watch`` on PostgreSQL, and a background ``lensd start``/``lensd stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from conftest import DIR_OUTPUT, lensd_cli
from pg_server import PgServer
from psycopg import sql
from wire import wait_for

import lensd

WORKERS = Path(__file__).parent / "workers.py"


def worker(socket: Path, first: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKERS), "submit", str(socket), str(first), str(count)],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)


def stored(url: str) -> list[str]:
    agg = lensd.Aggregator.from_database(url, top_level_only=False)
    try:
        return [fit.id for fit in agg.fits()]
    finally:
        agg.close()


def doubled_rows(url: str) -> int:
    """Rows a fit holds twice: fits by id, facts by (fit, kind, key), payloads by (fit, name)."""
    with psycopg.connect(url) as conn:
        return sum(conn.execute(query).fetchone()[0] for query in (  # type: ignore[index]
            "SELECT count(*) - count(DISTINCT id) FROM fits",
            "SELECT count(*) FROM (SELECT 1 FROM facts GROUP BY fit_key, kind, key HAVING count(*) > 1) AS d",
            "SELECT count(*) FROM (SELECT 1 FROM payloads GROUP BY fit_key, name HAVING count(*) > 1) AS d",
            "SELECT count(*) FROM facts WHERE fit_key NOT IN (SELECT fit_key FROM fits)"))


def test_two_daemons_on_one_database_32_clients_each_store_every_fit_once(
        make_daemon: Any, short_tmp: Path, pg_url: str) -> None:
    first = make_daemon(db=pg_url, socket=short_tmp / "a")
    second = make_daemon(db=pg_url, socket=short_tmp / "b")
    per_client = 5
    # client k of each daemon sends the same five fits: every fit arrives through both daemons
    procs = [worker(daemon.socket, k * per_client, per_client) for k in range(32) for daemon in (first, second)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-300:] for o in outputs if "error" in o]
    acks = [line for out in outputs for line in out.splitlines() if line.startswith("ack")]
    assert len(acks) == 2 * 32 * per_client and all(line.endswith("applied") for line in acks)
    ids = stored(pg_url)
    assert sorted(ids) == sorted(f"fit-{i}" for i in range(32 * per_client))
    assert doubled_rows(pg_url) == 0
    assert first.stop() == 0 and second.stop() == 0
    log = "".join(first.stderr_lines + second.stderr_lines)
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_kill_9_mid_batch_loses_nothing_acknowledged_five_times(
        make_daemon: Any, short_tmp: Path, pg_url: str) -> None:
    daemon = make_daemon(db=pg_url, socket=short_tmp / "k")
    acked: set[str] = set()
    for trial in range(5):
        procs = [worker(daemon.socket, trial * 100_000 + k * 10_000, 10_000) for k in range(4)]
        assert procs[0].stdout is not None
        for _ in range(20 + 30 * trial):  # kill at a different depth each trial, clients still sending
            assert procs[0].stdout.readline().startswith("ack")
        daemon.kill()
        for p in procs:
            p.kill()  # its acknowledgements are already on its stdout; spare it the reconnect backoff
            out, _ = p.communicate(timeout=120)
            acked |= {line.split()[1] for line in out.splitlines() if line.startswith("ack")}
        daemon = make_daemon(db=pg_url, socket=short_tmp / "k")  # a restart on the same database
        ids = stored(pg_url)
        assert acked <= set(ids), f"trial {trial}: lost {len(acked - set(ids))} acknowledged records"
        assert len(ids) == len(set(ids))
    assert len(acked) >= 5 * 20
    assert doubled_rows(pg_url) == 0
    assert daemon.stop() == 0


def comparable(db: str | Path) -> dict[str, Any]:
    """What a reader sees of every fit, by id."""
    agg = lensd.Aggregator.from_database(db, top_level_only=False)
    try:
        seen = {}
        for fit in agg.fits():
            samples = fit.samples
            seen[fit.id] = {
                "fields": (fit.name, fit.unique_tag, fit.path_prefix, fit.status, fit.max_log_likelihood,
                           fit.log_evidence, fit.parent_id, fit.is_grid_search, fit.source_sig),
                "info": fit.info, "model": fit.model, "search": fit.search, "summary": fit.summary,
                "samples": None if samples is None else (  # bytes: NaN samples compare equal too
                    samples.paths, samples.parameters.tobytes(), samples.log_likelihood.tobytes(),
                    samples.weight.tobytes()),
            }
        return seen
    finally:
        agg.close()


@pytest.fixture
def pg_password_url(pg_server: PgServer, pg_url: str) -> str:
    """``pg_url``'s database over loopback TCP as a role with a password (in the URL)."""
    name = urlsplit(pg_url).path.lstrip("/")
    with pg_server.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD 'pa55-word'").format(sql.Identifier(name)))
    user = name
    return f"postgresql://{user}:pa55-word@127.0.0.1:{pg_server.port}/{name}"


def test_folders_through_a_daemon_on_postgresql_read_back_as_from_sqlite(
        make_daemon: Any, short_tmp: Path, pg_password_url: str, pg_server: PgServer) -> None:
    url = pg_password_url
    on_sqlite = short_tmp / "ref.sqlite"
    assert lensd_cli("ingest", str(DIR_OUTPUT), "--db", str(on_sqlite), "--quiet").returncode == 0
    daemon = make_daemon(db=url, socket=short_tmp / "p")
    through = lensd_cli("ingest", str(DIR_OUTPUT), "--db", url, "--socket", str(daemon.socket), "--quiet")
    assert through.returncode == 0, through.stderr
    assert "daemon at" in through.stdout and "failed 0" in through.stdout
    expected = comparable(on_sqlite)
    assert len(expected) > 5 and comparable(url) == expected
    # the daemon's reads on PostgreSQL answer as a sqlite file does
    from_daemon = lensd_cli("query", "model.galaxies.lens.mass.einstein_radius > 0 | unique_tag != \"\"",
                            "--socket", str(daemon.socket), "--format", "json", "--all", "--order-by", "id")
    from_file = lensd_cli("query", "model.galaxies.lens.mass.einstein_radius > 0 | unique_tag != \"\"",
                          "--db", str(on_sqlite), "--format", "json", "--all", "--order-by", "id")
    assert from_daemon.returncode == 0, from_daemon.stderr
    assert json.loads(from_daemon.stdout) == json.loads(from_file.stdout)
    status = lensd_cli("status", "--socket", str(daemon.socket))
    assert status.returncode == 0 and "***" in status.stdout
    contact = Path(os.environ["LENSD_CONTACT"]).read_text()
    assert "***" in contact
    again = lensd_cli("ingest", str(DIR_OUTPUT), "--db", url, "--quiet")  # direct: several writers are fine
    assert again.returncode == 0 and f"unchanged {len(expected)}" in again.stdout, again.stdout
    some = sorted(expected)[0]
    tagged = lensd_cli("tag", some, "reviewed=true", "--db", url)
    assert tagged.returncode == 0 and tagged.stdout.startswith("applied"), tagged.stderr
    assert comparable(url)[some]["info"].get("reviewed") is True
    deleted = lensd_cli("delete", f'id == "{some}"', "--all", "--yes", "--db", url)
    assert deleted.returncode == 0 and "deleted 1 fit(s)" in deleted.stdout, deleted.stderr
    assert some not in comparable(url)
    assert daemon.stop() == 0
    printed = "".join([*daemon.stderr_lines, through.stdout, through.stderr, again.stdout, again.stderr,
                       status.stdout, tagged.stdout, tagged.stderr, deleted.stdout, deleted.stderr, contact])
    assert "pa55-word" not in printed and "Traceback" not in printed


def test_start_in_the_background_and_stop_on_postgresql(short_tmp: Path, pg_url: str) -> None:
    socket = short_tmp / "bg"
    started = lensd_cli("start", "--db", pg_url, "--socket", str(socket), "--lost-after", "5")
    assert started.returncode == 0, started.stderr
    try:
        assert f"log {short_tmp / 'bg.log'}" in started.stdout
        with lensd.connect_sync(socket=socket) as client:
            assert client.submit({"id": "one", "status": "completed"}) == "applied"
    finally:
        stopped = lensd_cli("stop", "--socket", str(socket))
    assert stopped.returncode == 0, stopped.stderr
    assert stored(pg_url) == ["one"]


def test_a_watching_daemon_on_postgresql_ingests_once_and_skips_what_is_stored(
        make_daemon: Any, short_tmp: Path, pg_url: str) -> None:
    """``--watch`` on PostgreSQL: the catch-up scan stores the folders, and a restarted daemon finds
    their signatures in the database (``stored_signatures`` of a URL) and reads none again."""
    from lensd.client.blocking import BlockingClient

    tree = short_tmp / "watched"
    shutil.copytree(DIR_OUTPUT / "howtofit" / "single", tree)
    first = make_daemon("--watch", str(tree), "--poll", db=pg_url, socket=short_tmp / "w")
    wait_for(lambda: len(stored(pg_url)) > 0, 60, "the watched fit in PostgreSQL")
    count = len(stored(pg_url))
    assert first.stop() == 0
    again = make_daemon("--watch", str(tree), "--poll", "--poll-interval", "0.1", db=pg_url, socket=short_tmp / "w")
    with BlockingClient(again.socket) as client:  # passes enough for a fit seen as new to be stored
        wait_for(lambda: client.request("status")["status"].get("watch_passes", 0) >= 10, 60, "watch passes")
        assert client.request("status")["status"]["watch_ingested"] == 0
    assert len(stored(pg_url)) == count and doubled_rows(pg_url) == 0
    assert again.stop() == 0
