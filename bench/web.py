"""The web dashboard at 10^5 and 10^6 fits: server time of the first pages and of a histogram,
and the memory of the web process while paging.

    .venv/bin/python -m bench.web [--quick]          # --quick: 10^4 and 10^5

A real ``lensd web`` process serves a cached database (bench._dbcache: the writer's own rows; 10^6
is ten copies of the 10^5 one, ``replicated``).
Each figure is the server's own time (the ``Server-Timing`` header: request in to response
start, which includes the SQL and the HTML), median of 5 after one warm-up request. The baseline
is the same reads through the public API in this process (``Aggregator``: the first 50 fits and
``len``), so the ratio is what the web layer adds. Memory: the web process's resident set after
the requests above, after paging through 150 pages of 50 fits, and after 300 (15,000 fits read
and rendered). The reader's page cache (32 MiB, ``schema.READER_PRAGMAS``) fills as pages are read,
so "flat" is judged from page 150 to page 300: a process that grows per page read (a leak) grows
there; one that filled its bounded caches does not.
"""

from __future__ import annotations

import http.client
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from bench import Options, Row
from bench._common import _readline, main, ms, verdict
from bench._dbcache import database

PAGE = 50
PAGES = 300
TARGET_PAGE_MS = 300.0
TARGET_HISTOGRAM_MS = 1000.0
X = "model.galaxies.lens.mass.einstein_radius"
Y = "model.galaxies.lens.mass.centre.centre_0"
CLASS = "model.galaxies.lens.mass"
REQUESTS: dict[str, str] = {
    "fits, first page": "/fits",
    "fits, first page of einstein_radius > 1.0": "/fits?q=" + quote(f"{X} > 1.0"),
    "overview page": "/",
    "overview refresh (/partial/overview)": "/partial/overview",
    "histogram of einstein_radius": f"/api/histogram?x={quote(X)}",
    "histogram coloured by mass class": f"/api/histogram?x={quote(X)}&colour={quote(CLASS)}",
    "histogram of einstein_radius > 1.0": f"/api/histogram?x={quote(X)}&q=" + quote(f"{X} > 1.0"),
    "histogram: binned scatter of einstein_radius by centre_0": f"/api/histogram?x={quote(X)}&y={quote(Y)}",
}


def _get(base: str, token: str, path: str) -> float:
    """The server's time for one GET (Server-Timing), in seconds."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=600)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 200, (path, reply.status)
        timing = reply.getheader("server-timing") or ""
        return float(timing.split("dur=")[1]) / 1000
    finally:
        conn.close()


def _median(work: Callable[[], float], repeat: int = 5) -> float:
    work()
    return statistics.median(work() for _ in range(repeat))


def _wall(work: Callable[[], Any]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def replicated(cache: Path, n: int, copies: int) -> Path:
    """``n * copies`` fits: ``copies`` copies of the cached ``n``-fit database's rows (fit keys
    shifted, ids suffixed ``-k``), the indexes built after the rows.

    The same rows, indexes and count blocks the writer makes, in a few CPU-minutes less than planning 10^6 new
    records would take (bench._dbcache): on a machine shared by several engineers the builder did
    not finish in an hour. Values repeat ``copies`` times, which changes no plan or cost measured here.
    """
    from lensd.store import blocks, schema

    base, _ = database(cache, n)
    target = cache / f"{base.stem}-x{copies}.sqlite"
    if target.exists():
        return target
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    conn = sqlite3.connect(partial, isolation_level=None)
    try:
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000", "temp_store=MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        statements = schema.create_statements()
        for statement in statements:
            if not statement.upper().startswith("CREATE INDEX") and not statement.upper().startswith("DROP"):
                conn.execute(statement)
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{base}?mode=ro",))
        columns = ", ".join(schema.FIT_COLUMNS[1:])
        conn.execute("BEGIN")
        for k in range(copies):
            shift = k * n
            conn.execute(f"INSERT INTO fits (fit_key, id, {columns}) SELECT fit_key + ?, "
                         f"CASE WHEN ? = 0 THEN id ELSE id || '-' || ? END, {columns} FROM src.fits", (shift, k, k))
            conn.execute("INSERT INTO facts SELECT fit_key + ?, kind, key, num, txt, json FROM src.facts", (shift,))
            conn.execute("INSERT INTO nodes SELECT fit_key + ?, path, class_path, class_name FROM src.nodes", (shift,))
            conn.execute("INSERT INTO payloads SELECT fit_key + ?, name, data FROM src.payloads", (shift,))
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE src")
        for statement in statements:
            if statement.upper().startswith("CREATE INDEX"):
                conn.execute(statement)
        conn.execute("BEGIN")
        blocks.rebuild(conn)  # the count blocks of the copied rows, as a migration builds them
        conn.execute("COMMIT")
        conn.execute("PRAGMA optimize")
    finally:
        conn.close()
    os.replace(partial, target)
    return target


def measure(path: Path) -> dict[str, float]:
    import lensd

    agg = lensd.Aggregator.from_database(path)
    found = {"api: first 50 fits + len": _median(lambda: _wall(lambda: (list(islice(agg.fits(), PAGE)), len(agg))))}
    agg.close()
    process = subprocess.Popen([sys.executable, "-m", "lensd", "web", "--db", str(path), "--bind", "127.0.0.1:0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = _readline(process, 120)
        assert line.startswith("lensd web: "), line
        url = line.removeprefix("lensd web: ").strip()
        base, token = url.split("/?")[0], url.rsplit("token=", 1)[1]
        for name, request in REQUESTS.items():
            found[name] = _median(partial(_get, base, token, request))
        found["rss after page 1 (MB)"] = _rss_mb(process.pid)
        for page in range(1, PAGES + 1):
            _get(base, token, f"/fits?page={page}")
            if page == PAGES // 2:
                found["rss half way (MB)"] = _rss_mb(process.pid)
        found["rss after 300 pages (MB)"] = _rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(60)
    return found


def _size(n: int) -> str:
    return f"10^{len(str(n)) - 1}"


def run(options: Options) -> list[Row]:
    sizes = [10**4, 10**5] if options.quick else [10**5, 10**6]
    results = {n: measure(replicated(options.cache, 10**5, 10) if n == 10**6 else database(options.cache, n)[0])
               for n in sizes}
    labels = " / ".join(_size(n) for n in sizes)
    section = f"web dashboard: server time ({labels} fits)"
    rows = []
    base = [results[n]["api: first 50 fits + len"] for n in sizes]
    for name in REQUESTS:
        figures = [results[n][name] for n in sizes]
        limit = TARGET_HISTOGRAM_MS if name.startswith("histogram") else TARGET_PAGE_MS
        target = f"<{limit:.0f} ms at {_size(sizes[-1])}: {verdict(figures[-1] * 1000 < limit)}" \
            if name in ("fits, first page", "overview page", "histogram of einstein_radius") else ""
        ratio = f"{figures[-1] / base[-1]:.1f}x api" if name.startswith("fits") else ""
        rows.append(Row(section, name, " / ".join(ms(f) for f in figures),
                        baseline=" / ".join(ms(b) for b in base) if name.startswith("fits") else "",
                        ratio=ratio, target=target))
    for n in sizes:
        first, half, after = (results[n][k] for k in ("rss after page 1 (MB)", "rss half way (MB)",
                                                      "rss after 300 pages (MB)"))
        rows.append(Row("web dashboard: memory while paging",
                        f"{_size(n)} fits: RSS after 1, {PAGES // 2} and {PAGES} pages",
                        f"{first:.0f} MB -> {half:.0f} MB -> {after:.0f} MB",
                        ratio=f"{after - half:+.0f} MB over the last {PAGES - PAGES // 2}",
                        target=f"flat: {verdict(after - half < 20)}"))
    return rows


if __name__ == "__main__":
    main(run, __doc__)
