"""What a person reads (issue 12, point 6): a resubmitted unchanged folder is a duplicate, a fit is
never completed before it was created, exports carry the fit's times and counts, the aggregators
and their misuse explain themselves. Real daemon, real PyAutoFit output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest
from conftest import DIR_OUTPUT, DaemonProcess, lensd_cli

import lensd

FOLDER = "d84750cd075cd129a33ac035b98cf1c4"


def test_submitting_an_unchanged_folder_again_is_a_duplicate(daemon: DaemonProcess, short_tmp: Path) -> None:
    folder = short_tmp / FOLDER
    shutil.copytree(next(DIR_OUTPUT.rglob(FOLDER)), folder)  # copytree keeps PyAutoFit's old mtimes
    first = lensd_cli("submit", str(folder), "--socket", str(daemon.socket))
    assert first.returncode == 0 and first.stdout.split() == ["applied", FOLDER], first.stderr
    again = lensd_cli("submit", str(folder), "--socket", str(daemon.socket))
    assert again.stdout.split() == ["duplicate", FOLDER], again.stderr
    (folder / "files" / "info.json").write_text('{"changed": true}')
    changed = lensd_cli("submit", str(folder), "--socket", str(daemon.socket))
    assert changed.stdout.split() == ["applied", FOLDER]

    agg = lensd.Aggregator.from_database(daemon.db)
    try:
        fit = agg[0]
        assert fit.completed_at is not None and fit.created_at is not None
        assert fit.completed_at >= fit.created_at  # completed last week, ingested today: created by then
        assert fit.completed_at == pytest.approx((folder / ".completed").stat().st_mtime)
    finally:
        agg.close()

    exported = json.loads(lensd_cli("export", "--format", "json", "--db", str(daemon.db)).stdout)
    assert {"error", "n_samples", "created_at", "updated_at", "completed_at"} <= set(exported[0])
    assert exported[0]["n_samples"] == fit.n_samples


def test_aggregators_say_what_they_are_and_how_to_use_them(daemon: DaemonProcess) -> None:
    local = lensd.Aggregator.from_database(daemon.db)
    try:
        assert repr(local(local.is_complete)[-2:]) == (
            f"<Aggregator {str(daemon.db)!r} query(is_complete == True) [-2:]>")
    finally:
        local.close()

    async def misuse() -> list[str]:
        async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as agg:
            said = [repr(agg.order_by(agg.max_log_likelihood, reverse=True)[:3])]
            for wrong in (lambda: len(agg), lambda: [f for f in agg]):
                with pytest.raises(TypeError) as caught:
                    wrong()
                said.append(str(caught.value))
            return said

    shown, length, loop = anyio.run(misuse)
    assert shown == f"<AsyncAggregator {str(daemon.socket)!r} order_by(max_log_likelihood, reverse=True) [:3]>"
    assert "await agg.count()" in length and "async for" in loop


def test_the_ingest_progress_bar_shows_count_rate_and_eta(short_tmp: Path) -> None:
    """On a terminal (a real pty) the bar counts fits, says the rate and the time left."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    command = [sys.executable, "-m", "lensd", "ingest", str(DIR_OUTPUT), "--db", str(short_tmp / "p.sqlite")]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out, _ = job.communicate(timeout=120)
    shown = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not data:
            break
        shown += data
    os.close(master)
    assert job.returncode == 0 and "ingested 12" in out
    text = shown.decode(errors="replace")
    assert "12/12" in text and "fits/s" in text  # the ETA (click's) shows once the rate is known


def test_lensd_jobs_fits_80_columns_with_short_ids_any_command_accepts(daemon: DaemonProcess) -> None:
    from records_factory import record

    with lensd.connect_sync(socket=daemon.socket) as client:
        for i in range(5):  # ids left to lensd: 64 hex digits; long tags and names
            client.submit(record(i, id=None, unique_tag=f"a_rather_long_dataset_name_{i:03d}",
                                 name="nautilus_with_a_long_search_name"))
    shown = lensd_cli("jobs", "--socket", str(daemon.socket))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 6 and all(len(line) <= 80 for line in lines), shown.stdout
    agg = lensd.Aggregator.from_database(daemon.db)
    try:
        full = {f.id for f in agg.fits()}
    finally:
        agg.close()
    prefixes = [line.split()[0] for line in lines[1:]]
    assert all(len(p) < 64 and sum(f.startswith(p) for f in full) == 1 for p in prefixes)
    tagged = lensd_cli("tag", prefixes[0], "seen=true", "--socket", str(daemon.socket))
    assert tagged.returncode == 0, tagged.stderr
    (target,) = [f for f in full if f.startswith(prefixes[0])]
    assert tagged.stdout.split() == ["applied", target]


def test_the_daemon_logs_connections_not_records(daemon: DaemonProcess) -> None:
    from records_factory import record

    with lensd.connect_sync(socket=daemon.socket) as client:
        for i in range(200):
            client.submit(record(i, n_samples=5))
    assert daemon.stop() == 0
    logged = daemon.stderr_lines
    assert any("connection opened" in line for line in logged)
    assert any("connection closed" in line for line in logged)
    assert len(logged) < 20, logged  # 200 records, a handful of lines: never one per record
