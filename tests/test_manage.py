"""``lensd delete`` and ``lensd tag`` through the single writer: the file's own writer (under the
writer lock) when no daemon runs, the daemon's when one owns the database. Idempotent, logged,
asking before it deletes. Real processes, a real daemon, a real sqlite file."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DaemonProcess, lensd_cli
from records_factory import record

import lensd


def ids_of(db: Path, text: str = "") -> list[str]:
    result = lensd_cli("query", text, "--db", str(db), "--format", "json", "--all")
    assert result.returncode == 0, result.stderr
    return sorted(row["id"] for row in json.loads(result.stdout))


def fill(daemon: DaemonProcess, count: int = 6) -> None:
    with lensd.connect_sync(socket=daemon.socket) as client:
        for i in range(count):
            assert client.submit(record(i)) == "applied"


def test_delete_and_tag_without_a_daemon(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: DaemonProcess = make_daemon()
    fill(daemon)
    assert daemon.stop() == 0
    db = str(daemon.db)
    expression = 'unique_tag == "lens_1" | unique_tag == "lens_2"'

    refused = lensd_cli("delete", expression, "--db", db, input="n\n")
    assert refused.returncode == 1 and "2 fit(s) match" in refused.stdout and "nothing deleted" in refused.stderr
    assert len(ids_of(daemon.db)) == 6
    confirmed = lensd_cli("delete", expression, "--db", db, input="y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "deleted 2 fit(s)" in confirmed.stdout
    assert ids_of(daemon.db) == ["fit-0", "fit-3", "fit-4", "fit-5"]
    again = lensd_cli("delete", expression, "--db", db, "--yes")
    assert again.returncode == 0 and "0 fit(s) match" in again.stdout  # idempotent

    tagged = lensd_cli("tag", "fit-3", "reviewed=true", "note=odd arc", "index=null", "--db", db)
    assert tagged.returncode == 0 and tagged.stdout.strip() == "applied fit-3", tagged.stderr
    assert ids_of(daemon.db, 'info["reviewed"] == true & info["note"] == "odd arc"') == ["fit-3"]
    assert ids_of(daemon.db, 'info["index"].is_none()') == ["fit-3"]  # null removed the key
    twice = lensd_cli("tag", "fit-3", "reviewed=true", "--db", db)
    assert twice.stdout.strip() == "duplicate fit-3"


def test_delete_and_tag_go_through_a_running_daemon(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: DaemonProcess = make_daemon()
    fill(daemon)
    # --db only: the daemon holds the lock, so the delete goes to it
    deleted = lensd_cli("delete", 'unique_tag == "lens_0"', "--db", str(daemon.db), "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted 1 fit(s)" in deleted.stdout
    tagged = lensd_cli("tag", "fit-5", "grade=4", "--socket", str(daemon.socket))
    assert tagged.returncode == 0, tagged.stderr
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(record(7)) == "applied"  # the daemon goes on as ever
    agg = lensd.Aggregator.from_database(daemon.db)
    try:
        assert sorted(f.id for f in agg.fits()) == ["fit-1", "fit-2", "fit-3", "fit-4", "fit-5", "fit-7"]
        assert [f.id for f in agg.query(agg.info["grade"] == 4).fits()] == ["fit-5"]
    finally:
        agg.close()
    ambiguous = lensd_cli("tag", "fit-", "x=1", "--socket", str(daemon.socket))
    assert ambiguous.returncode == 1 and "give more of it" in ambiguous.stderr
    missing = lensd_cli("tag", "nothing", "x=1", "--socket", str(daemon.socket))
    assert missing.returncode == 1 and "no fit has an id starting with 'nothing'" in missing.stderr
    assert daemon.stop() == 0
    logged = "".join(daemon.stderr_lines)
    assert "deleted 1 fit(s)" in logged and "tagged fit-5: grade=4" in logged
