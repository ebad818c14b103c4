"""Job tracking with a real daemon and real client processes: the lifecycle of a fit, heartbeats,
lost fits and their revival, SLURM facts, ``lensd jobs`` and ``lensd status``.

Nothing here sleeps to synchronise. A test blocks on a client's acknowledgement line (printed only
after the daemon committed the event), or, for what only the daemon's clock decides (a fit
becoming ``lost``), re-queries the database until a deadline with ``wait_for_status``; the daemons
run at ``--lost-after 1`` so that takes about a second.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from conftest import _readline, lensd_cli
from records_factory import record

import lensd
from lensd.client.connection import Client
from lensd.query.state import QueryState
from lensd.store.reader import Fit

WORKERS = Path(__file__).parent / "workers.py"
LOST_AFTER = "1"
SLURM_ENV = {"SLURM_JOB_ID": "4249", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7",
             "SLURM_JOB_NAME": "survey"}
STATUS_DEADLINE = 20.0  # generous for a loaded CI machine; a pass takes ~1.25 × LOST_AFTER


class Worker:
    """A client process from tests/workers.py, driven through its stdin and stdout lines."""

    def __init__(self, mode: str, socket: Path, first: int, env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        self.mode = mode
        self.process = subprocess.Popen(
            [sys.executable, str(WORKERS), mode, str(socket), str(first), "1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**clean, **(env or {})})

    @property
    def pid(self) -> int:
        return self.process.pid

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        line = _readline(self.process, timeout)
        assert line.startswith(prefix), f"the {self.mode} worker said {line!r}, expected {prefix!r}"
        return line.strip()

    def send(self, op: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()

    def do(self, op: str, **fields: Any) -> str:
        """Send one command; returns the daemon's outcome once the worker got its acknowledgement."""
        self.send(op, **fields)
        return self.expect("ack").split()[1]

    def finish(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(30)


@pytest.fixture
def workers() -> Iterator[Any]:
    started: list[Worker] = []

    def spawn(mode: str, socket: Path, first: int, env: dict[str, str] | None = None,
              wait: bool = True) -> Worker:
        """A worker whose fit is open (``wait=False``: still starting; call ``expect("started")``)."""
        worker = Worker(mode, socket, first, env)
        started.append(worker)
        if wait:
            worker.expect("started")
        return worker

    yield spawn
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(30)


def fit_of(db: Path, fit_id: str) -> Fit | None:
    agg = lensd.Aggregator.from_database(db, top_level_only=False)
    try:
        found = list(agg.query(agg.id == fit_id).fits())
    finally:
        agg.close()
    return found[0] if found else None


def status_of(db: Path, fit_id: str) -> str | None:
    fit = fit_of(db, fit_id)
    return None if fit is None else str(fit.status)


def wait_for_status(db: Path, fit_id: str, status: str, timeout: float = STATUS_DEADLINE) -> Fit:
    """Re-query until ``fit_id`` has ``status``; fail with what was last seen at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        fit = fit_of(db, fit_id)
        if fit is not None and fit.status == status:
            return fit
        if time.monotonic() > deadline:
            seen = None if fit is None else fit.status
            raise AssertionError(f"{fit_id} was still {seen!r}, not {status!r}, {timeout:.0f}s later")
        time.sleep(0.02)  # the re-query period of a bounded wait, not synchronisation


def ids_where(db: Path, predicate: Any = None, order_by: Any = None) -> list[str]:
    agg = lensd.Aggregator.from_database(db, top_level_only=False)
    try:
        chosen = agg if predicate is None else agg.query(predicate(agg))
        if order_by is not None:
            chosen = chosen.order_by(order_by(agg))
        return [fit.id for fit in chosen.fits()]
    finally:
        agg.close()


def daemon_request(socket: Path, op: str, **fields: Any) -> dict[str, Any]:
    """One request from a bare connection: no job client, so no heartbeats of its own."""
    async def send() -> dict[str, Any]:
        client = await Client.open(socket)
        try:
            return await client.request(op, **fields)
        finally:
            await client.aclose()

    return anyio.run(send)


def jobs_json(socket: Path, *args: str) -> list[dict[str, Any]]:
    result = lensd_cli("jobs", "--socket", str(socket), "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


# --- the lifecycle -----------------------------------------------------------------------------

def test_start_progress_complete_keeps_the_latest_state_then_the_final_samples(daemon, workers) -> None:  # type: ignore[no-untyped-def]
    worker = workers("script", daemon.socket, 1)
    fit = fit_of(daemon.db, "fit-1")
    assert fit is not None and (fit.status, fit.name, fit.unique_tag) == ("running", "scripted", "lens_1")

    assert worker.do("progress", max_log_likelihood=-50.0, n_samples=100, progress=0.25) == "applied"
    assert worker.do("progress", max_log_likelihood=-40.0, n_samples=250, progress=0.5) == "applied"
    fit = fit_of(daemon.db, "fit-1")
    assert fit is not None
    assert (fit.status, fit.max_log_likelihood, fit.n_samples, fit.progress) == ("running", -40.0, 250, 0.5)
    assert ids_where(daemon.db, lambda agg: agg.max_log_likelihood > -45) == ["fit-1"]
    assert ids_where(daemon.db, lambda agg: agg.status == "running") == ["fit-1"]
    [row] = jobs_json(daemon.socket)
    assert (row["status"], row["max_log_likelihood"], row["n_samples"], row["progress"]) == \
        ("running", -40.0, 250, 0.5)

    assert worker.do("progress", samples_of=11, progress=0.75) == "applied"  # the current samples
    agg = lensd.Aggregator.from_database(daemon.db)
    [running] = list(agg.values("samples"))
    np.testing.assert_array_equal(running.parameters, record(11)["samples"]["parameters"])
    fit = fit_of(daemon.db, "fit-1")
    best = running.max_log_likelihood_sample.log_likelihood
    assert fit is not None and (fit.n_samples, fit.max_log_likelihood) == (100, best)
    assert agg.query(agg.model.galaxies.lens.mass.einstein_radius > -1.0).fits().__next__().id == "fit-1"

    assert worker.do("complete", samples_of=12) == "applied"
    [final] = list(agg.values("samples"))
    sent = record(12)["samples"]
    np.testing.assert_array_equal(final.parameters, sent["parameters"])
    np.testing.assert_array_equal(final.log_likelihood, sent["log_likelihood"])
    fit = fit_of(daemon.db, "fit-1")
    assert fit is not None and fit.status == "completed" and fit.is_complete
    assert (fit.max_log_likelihood, fit.progress, fit.n_samples) == (float(sent["log_likelihood"].max()), 1.0, 100)
    assert fit.completed_at is not None and fit.completed_at >= fit.created_at
    agg.close()
    assert worker.finish() == 0


def test_complete_without_samples_keeps_what_progress_last_sent(daemon, workers) -> None:  # type: ignore[no-untyped-def]
    worker = workers("script", daemon.socket, 2)
    worker.do("progress", samples_of=21, progress=0.9)
    worker.do("complete")
    agg = lensd.Aggregator.from_database(daemon.db)
    [samples] = list(agg.values("samples"))
    np.testing.assert_array_equal(samples.parameters, record(21)["samples"]["parameters"])
    [fit] = list(agg.fits())
    assert (fit.status, fit.max_log_likelihood) == ("completed", samples.max_log_likelihood_sample.log_likelihood)
    assert fit.instance is not None
    agg.close()


def test_fail_stores_the_message_where_users_look(daemon, workers) -> None:  # type: ignore[no-untyped-def]
    worker = workers("script", daemon.socket, 3)
    worker.do("progress", max_log_likelihood=-70.0, progress=0.4)
    assert worker.do("fail", message="sampler diverged: NaN in the likelihood") == "applied"
    fit = fit_of(daemon.db, "fit-3")
    assert fit is not None
    assert (fit.status, fit.error, fit.progress) == ("failed", "sampler diverged: NaN in the likelihood", 0.4)
    assert fit.completed_at is not None
    assert worker.finish() == 0

    # an exception that leaves the client's block fails the fits it still has open, with its text
    crashing = workers("script", daemon.socket, 4)
    crashing.send("raise", message="out of memory")
    assert crashing.process.wait(30) != 0
    fit = fit_of(daemon.db, "fit-4")  # the fail event was committed before the process exited
    assert fit is not None and (fit.status, fit.error) == ("failed", "RuntimeError: out of memory")

    table = lensd_cli("jobs", "--socket", str(daemon.socket))
    assert table.returncode == 0, table.stderr
    assert "sampler diverged: NaN in the likelihood" in table.stdout
    assert "RuntimeError: out of memory" in table.stdout
    rows = jobs_json(daemon.socket, "--status", "failed")
    assert {(r["id"], r["error"]) for r in rows} == {("fit-3", "sampler diverged: NaN in the likelihood"),
                                                     ("fit-4", "RuntimeError: out of memory")}


# --- heartbeats, lost fits, revival ------------------------------------------------------------

def test_a_killed_client_becomes_lost_and_later_events_revive_it(make_daemon, workers) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--lost-after", LOST_AFTER)
    worker = workers("hang", daemon.socket, 5)
    assert status_of(daemon.db, "fit-5") == "running"
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(30)

    lost = wait_for_status(daemon.db, "fit-5", "lost")
    assert lost.last_event_at is not None and lost.updated_at - lost.last_event_at >= float(LOST_AFTER)
    assert ids_where(daemon.db, lambda agg: agg.status == "lost") == ["fit-5"]

    # a heartbeat naming the fit, from any connection, revives it: committed when acknowledged
    assert daemon_request(daemon.socket, "heartbeat", ids=["fit-5"])["ok"] is True
    assert status_of(daemon.db, "fit-5") == "running"
    wait_for_status(daemon.db, "fit-5", "lost")  # nobody beats for it any more

    # the job is requeued: a new process opens the same fit, reports and completes it
    rerun = workers("script", daemon.socket, 5)
    assert status_of(daemon.db, "fit-5") == "running"
    assert rerun.do("progress", max_log_likelihood=-3.0, progress=0.5) == "applied"
    assert rerun.do("complete", samples_of=5) == "applied"
    fit = fit_of(daemon.db, "fit-5")
    assert fit is not None and fit.status == "completed" and fit.job["pid"] == rerun.pid
    assert rerun.finish() == 0


def test_a_restarted_daemon_judges_silence_only_from_its_own_start(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """While the daemon was down no heartbeat could reach it: a fit whose last event is old when
    the daemon comes back is given a full lost-after period to be heard from."""
    daemon = make_daemon("--lost-after", LOST_AFTER)
    assert daemon_request(daemon.socket, "start", record={"id": "quiet", "status": "running"}, seq=1)["ok"]
    assert daemon.stop() == 0
    conn = sqlite3.connect(daemon.db)
    with conn:  # as if the daemon had been down for a minute
        conn.execute("UPDATE fits SET last_event_at = ?, updated_at = ? WHERE id = 'quiet'",
                     (time.time() - 60, time.time() - 60))
    conn.close()
    restarted_at = time.time()
    make_daemon("--lost-after", LOST_AFTER, db=daemon.db, socket=daemon.socket)
    lost = wait_for_status(daemon.db, "quiet", "lost")
    assert lost.updated_at - restarted_at >= float(LOST_AFTER)


def test_a_frozen_client_is_lost_and_revives_itself_when_it_resumes(make_daemon, workers) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--lost-after", LOST_AFTER)
    worker = workers("hang", daemon.socket, 6)
    os.kill(worker.pid, signal.SIGSTOP)  # a hung node, a network partition
    try:
        wait_for_status(daemon.db, "fit-6", "lost")
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_for_status(daemon.db, "fit-6", "running")  # its own next heartbeat
    assert worker.finish() == 0  # closing stdin makes it send progress, then leave
    fit = fit_of(daemon.db, "fit-6")
    assert fit is not None and (fit.status, fit.max_log_likelihood) == ("running", -1.0)


def test_heartbeats_keep_a_slow_live_fit_running(make_daemon, workers) -> None:  # type: ignore[no-untyped-def]
    """Live fits that send no event for several lost-after periods stay running.

    The clock is a sentinel fit opened from a bare connection, which sends no heartbeats: each time
    the daemon marks it lost, a full lost-after period has passed without a progress event.
    """
    daemon = make_daemon("--lost-after", "0.6")  # shorter than the hang worker's heartbeat × 4
    default_period = workers("script", daemon.socket, 7)  # heartbeat derived from the daemon's timeout
    explicit_period = workers("hang", daemon.socket, 8)  # heartbeat=0.2
    sentinel = {"id": "sentinel", "status": "running"}
    daemon_request(daemon.socket, "start", record=sentinel, seq=1)
    for _period in range(3):
        wait_for_status(daemon.db, "sentinel", "lost")
        assert status_of(daemon.db, "fit-7") == "running"
        assert status_of(daemon.db, "fit-8") == "running"
        daemon_request(daemon.socket, "heartbeat", ids=["sentinel"])
    assert default_period.finish() == 0
    assert explicit_period.finish() == 0


# --- job facts ---------------------------------------------------------------------------------

def test_slurm_variables_are_stored_and_queryable(daemon, workers) -> None:  # type: ignore[no-untyped-def]
    task_7 = workers("script", daemon.socket, 9, env=SLURM_ENV, wait=False)
    task_12 = workers("script", daemon.socket, 10, env={**SLURM_ENV, "SLURM_ARRAY_TASK_ID": "12",
                                                        "SLURM_JOB_ID": "4254"}, wait=False)
    plain = workers("script", daemon.socket, 11, wait=False)
    for worker in (task_7, task_12, plain):
        worker.expect("started")

    fit = fit_of(daemon.db, "fit-9")
    assert fit is not None
    assert {k: fit.job[k] for k in SLURM_ENV} == SLURM_ENV  # the strings the environment holds
    assert fit.job["pid"] == task_7.pid and fit.job["host"] == os.uname().nodename
    assert fit.created_at - 30 < fit.job["started_at"] <= fit.created_at

    assert ids_where(daemon.db, lambda agg: agg.job["SLURM_ARRAY_TASK_ID"] == "7") == ["fit-9"]
    assert ids_where(daemon.db, lambda agg: agg.job["SLURM_ARRAY_TASK_ID"] == 7) == ["fit-9"]
    assert ids_where(daemon.db, lambda agg: agg.job["SLURM_ARRAY_TASK_ID"] > 9) == ["fit-10"]
    assert sorted(ids_where(daemon.db, lambda agg: agg.job["SLURM_ARRAY_JOB_ID"] == 4242)) == ["fit-10", "fit-9"]
    assert sorted(ids_where(daemon.db, lambda agg: agg.job["SLURM_JOB_NAME"] == "survey")) == ["fit-10", "fit-9"]
    assert ids_where(daemon.db, lambda agg: agg.job["SLURM_JOB_ID"].is_none()) == ["fit-11"]
    assert ids_where(daemon.db, lambda agg: agg.job["pid"] == plain.pid) == ["fit-11"]
    # ids are ordered as numbers, not as text ("12" < "7")
    assert ids_where(daemon.db, lambda agg: agg.job["SLURM_ARRAY_JOB_ID"] == "4242",
                     order_by=lambda agg: agg.job["SLURM_ARRAY_TASK_ID"]) == ["fit-9", "fit-10"]
    text = lensd_cli("query", 'job["SLURM_ARRAY_TASK_ID"] == 7 & status == "running"', "--db", str(daemon.db),
                     "--format", "json")
    assert text.returncode == 0, text.stderr
    assert [row["id"] for row in json.loads(text.stdout)] == ["fit-9"]

    rows = {row["id"]: row for row in jobs_json(daemon.socket)}
    assert rows["fit-10"]["job"]["SLURM_ARRAY_TASK_ID"] == "12"
    table = lensd_cli("jobs", "--socket", str(daemon.socket)).stdout
    assert "4242_7" in table and "4242_12" in table
    for worker in (task_7, task_12, plain):
        assert worker.finish() == 0


# --- lensd jobs and lensd status ---------------------------------------------------------------

def column_starts(header: str, names: list[str]) -> list[int]:
    return [header.index(name) for name in names]


def test_lensd_jobs_lists_every_status_in_an_aligned_table(make_daemon, workers) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--lost-after", LOST_AFTER)
    done = workers("script", daemon.socket, 20, env=SLURM_ENV, wait=False)
    failed = workers("script", daemon.socket, 21, wait=False)
    lost = workers("hang", daemon.socket, 22, wait=False)
    running = workers("script", daemon.socket, 23, wait=False)
    for worker in (done, failed, lost, running):
        worker.expect("started")
    lost.process.kill()
    lost.process.wait(30)
    done.do("complete", samples_of=20)
    failed.do("fail", message="time limit")
    running.do("progress", max_log_likelihood=-12.5, progress=0.3, n_samples=4000)
    wait_for_status(daemon.db, "fit-22", "lost")

    result = lensd_cli("jobs", "--socket", str(daemon.socket))
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    names = ["id", "unique_tag", "name", "status", "progress", "max_log_L", "age", "seen", "slurm"]
    error_at = header.index("error")  # the error column, last, is never cut
    assert all(len(line[:error_at].rstrip()) <= 80 for line in [header, *lines])  # the rest fits 80 columns
    names[1:3] = header.split()[1:3]  # the tag and the name give way first, e.g. "uniq…"
    assert names[1].startswith("uniq") and names[2].startswith("name"[:4])
    assert header.split()[:len(names)] == names
    starts = column_starts(header, names)
    by_id = {line.split()[0]: line for line in lines}
    assert set(by_id) == {"fit-20", "fit-21", "fit-22", "fit-23"}
    for line in lines:  # every status cell starts under its header
        assert line[starts[3]:].split()[0] in {"running", "completed", "failed", "lost"}, line
    assert by_id["fit-20"][starts[3]:].startswith("completed")
    assert by_id["fit-21"][starts[3]:].startswith("failed") and "time limit" in by_id["fit-21"]
    assert by_id["fit-22"][starts[3]:].startswith("lost")
    assert by_id["fit-23"][starts[4]:].startswith("30% 4000 samples")
    assert by_id["fit-23"][starts[5]:].startswith("-12.5")
    assert by_id["fit-20"][starts[8]:].startswith("4242_7")

    rows = jobs_json(daemon.socket)
    assert {r["id"]: r["status"] for r in rows} == {"fit-20": "completed", "fit-21": "failed", "fit-22": "lost",
                                                   "fit-23": "running"}
    assert {"id", "unique_tag", "name", "status", "progress", "n_samples", "max_log_likelihood", "error",
            "created_at", "updated_at", "last_event_at", "job"} <= set(rows[0])
    assert [r["id"] for r in jobs_json(daemon.socket, "--status", "lost")] == ["fit-22"]
    assert len(jobs_json(daemon.socket, "--limit", "2")) == 2
    only_failed = lensd_cli("jobs", "--socket", str(daemon.socket), "--status", "failed").stdout.splitlines()
    assert [line.split()[0] for line in only_failed[1:]] == ["fit-21"]
    for worker in (done, failed, running):
        assert worker.finish() == 0


def test_lensd_status_reports_the_daemon_and_exits_3_when_none_answers(daemon, workers) -> None:  # type: ignore[no-untyped-def]
    worker = workers("script", daemon.socket, 30)
    worker.do("complete", samples_of=30)
    result = lensd_cli("status", "--socket", str(daemon.socket), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pid"] == daemon.pid
    assert report["database"] == str(daemon.db.resolve()) and report["database_bytes"] > 0
    assert report["fits_by_status"] == {"completed": 1}
    assert report["uptime"] > 0 and report["queue_depth"] == 0
    assert report["mean_batch"] >= 1 and report["records_per_s"] > 0
    assert report["watched"] == [] and report["lost_after"] == 600

    text = lensd_cli("status", "--socket", str(daemon.socket))
    assert text.returncode == 0, text.stderr
    assert f"pid {daemon.pid}" in text.stdout and str(daemon.db.resolve()) in text.stdout
    assert "completed 1" in text.stdout and "records/s" in text.stdout and "mean batch" in text.stdout
    assert worker.finish() == 0

    assert daemon.stop() == 0
    down = lensd_cli("status", "--socket", str(daemon.socket))
    assert down.returncode == 3
    assert "no daemon at" in down.stderr


def test_job_facts_name_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from lensd.client.fits import job_facts

    for name, value in SLURM_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "")  # set but empty: not a fact
    facts = job_facts()
    assert facts["SLURM_JOB_ID"] == "4249" and "SLURM_ARRAY_TASK_ID" not in facts
    assert facts["pid"] == os.getpid() and isinstance(facts["started_at"], float)


def test_progress_is_a_fraction_and_heartbeats_for_unknown_fits_are_harmless(daemon) -> None:  # type: ignore[no-untyped-def]
    from lensd.errors import InvalidRecord

    async def run() -> None:
        async with lensd.connect(socket=daemon.socket) as client:
            fit = await client.start(id="fraction", name="x")
            with pytest.raises(InvalidRecord, match="fraction done"):
                await fit.progress(progress=1.5)
            assert await fit.progress(progress=1.0) == "applied"

    anyio.run(run)
    assert daemon_request(daemon.socket, "heartbeat", ids=["no-such-fit", "fraction"])["ok"] is True
    assert ids_where(daemon.db) == ["fraction"]



def _open_sockets() -> int:
    """Sockets this process holds open (the client's own view of its connections)."""
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


def test_a_heartbeat_that_times_out_closes_the_connection_it_gives_up(daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """A heartbeat waits at most half a period (at least 1 s) for its reply. When the daemon does not
    answer (stopped here with SIGSTOP: a hung node), the beat gives the connection up and the next
    op reconnects; the connection given up must be closed then, not left open until garbage
    collection: the daemon counts it against --max-connections, and a late reply on it would meet
    the next request. A reconnect cut short by the beat's deadline must close its socket too."""
    from anyio.abc import SocketAttribute
    from test_watch import until

    from lensd.cli import render

    async def run() -> None:
        async with lensd.connect(socket=daemon.socket, heartbeat=600.0) as client:
            client._heartbeat = 2.0  # a beat waits 1 s; the heartbeat task sleeps its 600 s: the beats are ours
            fit = await client.start(id="fit-stalled", name="stalled")
            stalled = client._client
            assert stalled is not None and not stalled.closed
            raw = stalled._stream.extra(SocketAttribute.raw_socket)
            held = _open_sockets()
            os.kill(daemon.pid, signal.SIGSTOP)
            try:
                await client._beat([fit.id])  # as the heartbeat task does once a period
                assert stalled.closed and raw.fileno() == -1 and client._client is not stalled
                await client._beat([fit.id])  # it reconnects: the handshake gets no answer in time
                assert _open_sockets() == held - 1
            finally:
                os.kill(daemon.pid, signal.SIGCONT)
            assert await fit.complete() == "applied"  # over a new connection

    gc.disable()  # a socket left open is seen as open, not closed by a collection at some point
    try:
        anyio.run(run)
    finally:
        gc.enable()
    until(lambda: render.daemon_status(daemon.socket)["connections"] == 1, short_tmp, timeout=60,
          what="every connection of the job closed, leaving this status request's")
    assert ids_where(daemon.db, lambda agg: agg.status == "completed") == ["fit-stalled"]


def test_an_op_and_a_heartbeat_that_both_reconnect_open_one_connection(daemon) -> None:  # type: ignore[no-untyped-def]
    """With the connection gone, the job's next call and the heartbeat task may both reconnect at
    once: each opened its own and the one assigned first was dropped, open."""
    async def run() -> None:
        async with lensd.connect(socket=daemon.socket, heartbeat=60.0) as client:
            fit = await client.start(id="fit-both", name="both")
            assert client._client is not None
            await client._client.aclose()  # as a lost connection leaves it
            held = _open_sockets()
            async with anyio.create_task_group() as group:
                group.start_soon(fit.progress, None, None, 0.5)
                group.start_soon(client._beat, [fit.id])
            assert _open_sockets() == held + 1
            assert await fit.complete() == "applied"

    gc.disable()  # a socket left open is seen as open, not closed by a collection at some point
    try:
        anyio.run(run)
    finally:
        gc.enable()



_BIG = 40_000  # samples of 16 parameters: 5 MB, far past what a stopped daemon's socket holds


async def _cut(daemon: Any, call: Any) -> None:
    """Run ``call`` until it is blocked sending to the daemon, stopped with SIGSTOP, then cancel it."""
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await anyio.wait_all_tasks_blocked()  # the send waits for room in the socket
            group.cancel_scope.cancel()
    finally:
        os.kill(daemon.pid, signal.SIGCONT)


def test_a_request_cut_short_mid_frame_closes_its_connection(daemon) -> None:  # type: ignore[no-untyped-def]
    """A caller's cancel scope (``move_on_after`` around ``fit.progress``, the job's own task group)
    can cut a large frame short with part of it already in the socket. The next request on that
    connection followed half a frame: the daemon read its bytes as the rest of the first and waited
    for more until --frame-timeout (30 s) ended the connection. A connection whose frame was cut is
    closed, so the next op reconnects at once."""
    rng = np.random.default_rng(7)
    samples = {"paths": [f"p{j}" for j in range(16)], "parameters": rng.normal(size=(_BIG, 16)),
               "log_likelihood": rng.normal(size=_BIG), "log_prior": np.zeros(_BIG), "weight": np.ones(_BIG)}

    async def run() -> None:
        async with lensd.connect(socket=daemon.socket, heartbeat=600.0) as client:
            fit = await client.start(id="fit-cut", name="cut")
            first = client._client
            assert first is not None
            await _cut(daemon, lambda: fit.progress(samples=samples))
            assert first.closed
            assert await fit.complete() == "applied"  # over a new connection
            assert client._client is not first

    anyio.run(run)
    assert ids_where(daemon.db, lambda agg: agg.status == "completed") == ["fit-cut"]


def test_a_paged_read_cut_short_mid_frame_is_closed_not_cancelled(daemon) -> None:  # type: ignore[no-untyped-def]
    """A paged read cut while its request is half sent sent its cancel after the half frame, under a
    shield, and waited for the answer: on a hung daemon its caller could not be cancelled at all
    (here: the cancel scope never ended while the daemon was stopped). It closes the connection."""
    async def run() -> None:
        reading = await Client.open(daemon.socket)
        try:
            async def read() -> None:
                async for _ in reading.stream("values", name="x" * 6_000_000, query=QueryState().to_wire()):
                    pass

            await _cut(daemon, read)
            assert reading.closed
        finally:
            await reading.aclose()
        assert (await Client.open(daemon.socket)).server  # the daemon serves on

    anyio.run(run)


def test_a_request_not_given_the_connection_in_time_raises_a_lensd_error(  # type: ignore[no-untyped-def]
        daemon, tmp_path: Path) -> None:
    """``give_up_after`` bounds the wait for the connection's turn. With the daemon stopped (SIGSTOP)
    while one request waits for its reply, a second request on that connection gave up with the
    built-in TimeoutError, outside the LensdError tree. It is ConnectionBusy: a LensdError, still a
    TimeoutError, with nothing sent and the connection left open to the request holding it, which
    has its reply once the daemon runs again. A heartbeat that finds the connection held goes to the
    spool and keeps the connection, as before."""
    from lensd.client.jobs import JobClient
    from lensd.errors import ConnectionBusy, LensdError
    from lensd.wire import spoolfile

    spool = tmp_path / "spool"

    async def run() -> None:
        jobs = JobClient(daemon.socket, spool, heartbeat=2.0)  # a beat waits max(1 s, half a period)
        held = await jobs._connection()
        replies: list[dict[str, Any]] = []

        async def first() -> None:
            replies.append(await held.request("status"))

        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(first)
                await anyio.wait_all_tasks_blocked()  # the first request holds the connection, waiting
                with pytest.raises(ConnectionBusy, match="another request held the connection") as raised:
                    await held.request("status", give_up_after=0.05)
                assert isinstance(raised.value, LensdError) and isinstance(raised.value, TimeoutError)
                await jobs._beat(["fit-held"])
                assert not held.closed and jobs._client is held
                os.kill(daemon.pid, signal.SIGCONT)
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        assert [reply["ok"] for reply in replies] == [True]
        assert (await held.request("status", give_up_after=30.0))["ok"]  # the same connection serves on
        await jobs.aclose()

    anyio.run(run)
    spooled = [spoolfile.read(path) for path in spoolfile.pending(spool)]
    assert spooled == [("heartbeat", {"ids": ["fit-held"]})]
