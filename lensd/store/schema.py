"""The database layout, its PRAGMAs, and migrations keyed on a schema version.

Queryable facts live in narrow indexed tables so that every predicate of the query language is
an index search:

- ``fits``: one row per fit, its columns (SPEC §2) and JSON copies of model, search, info, job,
  summary and the max-likelihood instance, for loading a fit without touching the payloads.
- ``facts``: ``(fit_key, kind, key) -> num | txt | json`` for the max-likelihood instance values
  (kind 0), median values (1), info (2) and job (3). A number (or bool) goes to ``num``, a string to
  ``txt``, anything else (lists, dicts, null) to ``json``, so numbers compare as numbers and strings
  as strings, as they would in Python.
- ``nodes``: ``(fit_key, path) -> class_path, class_name`` for every model node that names a class.
- ``payloads``: ``(fit_key, name) -> msgpack blob`` for samples and files, read only when asked for.
- ``progress_history`` (v3): ``(fit_key, t) -> max_log_likelihood, n_samples, progress``, one row per
  progress event, thinned by the writer when a fit has more than ``HISTORY_MAX`` (batchplan.py).
"""

from __future__ import annotations

import sqlite3
from typing import Final

from lensd.errors import UnsupportedDatabase

SCHEMA_VERSION: Final = 3
APPLICATION_ID: Final = 0x4C454E53  # "LENS": marks the file as a lensd database

KIND_VALUE: Final = 0
KIND_MEDIAN: Final = 1
KIND_INFO: Final = 2
KIND_JOB: Final = 3

FIT_COLUMNS: Final = (
    "id", "name", "path_prefix", "unique_tag", "status", "max_log_likelihood", "log_evidence",
    "parent_id", "is_grid_search", "model", "search", "info", "job", "summary", "instance", "error",
    "progress", "n_samples", "seq", "source", "source_sig", "created_at", "updated_at",
    "completed_at", "last_event_at",
)

_DDL_V1: Final = """
CREATE TABLE IF NOT EXISTS lensd_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fits (
    fit_key            INTEGER PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    name               TEXT,
    path_prefix        TEXT,
    unique_tag         TEXT,
    status             TEXT NOT NULL,
    max_log_likelihood REAL,
    log_evidence       REAL,
    parent_id          TEXT,
    is_grid_search     INTEGER NOT NULL DEFAULT 0,
    model              TEXT,
    search             TEXT,
    info               TEXT,
    job                TEXT,
    summary            TEXT,
    instance           TEXT,
    error              TEXT,
    progress           REAL,
    n_samples          INTEGER,
    seq                INTEGER,
    source             TEXT,
    source_sig         TEXT,
    created_at         REAL,
    updated_at         REAL,
    completed_at       REAL,
    last_event_at      REAL
);
CREATE INDEX IF NOT EXISTS fits_unique_tag ON fits(unique_tag);
CREATE INDEX IF NOT EXISTS fits_name ON fits(name);
CREATE INDEX IF NOT EXISTS fits_path_prefix ON fits(path_prefix);
CREATE INDEX IF NOT EXISTS fits_status ON fits(status, last_event_at);
CREATE INDEX IF NOT EXISTS fits_max_log_likelihood ON fits(max_log_likelihood);
CREATE INDEX IF NOT EXISTS fits_log_evidence ON fits(log_evidence);
CREATE INDEX IF NOT EXISTS fits_parent_id ON fits(parent_id);
CREATE INDEX IF NOT EXISTS fits_source ON fits(source);
CREATE TABLE IF NOT EXISTS facts (
    fit_key INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    key     TEXT NOT NULL,
    num     REAL,
    txt     TEXT,
    json    TEXT
);
CREATE INDEX IF NOT EXISTS facts_num ON facts(kind, key, num, fit_key);
CREATE INDEX IF NOT EXISTS facts_txt ON facts(kind, key, txt, fit_key);
CREATE INDEX IF NOT EXISTS facts_fit ON facts(fit_key, kind);
CREATE TABLE IF NOT EXISTS nodes (
    fit_key    INTEGER NOT NULL,
    path       TEXT NOT NULL,
    class_path TEXT NOT NULL,
    class_name TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_class_path ON nodes(path, class_path, fit_key);
CREATE INDEX IF NOT EXISTS nodes_class_name ON nodes(path, class_name, fit_key);
CREATE INDEX IF NOT EXISTS nodes_fit ON nodes(fit_key);
CREATE TABLE IF NOT EXISTS payloads (
    fit_key INTEGER NOT NULL,
    name    TEXT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (fit_key, name)
);
"""

# Migrations from version N to N + 1; the list's index is N - 1. A new database is v1 plus every
# migration, so new and migrated files have the same layout.
MIGRATIONS: Final[list[str]] = [
    # v2: covering indexes keyed on fit_key, so that a query can test one fit's facts or nodes with
    # one index seek (compiler.py: leaves that match many fits are probed fit by fit, in order,
    # instead of gathering all their matches first). They replace facts_fit and nodes_fit, which
    # they extend (the writer's DELETE ... WHERE fit_key = ? uses them the same way).
    """
    CREATE INDEX IF NOT EXISTS facts_probe ON facts(fit_key, kind, key, num, txt);
    DROP INDEX IF EXISTS facts_fit;
    CREATE INDEX IF NOT EXISTS nodes_probe ON nodes(fit_key, path, class_name, class_path);
    DROP INDEX IF EXISTS nodes_fit;
    """,
    # v3: the convergence history of each fit (``fit.progress_history``). Not in DATA_TABLES: a
    # reader of a v2 file finds no such table and gives an empty history.
    """
    CREATE TABLE IF NOT EXISTS progress_history (
        point              INTEGER PRIMARY KEY,
        fit_key            INTEGER NOT NULL,
        t                  REAL NOT NULL,
        max_log_likelihood REAL,
        n_samples          INTEGER,
        progress           REAL
    );
    CREATE INDEX IF NOT EXISTS progress_history_fit ON progress_history(fit_key, t);
    """,
]


# Pages of WAL after which a commit copies them into the database file (sqlite's default: 1,000).
# Group commits of a few dozen fits write ~3 MB each, so the default checkpoint ran every other
# commit, writing the same index pages back again and again and holding the commit up: a third of
# the writer's time (docs/performance.md). 10,000 pages (~40 MB of WAL) makes it 10x rarer.
WAL_AUTOCHECKPOINT: Final = 10_000


def writer_pragmas(durability: str = "full") -> list[str]:
    """PRAGMAs of the one writer connection; ``full`` survives power loss, ``normal`` a crash."""
    synchronous = "FULL" if durability == "full" else "NORMAL"
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA busy_timeout=10000",
        "PRAGMA cache_size=-65536",
        "PRAGMA temp_store=MEMORY",
        "PRAGMA foreign_keys=OFF",
        f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}",
    ]


# trusted_schema=OFF: views and triggers of a file from elsewhere may call only harmless functions.
READER_PRAGMAS: Final = ["PRAGMA busy_timeout=10000", "PRAGMA cache_size=-32768", "PRAGMA query_only=1",
                         "PRAGMA trusted_schema=OFF"]
DATA_TABLES: Final = ("fits", "facts", "nodes", "payloads")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def create_statements() -> list[str]:
    """Every statement that makes a new database current, in order."""
    statements = [*_statements(_DDL_V1), *(s for step in MIGRATIONS for s in _statements(step))]
    statements += [f"PRAGMA application_id={APPLICATION_ID}", f"PRAGMA user_version={SCHEMA_VERSION}"]
    return statements


def check_version(application_id: int, user_version: int, has_tables: bool) -> int:
    """The version to migrate from (0 for an empty file); refuses foreign or newer files."""
    if user_version == 0 and application_id == 0 and not has_tables:
        return 0
    if application_id != APPLICATION_ID:
        raise UnsupportedDatabase("not a lensd database (its application_id is not lensd's)")
    if user_version > SCHEMA_VERSION:
        raise UnsupportedDatabase(
            f"database schema version {user_version} is newer than this lensd"
            f" ({SCHEMA_VERSION}); upgrade lensd"
        )
    return user_version


def read_version(conn: sqlite3.Connection) -> int:
    """Check a connection's database is one lensd can read; returns its schema version."""
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    except sqlite3.DatabaseError as exc:
        raise UnsupportedDatabase(f"not a readable sqlite database: {exc}") from None
    return check_version(application_id, user_version, has_tables)


def check_tables(conn: sqlite3.Connection) -> None:
    """Refuse a file whose data tables are missing, or are views (which could compute anything)."""
    kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name IN (?, ?, ?, ?)",
                              DATA_TABLES).fetchall())
    for name in DATA_TABLES:
        if kinds.get(name) != "table":
            found = f"a {kinds[name]}" if name in kinds else "missing"
            raise UnsupportedDatabase(f"not a usable lensd database: its {name} table is {found}")


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a writable connection's database to SCHEMA_VERSION, in one transaction."""
    version = read_version(conn)
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version == 0:
            for statement in create_statements():
                conn.execute(statement)
        else:
            for step in MIGRATIONS[version - 1:]:
                for statement in _statements(step):  # not executescript: it would commit first
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def encode_fact(value: object) -> tuple[float | None, str | None, str | None]:
    """The ``(num, txt, json)`` columns of a fact, so SQL compares values as Python would.

    Numbers and bools go to ``num`` (bools as 1.0/0.0, as Python's ``True == 1``); strings to
    ``txt``; None to ``json='null'``; NaN to ``json='NaN'`` (sqlite stores NaN as NULL, and NaN
    equals nothing in Python either); anything else to its JSON text, so it is kept but only
    ``.is_none()`` tests it.
    """
    import json
    import math

    if isinstance(value, bool):
        return (1.0 if value else 0.0), None, None
    if isinstance(value, (int, float)):
        number = float(value)
        if math.isnan(number):
            return None, None, "NaN"
        return number, None, None
    if isinstance(value, str):
        return None, value, None
    if value is None:
        return None, None, "null"
    return None, None, json.dumps(value, sort_keys=True, default=str)
