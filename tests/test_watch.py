"""Watched PyAutoFit folders: real fixture trees copied into a folder a real daemon polls.

Waiting is always for a condition with a deadline: between checks the helper blocks on real file
changes (watchfiles on the database's folder, which every commit touches), at most 0.25 s.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import watchfiles
from conftest import DIR_OUTPUT, integrity_ok

from lensd.cli import render
from lensd.daemon.folderscan import expand
from lensd.demo.synthetic import write_fit
from lensd.ingest import pyautofit
from lensd.ingest.folders import folder_signature
from lensd.ingest.run import stored_signatures
from lensd.store.sqlite_errors import readonly_uri

ZIPPED_ONLY = "856b09f9a4536bb11f98393cdabe9696"  # single/gaussian_a/lbfgs: copied as its zip alone


def until(condition: Callable[[], Any], *watch: Path, timeout: float = 30.0, what: str = "a condition") -> Any:
    """``condition()`` once it is truthy; blocks on changes under ``watch`` between checks."""
    deadline = time.monotonic() + timeout
    found = condition()
    if found:
        return found
    stop = threading.Event()
    for _ in watchfiles.watch(*watch, watch_filter=None, recursive=False, debounce=50, step=10,
                              rust_timeout=250, yield_on_timeout=True, stop_event=stop):
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
    raise AssertionError(f"stopped waiting for {what}")


def stored(db: Path) -> dict[str, tuple[str, float, str | None]]:
    """id -> (status, updated_at, source), read as a reader would, never blocking the daemon."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        rows = conn.execute("SELECT id, status, updated_at, source FROM fits").fetchall()
    finally:
        conn.close()
    return {fit: (status, updated, source) for fit, status, updated, source in rows}


def status(daemon: Any) -> dict[str, Any]:
    return render.daemon_status(daemon.socket)


def passes_after(daemon: Any, extra: int) -> None:
    """Wait until the watcher finished ``extra`` more passes over its folders."""
    target = status(daemon)["watch_passes"] + extra
    until(lambda: status(daemon)["watch_passes"] >= target, daemon.db.parent, what=f"{extra} passes")


def settled(db: Path, tree: Path) -> bool:
    """The watcher has nothing left to read under ``tree``: every fit it would look at is stored
    with the signature the tree has now (the watcher's own test for "unchanged").

    "Every fit completed" is not enough once the copy is over: a fit first stored from its
    ``.zip`` (copied before its folder) or half copied (a copy stalled for longer than the poll
    interval, as it does under load) is completed already, and is stored again from its final
    files a pass or two later: a snapshot taken before that is not the last word.
    """
    known = stored_signatures(db)
    return all(known.get(str(Path(fit).resolve())) == folder_signature(fit) for fit in expand([str(tree)]))


def expected_ids(tree: Path) -> set[str]:
    found = set()
    for item in pyautofit.scan([tree]):
        assert isinstance(item, dict), item
        found.add(item["id"])
    return found


def test_copied_tree_appears_zip_only_fit_too_and_restart_reads_nothing(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    watched = short_tmp / "w"
    watched.mkdir()
    args = ("--watch", str(watched), "--poll", "--poll-interval", "0.1")
    daemon = make_daemon(*args)
    tree = watched / "dir_output"
    shutil.copytree(DIR_OUTPUT, tree, ignore=lambda _, names: [n for n in names if n == ZIPPED_ONLY])
    wanted = expected_ids(tree)
    assert len(wanted) == 12 and ZIPPED_ONLY in wanted

    def all_completed() -> bool:
        fits = stored(daemon.db)
        return wanted <= set(fits) and all(fits[i][0] == "completed" for i in wanted)

    until(all_completed, daemon.db.parent, what="every fixture fit")
    until(lambda: settled(daemon.db, tree), daemon.db.parent, what="the watcher to have read the final copy")
    before = stored(daemon.db)
    assert set(before) == wanted
    assert str(before[ZIPPED_ONLY][2]).endswith(f"{ZIPPED_ONLY}.zip")
    assert status(daemon)["watch_modes"] == {str(watched): "poll"}
    assert daemon.stop() == 0

    again = make_daemon(*args)
    passes_after(again, 3)
    assert status(again)["watch_ingested"] == 0
    assert stored(again.db) == before  # same updated_at: nothing unchanged was stored again
    assert not any("watch: ingested" in line for line in again.stderr_lines)
    assert again.stop() == 0
    assert integrity_ok(again.db)


def test_fit_is_running_until_completed_appears_then_stored_once(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    watched = short_tmp / "w"
    watched.mkdir()
    daemon = make_daemon("--watch", str(watched), "--poll", "--poll-interval", "0.1")
    source = next(DIR_OUTPUT.rglob("d84750cd075cd129a33ac035b98cf1c4"))
    target = watched / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".completed"))
    until(lambda: stored(daemon.db).get(source.name, ("",))[0] == "running", daemon.db.parent,
          what="the fit stored as running")
    passes_after(daemon, 2)  # settled: the copy is over and has been seen
    ingested = status(daemon)["watch_ingested"]

    (target / ".completed").write_text("")
    until(lambda: stored(daemon.db)[source.name][0] == "completed", daemon.db.parent,
          what="the fit stored as completed")
    updated_at = stored(daemon.db)[source.name][1]
    passes_after(daemon, 3)
    assert status(daemon)["watch_ingested"] == ingested + 1
    assert stored(daemon.db)[source.name][1] == updated_at


def test_broken_folder_is_logged_skipped_and_read_again_once_fixed(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    watched = short_tmp / "w"
    watched.mkdir()
    daemon = make_daemon("--watch", str(watched), "--poll", "--poll-interval", "0.1")
    staging = short_tmp / "staging"
    folder = write_fit(staging, 7, n_samples=20)
    model = (folder / "files" / "model.json").read_text()
    (folder / "files" / "model.json").write_text("{not json")
    (staging / "survey").rename(watched / "survey")  # the broken fit appears at once, whole
    moved = watched / folder.relative_to(staging)

    until(lambda: status(daemon)["watch_failed"] >= 1, daemon.db.parent, what="the failure")
    passes_after(daemon, 3)
    assert status(daemon)["watch_failed"] == 1  # unchanged: not read again
    warnings = [line for line in daemon.stderr_lines if "skipped" in line]
    assert len(warnings) == 1 and "files/model.json: invalid JSON" in warnings[0]

    (moved / "files" / "model.json").write_text(model)  # in place: only its signature changes
    until(lambda: stored(daemon.db).get(moved.name, ("",))[0] == "completed", daemon.db.parent,
          what="the repaired fit")


def test_local_folder_is_watched_with_inotify(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    watched = short_tmp / "w"
    watched.mkdir()
    daemon = make_daemon("--watch", str(watched))
    until(lambda: status(daemon)["watch_passes"] >= 1, daemon.db.parent, what="the catch-up scan")
    assert status(daemon)["watch_modes"] == {str(watched): "notify"}
    tree = watched / "single"
    shutil.copytree(DIR_OUTPUT / "howtofit" / "single", tree)
    wanted = expected_ids(tree)
    until(lambda: wanted <= set(stored(daemon.db)), daemon.db.parent, what="the copied fits")
    assert daemon.stop() == 0
