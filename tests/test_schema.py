"""Schema migrations: a file written by an older release is brought to the current layout in one
transaction, keeps its data, and ends up with exactly the layout of a new file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lensd
from lensd.errors import UnsupportedDatabase
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


# --- PostgreSQL: the same version and migration list ------------------------------------------

def _pg_layout(url: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                            "UNION ALL SELECT table_name || '.' || column_name, data_type || ' ' || "
                            "coalesce(collation_name, '') FROM information_schema.columns "
                            "WHERE table_schema = 'public'").fetchall()
    return sorted((str(a), str(b)) for a, b in rows)


def test_postgresql_starts_together_and_migrates_like_sqlite(pg_server: Any) -> None:
    """Two processes creating the schema at once make it once (advisory lock); a v1 database is
    migrated by the same list to the layout of a new one."""
    import psycopg

    from lensd.store import pgstore

    new, old = pg_server.create_database(), pg_server.create_database()
    try:
        racers = [subprocess.Popen([sys.executable, "-c", "import sys; from lensd.store import pgstore; "
                                    "pgstore.prepare_database(sys.argv[1])", pg_server.url(new)],
                                   stderr=subprocess.PIPE, text=True) for _ in range(4)]
        for racer in racers:
            _, err = racer.communicate(timeout=120)
            assert racer.returncode == 0, err
        with psycopg.connect(pg_server.url(old)) as conn:
            for statement in schema._statements(schema.DDL_V1["postgresql"]):
                conn.execute(statement)
            conn.execute("INSERT INTO lensd_meta VALUES ('application', 'lensd'), ('schema_version', '1')")
            conn.execute("INSERT INTO fits (id, status) VALUES ('a', 'completed')")
        pgstore.prepare_database(pg_server.url(old))
        assert _pg_layout(pg_server.url(old)) == _pg_layout(pg_server.url(new))
        with psycopg.connect(pg_server.url(old)) as conn:
            assert pgstore.read_version(conn) == schema.SCHEMA_VERSION
            assert conn.execute("SELECT id FROM fits").fetchall() == [("a",)]
            conn.execute("UPDATE lensd_meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(UnsupportedDatabase, match="newer"):
            lensd.Aggregator.from_database(pg_server.url(old))
    finally:
        pg_server.drop_database(new)
        pg_server.drop_database(old)
