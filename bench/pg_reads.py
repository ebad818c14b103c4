"""Reads on PostgreSQL beside sqlite, the same data in the same run: the seed queries (first page
and count) at 10^5 and 10^6 fits, and ``values("samples")`` time and peak memory.

    .venv/bin/python -m bench.pg_reads [--quick]      # --quick: 10^5 fits, 2,000 for values

The server is the tests' throw-away cluster (``tests/pg_server.py``: Debian's binaries, a temp
dir, a private Unix socket), started with ``SERVER`` over the tests' settings, which
docs/performance.md quotes. Each PostgreSQL database is filled by ``lensd migrate`` from the
cached sqlite file of ``bench._dbcache`` (the one bench/query.py and bench/values_samples.py
read; at 10^6 ``bench.web.replicated``'s ten copies of the 10^5 file, as bench/web.py reads), so
both engines hold exactly the same rows; the migrate's own rate is a row too, beside
``executemany`` of the same rows (the choice of COPY for writing PostgreSQL). The figures are
``bench.query.measure`` (median of 5 after a warm-up) and ``bench.values_samples``'s child, run
on each engine in turn.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from bench import Options, Row
from bench._common import ROOT, child, main, ms, rate, times
from bench._dbcache import database
from bench.query import SEEDS, measure
from bench.values_samples import LENSD
from bench.web import replicated

# Over tests/pg_server.py's settings (fsync off: nothing here is about durability; reads never
# fsync, and the fill is a bulk load): memory a dedicated 24 GB node would give a mid-sized
# database. JIT stays at PostgreSQL's default (on).
SERVER = {"shared_buffers": "'1GB'", "effective_cache_size": "'8GB'", "work_mem": "'16MB'",
          "maintenance_work_mem": "'512MB'", "max_wal_size": "'8GB'", "checkpoint_timeout": "'30min'",
          "random_page_cost": "1.1"}
SECTION = "PostgreSQL beside sqlite"


def _pg_server() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' cluster, reused (not copied)
    try:
        import pg_server
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return pg_server


def _fill(server: Any, path: Path) -> tuple[str, float]:
    """A new database on ``server`` holding ``path``'s fits (lensd migrate); its URL and seconds."""
    from lensd.store.migrate import migrate

    url = server.url(server.create_database())
    began = time.perf_counter()
    migrate(path, url)
    return url, time.perf_counter() - began


def _write_rate(server: Any, path: Path, n: int, how: str) -> float:
    """Fits a second written into a fresh database by ``how`` ("copy" as lensd migrate does, or
    "executemany", the alternative, pipelined by psycopg), the same rows in the same 2,000-fit
    transactions; the copy stage alone (no VACUUM, no sequences)."""
    import sqlite3

    from lensd.store import copyends, pgstore

    url = server.url(server.create_database())
    pgstore.prepare_database(url)
    columns = copyends.schema_columns()
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    began = time.perf_counter()
    with pgstore.connect(url) as conn:
        for low in range(0, n, 2000):
            with conn.transaction(), conn.cursor() as cursor:
                for table, cols in columns.items():
                    rows = source.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE fit_key > ? AND "
                                          f"fit_key <= ? ORDER BY {copyends.TABLES[table]}", [low, low + 2000])
                    names = ", ".join(cols)
                    if how == "copy":
                        with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row(row)
                    else:
                        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('%s' for _ in cols)})",
                                           rows.fetchall())
    source.close()
    return n / (time.perf_counter() - began)


def _size(n: int) -> str:
    return f"10^{len(str(n)) - 1}"


def _query_rows(sizes: list[int], lite: dict[int, Any], pg: dict[int, Any]) -> list[Row]:
    labels = " / ".join(_size(n) for n in sizes)
    rows = []
    for kind, title in (("first_page", "seed query, first 256 fits"), ("count", "seed query, count")):
        for name in SEEDS:
            mine = [pg[n][name][kind] for n in sizes]
            theirs = [lite[n][name][kind] for n in sizes]
            rows.append(Row(f"{SECTION}: {title} ({labels})", name,
                            " / ".join(ms(f).replace(" ms", "") for f in mine) + " ms",
                            "sqlite " + " / ".join(ms(f).replace(" ms", "") for f in theirs) + " ms",
                            f"{times(mine[-1] / theirs[-1])} sqlite at {_size(sizes[-1])}"))
    return rows


def run(options: Options) -> list[Row]:
    server_module = _pg_server()
    sizes = [10**5] if options.quick else [10**5, 10**6]
    server = server_module.start_server(SERVER)
    rows: list[Row] = []
    try:
        lite, pg, fills = {}, {}, []
        for n in sizes:  # 10^6: ten copies of the 10^5 file, as bench/web.py reads (the builder is too slow here)
            path = replicated(options.cache, 10**5, 10) if n == 10**6 else database(options.cache, n)[0]
            url, seconds = _fill(server, path)
            fills.append((n, seconds))
            lite[n], pg[n] = measure(path), measure(url)
        for n, seconds in fills:
            rows.append(Row(f"{SECTION}: lensd migrate sqlite -> PostgreSQL", f"{_size(n)} fits (COPY, VACUUM "
                            "ANALYZE included)", rate(n / seconds, "fits"), f"{seconds:.0f} s"))
        m = 10**4
        path, _ = database(options.cache, m)
        many, copied = _write_rate(server, path, m, "executemany"), _write_rate(server, path, m, "copy")
        rows.append(Row(f"{SECTION}: lensd migrate sqlite -> PostgreSQL", f"{_size(m)} fits, the copy stage: COPY vs "
                        "executemany", rate(copied, "fits"), f"executemany {rate(many, 'fits')}",
                        f"{times(copied / many)} faster"))
        rows += _query_rows(sizes, lite, pg)
        n = 2000 if options.quick else 20_000
        path, _ = database(options.cache, n, n_samples=1000)
        url, _ = _fill(server, path)
        engines = {"sqlite": child(LENSD, str(path), "0", timeout=1200), "postgresql": child(LENSD, url, "0",
                                                                                              timeout=1200)}
        mine, theirs = engines["postgresql"], engines["sqlite"]
        section = f'{SECTION}: values("samples"), {n:,} fits x 1,000 samples'
        rows.append(Row(section, "time per fit", ms(mine["seconds"] / mine["fits"]),
                        f"sqlite {ms(theirs['seconds'] / theirs['fits'])}",
                        f"{times(mine['seconds'] / theirs['seconds'])} sqlite"))
        rows.append(Row(section, "peak memory", f"{mine['peak_rss_mb']:.0f} MB",
                        f"sqlite {theirs['peak_rss_mb']:.0f} MB",
                        f"{times(mine['peak_rss_mb'] / theirs['peak_rss_mb'])} sqlite"))
    finally:
        server.stop()
    return rows


if __name__ == "__main__":
    main(run, __doc__)
