"""A database whose path holds ``#`` or ``?``: read-only sqlite URIs quote the path (one helper,
``lensd.store.sqlite_errors.readonly_uri``), so the reader, the daemon's reads and its watcher open
that file and not the one the unquoted URI would name (``a`` for ``.../a#b/lensd.sqlite``)."""

from __future__ import annotations

from pathlib import Path

import anyio
from conftest import DaemonProcess
from records_factory import record
from test_watch import passes_after, status, until

import lensd
from lensd.demo.synthetic import write_fit
from lensd.store.sqlite_errors import readonly_uri


def test_the_uri_quotes_what_would_end_the_path() -> None:
    uri = readonly_uri("/data/run #3?/lensd.sqlite")
    assert uri == "file:/data/run%20%233%3F/lensd.sqlite?mode=ro"


def test_a_database_under_a_hash_and_question_mark_folder(make_daemon, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    odd = short_tmp / "a#b?c"
    odd.mkdir()
    watched = short_tmp / "w"
    args = ("--watch", str(watched), "--poll", "--poll-interval", "0.1")
    write_fit(watched, 5, n_samples=20)
    daemon: DaemonProcess = make_daemon(*args, db=odd / "lensd.sqlite")
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(record(1)) == "applied"
    until(lambda: status(daemon)["watch_ingested"] >= 1, odd, what="the watched fit")

    agg = lensd.Aggregator.from_database(daemon.db)  # the file itself
    local = sorted(fit.id for fit in agg.fits())
    agg.close()
    assert len(local) == 2 and "fit-1" in local

    async def remote() -> list[str]:  # the daemon's read connection
        async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as over:
            return sorted([fit.id async for fit in over.fits()])

    assert anyio.run(remote) == local
    assert daemon.stop() == 0

    again: DaemonProcess = make_daemon(*args, db=odd / "lensd.sqlite")  # the watcher reads what is stored
    passes_after(again, 3)
    assert status(again)["watch_ingested"] == 0
    assert again.stop() == 0
    assert not (short_tmp / "a").exists()  # what the unquoted URI would have opened
