"""Convergence history: each progress event keeps a point (time, max log L, samples, fraction),
readable as ``fit.progress_history``, bounded and thinned when long, cleared when a fit restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
from records_factory import record
from test_jobs import workers  # noqa: F401 - the fixture of client processes

import lensd
from lensd.store import batchplan, schema
from lensd.store.writeops import op_from_request
from lensd.store.writer import BatchWriter


def _fit(db: Path, fit_id: str) -> lensd.Fit:
    agg = lensd.Aggregator.from_database(db)
    [fit] = [f for f in agg.fits() if f.id == fit_id]
    return fit


def test_progress_events_of_a_client_process_become_the_fits_history(daemon, workers) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    worker = workers("script", daemon.socket, 1)
    assert _fit(daemon.db, "fit-1").progress_history == []
    sent = [(-90.0, 100, 0.1), (-60.0, 200, 0.4), (-41.5, 350, 0.8)]
    for mll, n, fraction in sent:
        assert worker.do("progress", max_log_likelihood=mll, n_samples=n, progress=fraction) == "applied"
    history = _fit(daemon.db, "fit-1").progress_history
    assert [(p.max_log_likelihood, p.n_samples, p.progress) for p in history] == sent
    times = [p.time for p in history]
    assert times == sorted(times) and all(isinstance(t, float) for t in times)
    assert worker.do("complete", samples_of=3) == "applied"
    assert len(_fit(daemon.db, "fit-1").progress_history) == 3  # completing keeps the history
    assert worker.finish() == 0


def _apply(db: Path, requests: list[tuple[str, dict[str, Any]]], batch: int) -> None:
    async def run() -> None:
        writer = await BatchWriter.open(db)
        ops = [op_from_request(op, fields) for op, fields in requests]
        for start in range(0, len(ops), batch):
            outcomes = await writer.apply(ops[start:start + batch])
            assert all(o == "applied" for o in outcomes), outcomes
        await writer.close()
    anyio.run(run)


def test_a_long_history_is_thinned_keeping_the_first_and_the_latest_point(tmp_path: Path) -> None:
    db = tmp_path / "lensd.sqlite"
    start = ("start", {"record": {**record(7), "status": "running"}})
    events = [("progress", {"id": "fit-7", "max_log_likelihood": float(-1000 + i), "n_samples": i,
                            "progress": i / 2000}) for i in range(1, 1001)]
    _apply(db, [start, *events], batch=7)
    history = _fit(db, "fit-7").progress_history
    assert batchplan.HISTORY_MAX // 2 <= len(history) <= batchplan.HISTORY_MAX
    samples = [p.n_samples or 0 for p in history]
    assert None not in [p.n_samples for p in history]
    assert samples[0] == 1 and samples[-1] == 1000 and samples == sorted(samples)
    assert len(set(samples)) == len(samples)
    assert all(p.max_log_likelihood == -1000 + (p.n_samples or 0) for p in history)

    # a restart of the same fit (a SLURM requeue) begins a new history
    _apply(db, [start, ("progress", {"id": "fit-7", "max_log_likelihood": -5.0})], batch=10)
    assert [(p.max_log_likelihood, p.n_samples) for p in _fit(db, "fit-7").progress_history] == [(-5.0, None)]


def test_a_v2_file_reads_with_an_empty_history_and_migrates(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in [*schema._statements(schema._DDL_V1), *schema._statements(schema.step_sql(schema.MIGRATIONS[0]))]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version=2")
    conn.execute("INSERT INTO fits (fit_key, id, status) VALUES (1, 'old', 'running')")
    conn.close()
    assert _fit(db, "old").progress_history == []
    _apply(db, [("progress", {"id": "old", "max_log_likelihood": -3.0, "progress": 0.5})], batch=1)
    assert [p.progress for p in _fit(db, "old").progress_history] == [0.5]
