"""Watching folders: how fast a polled tree of 10,000 fits shows 1,000 new ones, and what idle
polling costs, against watchfiles' own poller on the same tree (the baseline, same run).

    .venv/bin/python bench/watch_poll.py [--fits 10000] [--new 1000] [--interval 2] [--idle 30]

The daemon is a real ``lensd start --foreground --poll`` process; its CPU is read from
/proc/<pid>/stat (utime + stime), so no dependency is added. Takes about two minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from lensd.cli import render
from lensd.daemon.folderscan import SETTLE, TreeWalker
from lensd.demo.synthetic import write_fits

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM fits").fetchone()[0])
    finally:
        conn.close()


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)  # a benchmark's sampling period


def start_daemon(db: Path, socket: Path, tree: Path, interval: float) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "lensd", "start", "--foreground", "--db", str(db), "--socket",
               str(socket), "--watch", str(tree), "--poll", "--poll-interval", str(interval),
               "--log-level", "warning", "--contact", str(socket.with_suffix(".contact.json"))]
    daemon = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    if not daemon.stdout.readline().startswith("lensd ready"):
        raise SystemExit("the daemon did not start")
    return daemon


BASELINE = textwrap.dedent("""
    import sys, threading, watchfiles
    stop = threading.Event()
    threading.Timer(float(sys.argv[3]), stop.set).start()
    for _ in watchfiles.watch(sys.argv[1], force_polling=True, poll_delay_ms=int(sys.argv[2]),
                              stop_event=stop, rust_timeout=500, yield_on_timeout=True):
        pass
""")


def baseline_cpu(tree: Path, interval: float, seconds: float) -> float:
    """CPU seconds a minute of watchfiles' polling (force_polling) of the same idle tree."""
    child = subprocess.Popen([sys.executable, "-c", BASELINE, str(tree), str(int(interval * 1000)),
                              str(seconds + 5)])
    time.sleep(5)  # its first walk over the tree, which the figure leaves out
    before = cpu_seconds(child.pid)
    time.sleep(seconds)  # the measured period
    used = cpu_seconds(child.pid) - before
    child.wait(60)
    return used / seconds * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=1_000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle polling measured")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lwb", dir="/tmp"))
    tree, db, socket = work / "tree", work / "lensd.sqlite", work / "s"
    rows: list[tuple[str, str]] = []
    try:
        began = time.perf_counter()
        write_fits(tree, options.fits, n_samples=20)
        quiet_from = time.monotonic() + SETTLE + options.interval  # when no fit is "settling" any more
        rows.append((f"write {options.fits} fit folders (synthetic)", f"{time.perf_counter() - began:.1f} s"))
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lensd", "ingest", str(tree), "--db", str(db), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        rows.append((f"lensd ingest of the {options.fits} (direct)", f"{time.perf_counter() - began:.1f} s"))

        walker = TreeWalker(str(tree))
        began = time.perf_counter()
        walker.walk()
        first = time.perf_counter() - began
        began = time.perf_counter()
        for _ in range(5):
            walker.walk()
        rows.append((f"TreeWalker pass over {walker.fits} fits, first / later",
                     f"{first * 1000:.0f} / {(time.perf_counter() - began) / 5 * 1000:.0f} ms"))

        began = time.perf_counter()
        daemon = start_daemon(db, socket, tree, options.interval)
        try:
            wait_for(lambda: render.daemon_status(socket).get("watch_passes", 0) >= 1, 600, "the catch-up")
            report = render.daemon_status(socket)
            rows.append((f"daemon start + catch-up over {options.fits} unchanged fits",
                         f"{time.perf_counter() - began:.1f} s, {report['watch_ingested']} re-read"))

            time.sleep(max(0.0, quiet_from - time.monotonic()))  # fresh folders are checked in full
            before, began = cpu_seconds(daemon.pid), time.perf_counter()
            time.sleep(options.idle)  # the measured idle period
            idle = (cpu_seconds(daemon.pid) - before) / (time.perf_counter() - began) * 60
            rows.append((f"lensd idle polling, every {options.interval:g} s", f"{idle:.2f} CPU s/min"))

            before, began = cpu_seconds(daemon.pid), time.perf_counter()
            write_fits(tree, options.new, n_samples=20, start=options.fits)
            written = time.perf_counter()
            wait_for(lambda: count(db) >= options.fits + options.new, 600, "the new fits")
            done = time.perf_counter()
            rows.append((f"{options.new} new fits: written in", f"{written - began:.1f} s"))
            rows.append(("  all in the database, after the last was written", f"{done - written:.1f} s"))
            rows.append(("  daemon CPU while they arrived", f"{cpu_seconds(daemon.pid) - before:.1f} s"))
        finally:
            daemon.terminate()
            daemon.wait(60)

        base = baseline_cpu(tree, options.interval, options.idle)
        rows.append((f"baseline: watchfiles force_polling, every {options.interval:g} s",
                     f"{base:.2f} CPU s/min"))
        rows.append(("baseline / lensd idle polling CPU", f"{base / idle:.1f}x" if idle else "inf"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(name) for name, _ in rows)
    print(f"watching folders: {options.fits} fits, {os.cpu_count()} CPUs")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
