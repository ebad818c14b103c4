"""``lensd query``, ``lensd export`` and ``lensd jobs`` with ``--db postgresql://...``: the same
output as from the sqlite file the PostgreSQL database was migrated from (``lensd migrate``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import lensd_cli
from pg_server import PgServer

from lensd.ingest import run as ingesting

FIXTURES = Path(__file__).parent / "fixtures"
QUERIES = ["", 'unique_tag == "lens_c"', "model.galaxies.lens.mass.einstein_radius > 1.0 | status == 'failed'",
           'info["telescope"] > "B"']


@pytest.fixture(scope="module")
def databases(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A sqlite file of the PyAutoFit fixtures, and a PostgreSQL database migrated from it."""
    db = tmp_path_factory.mktemp("pgcli") / "lensd.sqlite"
    report = ingesting.ingest([FIXTURES / "autofit", FIXTURES / "autolens" / "output"], db)
    assert len(report.ingested) > 10, report
    name = pg_server.create_database()
    url = pg_server.url(name)
    copied = lensd_cli("migrate", "--quiet", "--from", str(db), "--to", url)
    assert copied.returncode == 0, copied.stderr
    yield db, url
    pg_server.drop_database(name)


def _both(databases: tuple[Path, str], *args: str) -> str:
    """The command's stdout from the sqlite file; asserts PostgreSQL's is the same."""
    db, url = databases
    lite = lensd_cli(*args, "--db", str(db))
    pg = lensd_cli(*args, "--db", url)
    assert lite.returncode == 0, lite.stderr
    assert pg.returncode == 0, pg.stderr
    assert pg.stdout == lite.stdout, args
    return lite.stdout


def test_query_and_export_on_postgresql_print_what_sqlite_prints(databases: tuple[Path, str]) -> None:
    shown = [_both(databases, "query", expression, "--all") for expression in QUERIES]  # the table
    assert shown[0].count("\n") > 10 and "no fits" not in shown[1] + shown[2] + shown[3]
    assert _both(databases, "query", QUERIES[2], "--format", "csv")
    assert _both(databases, "query", "", "--order-by", "-max_log_likelihood", "--limit", "5", "--format", "json")
    assert _both(databases, "export", "--format", "csv").count("\n") > 10
    assert _both(databases, "export", "--format", "json", "--median", "--all", "--query", QUERIES[3])


def test_jobs_reads_the_database_directly_on_either_engine(databases: tuple[Path, str]) -> None:
    rows = json.loads(_both(databases, "jobs", "--format", "json", "--limit", "7"))
    assert len(rows) == 7 and [r["updated_at"] for r in rows] == sorted((r["updated_at"] for r in rows), reverse=True)
    assert json.loads(_both(databases, "jobs", "--format", "json", "--status", "completed"))
    db, url = databases  # the table's ages move with the clock: compare its ids
    tables = [lensd_cli("jobs", "--limit", "7", "--db", where).stdout.splitlines() for where in (str(db), url)]
    assert [line.split()[0] for line in tables[0]] == [line.split()[0] for line in tables[1]]
    assert len(tables[0]) == 8  # a header and seven fits


def test_lensd_db_in_the_environment_may_be_a_url(databases: tuple[Path, str]) -> None:
    db, url = databases
    assert lensd_cli("query", "--format", "json", env={"LENSD_DB": url}).stdout == \
        lensd_cli("query", "--format", "json", "--db", str(db)).stdout


def test_a_password_in_the_url_is_never_printed(pg_server: PgServer) -> None:
    url = f"postgresql://lensd:hunter2-secret@127.0.0.1:{pg_server.port}/postgres"
    for args in (("query", "--db", url), ("export", "--db", url), ("jobs", "--db", url)):
        failed = lensd_cli(*args)
        assert failed.returncode == 1, failed.stderr
        assert "hunter2-secret" not in failed.stdout + failed.stderr
        assert failed.stderr.count("\n") == 1 and "***" in failed.stderr
