"""Errors that reached the user wrong (issue 19, part 4), each against a real daemon or file.

- a job with ``spool=`` failing on ``busy`` instead of spooling;
- ``lensd ingest`` through a daemon that dies: a traceback instead of one line and exit 3;
- a ``model.json`` nested 10^5 deep: RecursionError instead of a reason;
- a huge unknown key logged and answered whole; a huge key inside a map not held to MAX_STRING;
- ``Aggregator.from_database`` on a FIFO hanging for ever;
- ``lensd ingest`` of two roots holding the same fit id writing both (the later replacing the earlier).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from conftest import DIR_OUTPUT, lensd_cli
from records_factory import record
from test_watch import stored, until
from wire import frame, hello, raw_connection, read_frame

import lensd
from lensd.domain.records import MAX_STRING
from lensd.errors import StorageError
from lensd.wire import spoolfile

LBFGS = DIR_OUTPUT / "howtofit" / "single" / "gaussian_a" / "lbfgs"


def test_a_job_with_a_spool_spools_when_the_daemon_is_at_its_cap(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--max-connections", "1")
    holder = raw_connection(daemon.socket)
    hello(holder)  # the one connection the daemon takes
    spool = short_tmp / "spool"
    with lensd.connect_sync(socket=daemon.socket, spool=spool) as client:
        assert client.submit(record(1, n_samples=5)) == "spooled"
    assert len(spoolfile.pending(spool)) == 1
    holder.close()
    assert daemon.stop() == 0


def _many_fits(root: Path, count: int) -> None:
    """``count`` copies of one real fit, each under its own 32-hex id folder."""
    (source,) = [p for p in LBFGS.iterdir() if p.is_dir()]
    for i in range(count):
        shutil.copytree(source, root / f"fit{i:04d}" / f"{i:032x}")


def test_ingest_through_a_daemon_that_dies_exits_3_with_one_line(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    tree = short_tmp / "tree"
    _many_fits(tree, 300)
    daemon = make_daemon()
    ingest = subprocess.Popen([sys.executable, "-m", "lensd", "ingest", str(tree), "--db", str(daemon.db)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until(lambda: stored(daemon.db), short_tmp, what="the first ingested fits")
    os.kill(daemon.pid, signal.SIGKILL)
    out, err = ingest.communicate(timeout=120)
    if ingest.returncode == 0:  # it finished before the kill landed: nothing to judge
        assert "ingested 300" in out
        return
    assert ingest.returncode == 3, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_model_json_nested_100000_deep_is_a_reason_not_a_crash(short_tmp: Path) -> None:
    fit = short_tmp / "deep" / "lbfgs"
    shutil.copytree(LBFGS, fit)
    (model,) = fit.rglob("model.json")
    model.write_text("[" * 100_000 + "]" * 100_000)
    result = lensd_cli("ingest", str(fit.parent), "--db", str(short_tmp / "d.sqlite"))
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    assert "nested too deeply" in result.stdout + result.stderr


def test_huge_keys_are_refused_briefly_and_logged_short(daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    sock = raw_connection(daemon.socket, timeout=60)
    hello(sock)
    unknown = dict(record(1, n_samples=5), **{"k\nFORGED " + "x" * 5_000_000: 1})
    inner = record(2, n_samples=5, info={"y" * (MAX_STRING + 1): 1})
    sock.sendall(frame({"op": "submit", "rid": 1, "record": unknown})
                 + frame({"op": "submit", "rid": 2, "record": inner}))
    replies: dict[int, dict[str, Any]] = {}
    for _ in range(2):
        reply = read_frame(sock)
        assert reply is not None
        replies[reply["rid"]] = reply
    sock.close()
    assert replies[1]["error"]["code"] == "invalid" and "unknown record keys" in replies[1]["error"]["message"]
    assert replies[2]["error"]["code"] == "invalid" and "key longer than" in replies[2]["error"]["message"]
    assert all(len(r["error"]["message"]) < 2000 for r in replies.values())
    assert daemon.stop() == 0
    assert all(len(line) < 2000 for line in daemon.stderr_lines)
    assert not any(line.startswith("FORGED") for line in daemon.stderr_lines)


def test_from_database_on_a_fifo_is_refused_at_once(short_tmp: Path) -> None:
    fifo = short_tmp / "results.sqlite"
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []

    def open_it() -> None:
        try:
            outcome.append(lensd.Aggregator.from_database(fifo))
        except BaseException as exc:
            outcome.append(exc)

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    opener.join(30)
    if opener.is_alive():  # unblock the open so the thread can end, then fail
        with open(fifo, "wb"):
            pass
        raise AssertionError("from_database blocked on a FIFO")
    assert isinstance(outcome[0], StorageError) and "not a regular file" in str(outcome[0])


def test_ingest_of_two_roots_holding_the_same_fit_ids_keeps_the_first_and_says_so(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """Two copies of one output tree: each fit is written once (from the root given first), the
    copy is reported skipped with its reason, and a second ingest changes nothing (it used to
    write both, the later replacing the earlier, and flip them back on every ingest)."""
    first, copy = short_tmp / "first", short_tmp / "copy"
    shutil.copytree(DIR_OUTPUT / "howtofit" / "single", first)
    shutil.copytree(DIR_OUTPUT / "howtofit" / "single", copy)
    direct = short_tmp / "direct.sqlite"
    daemon = make_daemon()
    for db in (direct, daemon.db):  # written by the ingest itself, then through the daemon
        done = lensd_cli("ingest", str(first), str(copy), "--db", str(db))
        assert done.returncode == 0, done.stderr
        summary, *lines = done.stdout.splitlines()
        assert summary.startswith("ingested 4, unchanged 0, skipped 4, failed 0"), done.stdout
        assert len(lines) == 4 and all(line.startswith(f"  skipped {copy}/") and "same fit id" in line
                                       and f"as {first}/" in line for line in lines), lines
        sources = {source for _, _, source in stored(db).values()}
        assert len(sources) == 4 and all(str(source).startswith(f"{first}/") for source in sources)
        again = lensd_cli("ingest", str(first), str(copy), "--db", str(db))
        assert again.stdout.startswith("ingested 0, unchanged 4, skipped 4, failed 0"), again.stdout
    assert daemon.stop() == 0
