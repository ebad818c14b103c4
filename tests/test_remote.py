"""Jobs "on another node": processes whose Unix socket is unreachable and that find the daemon
through its contact file, over TCP or, without TCP, through the spool (heartbeats included).

The daemon's socket is made unreachable for real by renaming it after the daemon bound it: the
path the contact file names no longer exists, while the test still reaches the daemon at the new
name, to compare answers.
"""

from __future__ import annotations

import json
import os
import signal
import socket as socketlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import DaemonProcess, lensd_cli
from records_factory import lens_model, record

import lensd
from lensd.client.connection import Client


def hide_socket(daemon: DaemonProcess) -> Path:
    hidden = daemon.socket.with_name(daemon.socket.name + "-hidden")
    os.rename(daemon.socket, hidden)
    return hidden


def node_env(folder: Path, contact: Path, secret: Path | None = None) -> dict[str, str]:
    """The environment of a job on another node: no socket variables, a default socket that is not there."""
    env = {k: v for k, v in os.environ.items() if k not in ("LENSD_SOCKET", "LENSD_ADDRESS")}
    env.update(LENSD_CONTACT=str(contact), XDG_RUNTIME_DIR=str(folder))
    if secret is not None:
        env["LENSD_SECRET_FILE"] = str(secret)
    return env


def ask_status(where: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        client = await Client.open(where)
        try:
            return dict((await client.request("status"))["status"])
        finally:
            await client.aclose()
    return anyio.run(run)


@pytest.fixture
def remote(make_daemon: Callable[..., DaemonProcess], short_tmp: Path) -> tuple[DaemonProcess, Path, dict[str, str]]:
    home = short_tmp / "home"
    daemon = make_daemon("--listen", "127.0.0.1:0", "--secret-file", str(home / "secret"),
                         "--contact", str(home / "contact.json"))
    with lensd.connect_sync(socket=daemon.socket) as client:
        for i in range(12):
            client.submit(record(i, status="completed" if i % 3 else "failed"))
        client.start(id="live-1", name="running one", model=lens_model())
    hidden = hide_socket(daemon)
    nowhere = short_tmp / "node"
    nowhere.mkdir()
    return daemon, hidden, node_env(nowhere, home / "contact.json", home / "secret")


def without_clock(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in ("age", "seen")} for row in rows]


def test_status_jobs_and_async_aggregator_agree_without_the_unix_socket(remote) -> None:  # type: ignore[no-untyped-def]
    daemon, hidden, env = remote
    over_tcp = lensd_cli("status", "--format", "json", env=env)
    on_socket = lensd_cli("status", "--format", "json", "--socket", str(hidden), env=env)
    assert over_tcp.returncode == 0 == on_socket.returncode, over_tcp.stderr
    a, b = json.loads(over_tcp.stdout), json.loads(on_socket.stdout)
    for key in ("pid", "database", "fits_by_status", "tcp", "socket"):
        assert a[key] == b[key], key
    jobs_tcp = lensd_cli("jobs", "--format", "json", env=env)
    jobs_socket = lensd_cli("jobs", "--format", "json", "--socket", str(hidden), env=env)
    assert jobs_tcp.returncode == 0, jobs_tcp.stderr
    assert without_clock(json.loads(jobs_tcp.stdout)) == without_clock(json.loads(jobs_socket.stdout))
    address = f"tcp://{a['tcp'][0]}"
    query_tcp = lensd_cli("query", "status == \"completed\"", "--format", "json", "--address", address, env=env)
    query_file = lensd_cli("query", "status == \"completed\"", "--format", "json", "--db", str(daemon.db), env=env)
    assert query_tcp.returncode == 0, query_tcp.stderr
    assert json.loads(query_tcp.stdout) == json.loads(query_file.stdout) and len(json.loads(query_file.stdout)) == 8
    retry_tcp = lensd_cli("retry", "--address", address, env=env)
    retry_file = lensd_cli("retry", "--db", str(daemon.db), env=env)
    assert retry_tcp.returncode == 0, retry_tcp.stderr
    assert retry_tcp.stdout == retry_file.stdout and "4 selected fits were not array tasks" in retry_file.stdout
    script = textwrap.dedent("""
        import anyio, json, lensd
        async def main():
            async with await lensd.AsyncAggregator.connect() as agg:
                ids = sorted([fit.id async for fit in agg.query(agg.status == "completed").fits()])
                print(json.dumps({"count": await agg.count(), "ids": ids,
                                  "where": agg._client.path}))
        anyio.run(main)
    """)
    found = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["where"].startswith("tcp://127.0.0.1:")

    async def on_socket_answer() -> dict[str, Any]:
        async with await lensd.AsyncAggregator.connect(socket=hidden) as agg:
            ids = sorted([fit.id async for fit in agg.query(agg.status == "completed").fits()])
            return {"count": await agg.count(), "ids": ids}
    assert {k: answer[k] for k in ("count", "ids")} == anyio.run(on_socket_answer)


def test_submit_and_ingest_through_the_daemon_from_another_node(remote, tmp_path) -> None:  # type: ignore[no-untyped-def]
    daemon, hidden, env = remote
    path = tmp_path / "one.json"
    path.write_text(json.dumps({k: v for k, v in record(99).items() if k != "samples"}))
    sent = lensd_cli("submit", str(path), env=env)
    assert sent.returncode == 0 and sent.stdout.split()[0] == "applied", sent
    from conftest import DIR_OUTPUT
    address = f"tcp://127.0.0.1:{ask_status(hidden)['tcp'][0].split(':')[1]}"
    ingested = lensd_cli("ingest", str(DIR_OUTPUT), "--address", address, "--quiet", env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert f"daemon at {address}" in ingested.stdout
    assert "fit-99" in {fit.id for fit in lensd.Aggregator.from_database(daemon.db).fits()}


def test_a_stale_contact_file_is_reported_as_stale(remote) -> None:  # type: ignore[no-untyped-def]
    daemon, _, env = remote
    daemon.kill()
    result = lensd_cli("status", env=env)
    assert result.returncode == 3
    assert "stale" in result.stderr and f"pid {daemon.pid}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def count_running(db: Path, fit_id: str) -> str | None:
    for fit in lensd.Aggregator.from_database(db).fits():
        if fit.id == fit_id:
            return str(fit.status)
    return None


SPOOL_JOB = textwrap.dedent("""
    import sys, lensd
    with lensd.connect_sync() as client:   # no address: the contact file; its socket is gone
        fit = client.start(id="spooled-1", name="off node", model={"type": "collection", "arguments": {}})
        print("started", flush=True)
        sys.stdin.read()
""")


def test_a_spool_only_job_stays_running_and_is_lost_once_killed(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    lost_after, poll = 4.0, 0.5
    contact = short_tmp / "home" / "contact.json"
    daemon = make_daemon("--spool", str(short_tmp / "spool"), "--poll", "--poll-interval", str(poll),
                         "--lost-after", str(lost_after), "--contact", str(contact))
    hidden = hide_socket(daemon)
    (short_tmp / "node").mkdir()
    job = subprocess.Popen([sys.executable, "-c", SPOOL_JOB], env=node_env(short_tmp / "node", contact),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout is not None and job.stdout.readline() == "started\n"
        deadline = time.monotonic() + 60
        while count_running(daemon.db, "spooled-1") is None:  # the spooled start, once applied
            assert time.monotonic() < deadline, "the spooled start was never applied"
            time.sleep(0.05)  # polling a real state (the database), with a deadline
        since = time.monotonic()
        applied = ask_status(hidden)["spool_ingested"]
        beats = 0
        while time.monotonic() - since < 20.0:  # 20 s of silence but for heartbeats
            wait_until = time.monotonic() + 30
            while (now := ask_status(hidden)["spool_ingested"]) == applied:  # the next heartbeat file
                assert time.monotonic() < wait_until, "no spooled heartbeat was applied for 30 s"
                time.sleep(0.05)  # polling the daemon's own counter
            applied, beats = now, beats + 1
            assert count_running(daemon.db, "spooled-1") == "running"
        assert beats >= 10, beats  # one a second (a quarter of --lost-after, from the contact file)
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        killed = time.monotonic()
        while count_running(daemon.db, "spooled-1") != "lost":
            assert time.monotonic() - killed < 60, "a killed spool-only job was never marked lost"
            time.sleep(0.05)  # polling the database
        took = time.monotonic() - killed
        # --lost-after, plus one poll of the spool (the last beat's file), plus one lost-sweep period
        assert took <= lost_after + poll + lost_after / 4 + 2.0, took
        assert not [p for p in (short_tmp / "spool").iterdir() if p.suffix == ".lensd"]  # all applied, deleted
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(30)


RECONNECTING_JOB = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from records_factory import record
    import lensd
    with lensd.connect_sync(spool={spool!r}) as client:   # found by the contact file: TCP
        for i in range({count}):
            print("ack", "fit-%d" % i, client.submit(record(i, 20)), flush=True)
    print("done", flush=True)
""")


def test_a_tcp_job_falls_back_to_the_spool_and_back_losing_and_doubling_nothing(
        make_daemon: Callable[..., DaemonProcess], short_tmp: Path) -> None:
    from conftest import integrity_ok
    from test_tcp import TcpDaemon

    spool, count = short_tmp / "spool", 120
    first = TcpDaemon(make_daemon, short_tmp, "--spool", str(spool))
    hide_socket(first.process)
    (short_tmp / "node").mkdir()
    env = node_env(short_tmp / "node", first.contact_file, first.secret_file)
    code = RECONNECTING_JOB.format(tests=str(Path(__file__).parent), spool=str(spool), count=count)
    job = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert job.stdout is not None
    lines = [job.stdout.readline() for _ in range(30)]
    assert all(line.split()[2] == "applied" for line in lines), lines
    first.process.kill()
    while "spooled" not in (line := job.stdout.readline()):  # retried, then spooled: the daemon is gone
        assert line.startswith("ack"), line
        lines.append(line)
    lines.append(line)
    TcpDaemon(make_daemon, short_tmp, "--spool", str(spool), db=first.process.db)  # back, on a new port
    rest, _ = job.communicate(timeout=300)
    lines += rest.splitlines()
    assert job.returncode == 0 and lines[-1].strip() == "done", lines[-3:]
    outcomes = [line.split()[2] for line in lines if line.startswith("ack")]
    assert len(outcomes) == count and "spooled" in outcomes and outcomes[-1] == "applied", outcomes
    deadline = time.monotonic() + 60
    while [p for p in spool.iterdir() if p.suffix == ".lensd"]:  # the spooled ones, applied and deleted
        assert time.monotonic() < deadline
        time.sleep(0.05)  # polling the spool folder
    ids = [fit.id for fit in lensd.Aggregator.from_database(first.process.db).fits()]
    assert sorted(ids) == sorted(f"fit-{i}" for i in range(count))
    assert integrity_ok(first.process.db)


def test_a_contact_file_from_another_host_that_nothing_answers_is_reported_stale(short_tmp: Path) -> None:
    contact = short_tmp / "contact.json"
    with socketlib.socket() as closed:  # a port nothing listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        contact.write_text(json.dumps({"contact_version": 1, "host": "another-node", "pid": 1, "started_at": 1.0,
                                       "socket": "/nonexistent/s", "tcp": [{"host": "127.0.0.1", "port": port}]}))
        result = lensd_cli("status", env=node_env(short_tmp, contact, short_tmp / "secret"))
    assert result.returncode == 3
    assert f"the contact file {contact} is stale: nothing answers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
