"""Schema migrations: a file written by an older release is brought to the current layout in one
transaction, keeps its data, and ends up with exactly the layout of a new file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lensd.store import schema


def _layout(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return sorted(conn.execute("SELECT type, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall())


def _v1(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in schema._statements(schema._DDL_V1):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO fits (fit_key, id, status) VALUES (1, 'a', 'completed')")
    conn.execute("INSERT INTO facts (fit_key, kind, key, num) VALUES (1, 0, 'x', 2.0)")
    conn.execute("INSERT INTO nodes (fit_key, path, class_path, class_name) VALUES (1, 'm', 'p.C', 'C')")
    return conn


def test_a_v1_file_is_migrated_to_the_layout_of_a_new_file(tmp_path: Path) -> None:
    old = _v1(tmp_path / "old.sqlite")
    schema.migrate(old)
    new = sqlite3.connect(tmp_path / "new.sqlite", isolation_level=None)
    schema.migrate(new)
    assert old.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert _layout(old) == _layout(new)
    indexes = {row[0] for row in old.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"facts_probe", "nodes_probe"} <= indexes and not {"facts_fit", "nodes_fit"} & indexes
    assert old.execute("SELECT fit_key, num FROM facts WHERE fit_key = 1 AND kind = 0 AND key = 'x'").fetchall() \
        == [(1, 2.0)]
    assert old.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = _v1(tmp_path / "old.sqlite")
    before = _layout(conn)
    broken = schema.step_sql(schema.MIGRATIONS[0]) + "; CREATE INDEX broken ON nowhere(x)"
    monkeypatch.setattr(schema, "MIGRATIONS", [broken])
    with pytest.raises(sqlite3.OperationalError):
        schema.migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert _layout(conn) == before
