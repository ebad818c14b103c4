"""The dashboard on PostgreSQL: the same survey, copied into a real PostgreSQL server by
``lensd migrate``, read by the dashboard's own reads, answers exactly as the sqlite file does --
counts, the overview's lists and sbatch lines, the fits table, one fit, histograms coloured by a
class and by an info key, filtered by a query, and binned scatters -- and ``lensd web --db URL``
serves it to a real browser."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from test_web import survey  # noqa: F401 - the 33-fit survey fixture
from webtools import browser, url_line

from lensd.store.migrate import migrate
from lensd.web.data import LocalSource, parse_query

X = "model.galaxies.lens.mass.einstein_radius"
Y = "model.galaxies.lens.mass.centre.centre_0"
PLOTS = [  # (query, x, colour, y)
    ("", X, "", ""),
    ("", X, "model.galaxies.lens.mass", ""),
    ('info["survey"] == "SLACS"', X, "model.galaxies.lens.mass", ""),
    ('unique_tag != "lens_2"', X, 'info["survey"]', ""),
    ("", "max_log_likelihood", "status", ""),
    ("", X, "", Y),
    (f"{X} > 1.0", X, "unique_tag", Y),
]


@pytest.fixture
def both(survey: Path, pg_url: str) -> Any:  # noqa: F811
    migrate(survey, pg_url)
    sqlite, postgres = LocalSource(survey), LocalSource(pg_url)
    try:
        yield sqlite, postgres
    finally:
        sqlite.close()
        postgres.close()


def _fits(source: LocalSource, expression: str) -> list[dict[str, Any]]:
    state = parse_query(expression, "max_log_likelihood", descending=True).state
    return [fit.to_dict() for fit in source.page(state, 0, 100)]


def test_every_read_of_the_dashboard_is_the_same_on_both_engines(both: tuple[LocalSource, LocalSource]) -> None:
    sqlite, postgres = both
    assert postgres.dialect.name == "postgresql"
    now = 2_000_000_000.0
    one, other = sqlite.overview(now), postgres.overview(now)
    assert one == other
    assert one["counts"] == {"running": 1, "completed": 30, "failed": 2, "lost": 0}
    for expression in ("", 'info["survey"] == "SLACS"', 'status == "failed"', f"{X} > 1.0"):
        state = parse_query(expression).state
        assert sqlite.count(state) == postgres.count(state) > 0, expression
        assert _fits(sqlite, expression) == _fits(postgres, expression), expression
    for fit_id in ("fit-50", "fit-40", "fit-3"):
        a, b = sqlite.fit(fit_id), postgres.fit(fit_id)
        assert a is not None and b is not None
        assert a.to_dict() == b.to_dict() and sqlite.payload_names(a) == postgres.payload_names(b)
        assert a.progress_history == b.progress_history
    assert postgres.fit("nowhere") is None


def test_histograms_and_scatters_count_the_same_on_both_engines(both: tuple[LocalSource, LocalSource]) -> None:
    sqlite, postgres = both
    for expression, x, colour, y in PLOTS:
        state = parse_query(expression).state
        one = sqlite.histogram(state, x, colour, y, bins=7)
        other = postgres.histogram(state, x, colour, y, bins=7)
        assert one == other, (expression, x, colour, y)
        assert one["series"], (expression, x, colour, y)
        if x == X and not y:  # every fit has an Einstein radius: each is counted once
            assert one["total"] == sqlite.count(state), (expression, colour)


BLOCK_PLOTS = [  # (query, x, colour, y): what the fit-key blocks count (lensd/web/blockhist.py)
    ("", X, "", ""),
    ("", X, "model.galaxies.lens.mass", ""),
    ('info["survey"] == "SLACS"', X, "model.galaxies.lens.mass", ""),
    (f"{X} > 1.0", X, "model.galaxies.lens.mass", ""),
    ('model.galaxies.lens.mass == "Isothermal" | unique_tag == "lens_3"', 'info["index"]', "", ""),
    ('~(unique_tag == "lens_1") & info["index"] >= 5', Y, "model.galaxies.lens.mass", ""),
    ('unique_tag == "nobody"', X, "model.galaxies.lens.mass", ""),
    ("", X, 'info["survey"]', ""),
    (f"{X} > 1.0", Y, "unique_tag", ""),
    ('info["survey"] == "SLACS"', 'info["index"]', 'info["survey"]', ""),
    ("", X, "", Y),  # binned scatters
    (f"{X} > 1.0", X, "unique_tag", Y),
    ('~(unique_tag == "lens_1")', 'info["index"]', "model.galaxies.lens.mass", X),
    ('unique_tag == "nobody"', X, "", Y),
]


# Values on the edges floating point gets wrong: 0.2 to 0.9 in 7 bins puts 0.3 on edge 1, where
# floor((0.3 - 0.2) / step) is 0, and 0.2 + 7 * step is below 0.9; 0.4 to 1.1 in 7 bins has 0.5 and
# 1.0 on edges, floored to the bin below; 0.0 to 0.8 in 40 bins has 0.7 just below edge 35
# (0.7000000000000001), in bin 34, where 0.7 / step is 35.0.
EDGE_INFOS: list[dict[str, Any]] = [
    {"a": (i % 9) / 10, "b": (i % 8 + 2) / 10, "d": (i * 5 % 8 + 4) / 10, "c": f"t{i % 3}"} for i in range(36)]
EDGE_PLOTS = [  # (query, x, colour, y, bins)
    *((query, x, colour, "", bins) for query in ("", 'info["c"] != "t1"') for x in ('info["a"]', 'info["b"]')
      for colour in ("", 'info["c"]') for bins in (7, 8, 40)),
    *(("", x, colour, y, 7) for x, y in (('info["a"]', 'info["b"]'), ('info["b"]', 'info["d"]'))
      for colour in ("", 'info["c"]')),
    ('info["c"] != "t1"', 'info["d"]', 'info["c"]', 'info["b"]', 8),
]


def _by_the_edges(plot: dict[str, Any], query: str, x: str, colour: str, y: str, bins: int) -> dict[str, Any]:
    """``plot``'s series as the rule counts them from ``EDGE_INFOS`` (bin i holds edges[i] <= v <
    edges[i + 1], the last also v == high), with ``plot``'s edges, which must end at the values'
    minimum and maximum."""
    infos = [info for info in EDGE_INFOS if not query or info["c"] != "t1"]
    keys = [key[len('info["'):-2] for key in (x, y) if key]
    series: dict[str, Any] = {}
    for axis, key in enumerate(keys):
        edges = plot["edges"][axis]
        assert len(edges) == bins + 1
        assert (edges[0], edges[-1]) == (min(i[key] for i in infos), max(i[key] for i in infos))
    for info in infos:
        cut = [max(b for b in range(bins) if plot["edges"][axis][b] <= info[key]) for axis, key in enumerate(keys)]
        name = info["c"] if colour else "all"
        if y:
            cells = series.setdefault(name, {})
            cells[f"{cut[0]},{cut[1]}"] = cells.get(f"{cut[0]},{cut[1]}", 0) + 1
        else:
            series.setdefault(name, [0] * bins)[cut[0]] += 1
    return series


@pytest.fixture
def on_edges(tmp_path: Path, pg_server: Any) -> Any:
    """``EDGE_INFOS`` as a sqlite file and in a PostgreSQL database of its own (``both`` has pg_url)."""
    name = pg_server.create_database()
    sources = _odd_survey(tmp_path, pg_server.url(name), EDGE_INFOS)
    try:
        yield sources
    finally:
        for source in sources:
            source.close()
        pg_server.drop_database(name)


def test_histograms_from_the_blocks_are_the_sql_histograms(both: tuple[LocalSource, LocalSource],
                                                            on_edges: list[LocalSource],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted from the blocks (served: not None) and by the SQL statement (blockhist off), the
    same edges and the same counts per bin (or cell) and class, on both engines; what the blocks do
    not hold (a colour by a number or a column, a column on an axis) is left to SQL. Values on the
    bins' edges (``EDGE_INFOS``) fall in the same bins on every path, the rule's."""
    from lensd.query import text
    from lensd.web import blockhist

    edge_cases = []
    for source in on_edges:
        for query, x, colour, y, bins in EDGE_PLOTS:
            state = parse_query(query).state
            assert blockhist.histogram(source.rows, source.dialect, state, text.parse_operand(x), colour, bins,
                                       text.parse_operand(y) if y else None) is not None, (query, x, colour, y)
            edge_cases.append((source, state, (query, x, colour, y, bins),
                               source.histogram(state, x, colour, y, bins=bins)))
    cases = []
    for source in both:
        for expression, x, colour, y in BLOCK_PLOTS:
            state = parse_query(expression).state
            assert blockhist.histogram(source.rows, source.dialect, state, text.parse_operand(x), colour, 7,
                                       text.parse_operand(y) if y else None) is not None, \
                (source.dialect.name, expression, x, colour, y)
            cases.append((source, state, x, colour, y, source.histogram(state, x, colour, y, bins=7)))
        state = parse_query("").state
        for colour in ('info["index"]', "status", "model.galaxies.lens.mass.einstein_radius"):  # numbers, a column
            assert blockhist.histogram(source.rows, source.dialect, state, text.parse_operand(X), colour, 7) is None
        assert blockhist.histogram(source.rows, source.dialect, state, text.parse_operand(X), "", 7,
                                   text.parse_operand("max_log_likelihood")) is None
    monkeypatch.setattr(blockhist, "histogram", lambda *args: None)
    for source, state, x, colour, y, from_blocks in cases:
        assert from_blocks == source.histogram(state, x, colour, y, bins=7), (source.dialect.name, x, colour, y)
    for source, state, (query, x, colour, y, bins), from_blocks in edge_cases:
        plot = (source.dialect.name, query, x, colour, y, bins)
        assert from_blocks == source.histogram(state, x, colour, y, bins=bins), plot
        assert from_blocks["series"] == _by_the_edges(from_blocks, query, x, colour, y, bins), plot
    assert [case[-1]["total"] for case in cases[:len(BLOCK_PLOTS)]] == \
        [case[-1]["total"] for case in cases[len(BLOCK_PLOTS):]]
    totals = {plot: case[-1]["total"] for plot, case in zip(BLOCK_PLOTS, cases, strict=False)}
    assert all(totals.pop(plot) == 0 for plot in BLOCK_PLOTS if plot[0] == 'unique_tag == "nobody"')
    assert all(totals.values())
    scatters = [case[-1] for case in cases if case[4]]
    assert all(len(scatter["edges"]) == 2 for scatter in scatters if scatter["total"])


def _odd_survey(tmp_path: Path, pg_url: str, infos: list[dict[str, Any]]) -> list[LocalSource]:
    from records_factory import record
    from test_web import _write

    db = tmp_path / "odd.sqlite"
    _write(db, [("submit", {"record": record(i, n_samples=5, info=info)}) for i, info in enumerate(infos)])
    migrate(db, pg_url)
    return [LocalSource(db), LocalSource(pg_url)]


def test_scatters_of_facts_some_fits_lack_and_of_spans_that_overflow(
        tmp_path: Path, pg_url: str, pg_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the blocks and from SQL alike, on both engines: a scatter counts only the fits with both
    values, coloured by a text info key that is a number on some fits without a y (so the blocks
    may count it); values whose span overflows (-1.5e308 to 1.5e308) are binned too (they were an
    empty plot), alone or with a y of a lone 1.5e308."""
    from lensd.query import text
    from lensd.web import blockhist

    partial = [{"a": float(i % 6)} | ({"b": -i / 3, "c": f"t{i % 3}"} if i % 4 else {"c": 7.0})
               for i in range(24)]
    wide = [{"a": 1.5e308 if i % 2 else -1.5e308, "b": float(i)} for i in range(6)]
    (tmp_path / "wide").mkdir()
    second = pg_server.create_database()
    sources = _odd_survey(tmp_path, pg_url, partial) + _odd_survey(tmp_path / "wide", pg_server.url(second), wide)
    plots = [("", 'info["a"]', 'info["c"]', 'info["b"]'), ('info["a"] >= 1', 'info["b"]', 'info["c"]', 'info["a"]'),
             ("", 'info["a"]', "", 'info["b"]'), ("", 'info["a"]', "", "")]
    try:
        served = []
        for source in sources:
            for expression, x, colour, y in plots:
                state = parse_query(expression).state
                counted = blockhist.histogram(source.rows, source.dialect, state, text.parse_operand(x), colour, 7,
                                              text.parse_operand(y) if y else None)
                assert counted is not None, (source.dialect.name, expression, x, colour, y)
                served.append(source.histogram(state, x, colour, y, bins=7))
        monkeypatch.setattr(blockhist, "histogram", lambda *args: None)
        by_sql = [source.histogram(parse_query(expression).state, x, colour, y, bins=7)
                  for source in sources for expression, x, colour, y in plots]
    finally:
        for source in sources:
            source.close()
        pg_server.drop_database(second)
    assert served == by_sql
    partial_sqlite, wide_sqlite = served[:len(plots)], served[2 * len(plots):3 * len(plots)]
    assert partial_sqlite[0]["total"] == 18 and set(partial_sqlite[0]["series"]) == {"t0", "t1", "t2"}
    assert partial_sqlite[2]["total"] == 18 and partial_sqlite[3]["total"] == 24
    # (the second selects the three fits at +1.5e308: a lone y, its edges steps of 2**-40 of it)
    assert [plot["total"] for plot in wide_sqlite] == [6, 3, 6, 6]
    assert [plot["edges"][0][0] for plot in wide_sqlite] == [-1.5e308, 1.0, -1.5e308, -1.5e308]
    assert [plot["edges"][0][-1] for plot in wide_sqlite] == [1.5e308, 5.0, 1.5e308, 1.5e308]
    assert wide_sqlite[3]["series"] == {"all": [3, 0, 0, 0, 0, 0, 3]}


INFINITE_INFOS: list[dict[str, Any]] = [  # fit 3 has a = inf, fit 7 a = -inf, fit 9 b = inf
    {"a": {3: math.inf, 7: -math.inf}.get(i, float(i % 5)), "b": math.inf if i == 9 else i / 2, "c": f"t{i % 2}"}
    for i in range(12)]
INFINITE_PLOTS = [  # (query, x, colour, y, fits plotted, fits left out)
    ("", 'info["a"]', "", "", 10, 2),
    ('info["b"] >= 1', 'info["a"]', 'info["c"]', "", 8, 2),  # fits 2 to 11, of which 3 and 7 are infinite
    ("", 'info["a"]', "", 'info["b"]', 9, 3),
    ('info["c"] == "t1"', 'info["b"]', "", 'info["a"]', 3, 3),  # fits 1, 3, 5, 7, 9, 11
    ("", "max_log_likelihood", "", "", 11, 1),  # a column: SQL alone
    ("", "max_log_likelihood", 'info["c"]', "", 11, 1),
]


def test_an_infinite_value_is_left_out_of_the_bins_not_the_end_of_them(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite and PostgreSQL store inf and -inf (an info value, a log likelihood of inf). One of
    them made an end of the edges infinite, so the plot was empty, from the blocks and in SQL. Only
    the finite values are binned, with finite edges, and the fits left out are counted apart: the
    same from the blocks as from SQL, on both engines."""
    from records_factory import record
    from test_web import _write

    from lensd.query import text
    from lensd.web import blockhist

    db = tmp_path / "infinite.sqlite"
    records = [record(i, n_samples=5, info=info) for i, info in enumerate(INFINITE_INFOS)]
    records[5]["samples"]["log_likelihood"][2] = math.inf
    _write(db, [("submit", {"record": r}) for r in records])
    migrate(db, pg_url)
    sources = [LocalSource(db), LocalSource(pg_url)]
    try:
        served = []
        for source in sources:
            for query, x, colour, y, _, _ in INFINITE_PLOTS:
                state = parse_query(query).state
                counted = blockhist.histogram(source.rows, source.dialect, state, text.parse_operand(x), colour, 7,
                                              text.parse_operand(y) if y else None)
                assert (counted is None) == (x == "max_log_likelihood"), (source.dialect.name, query, x, colour, y)
                served.append(source.histogram(state, x, colour, y, bins=7))
        monkeypatch.setattr(blockhist, "histogram", lambda *args: None)
        by_sql = [source.histogram(parse_query(query).state, x, colour, y, bins=7)
                  for source in sources for query, x, colour, y, _, _ in INFINITE_PLOTS]
    finally:
        for source in sources:
            source.close()
    assert served == by_sql
    for plot, (query, x, colour, y, plotted, left_out) in zip(served, INFINITE_PLOTS * 2, strict=True):
        assert plot["total"] == plotted, (query, x, colour, y)
        assert plot["edges"] and all(map(math.isfinite, (e for axis in plot["edges"] for e in axis)))
        counts = [n for series in plot["series"].values() for n in (series.values() if y else series)]
        assert sum(counts) == plotted
        assert plot["left_out"] == left_out, (query, x, colour, y)


def test_a_histograms_labels_do_not_depend_on_the_order_of_its_rows() -> None:
    """More labels than colours, tied at the cut: the same eight kept, in the same order, and the
    rest as "other", for the rows in SQL's order (by bin) and in blockhist's (by label)."""
    from lensd.web import aggregate

    rows = [(i % 3, f"tag{i:02d}", None, 1 + (i < 4)) for i in range(12)]
    by_label = aggregate._series(rows, "x", "", "unique_tag", [[0.0, 1.0, 2.0, 3.0]], 3)
    by_bin = aggregate._series(sorted(rows), "x", "", "unique_tag", [[0.0, 1.0, 2.0, 3.0]], 3)
    assert by_label == by_bin and list(by_label["series"]) == list(by_bin["series"])
    assert list(by_label["series"]) == ["tag00", "tag01", "tag02", "tag03", "tag04", "tag05", "tag06",
                                        "tag07", "other"]


def test_lensd_web_serves_a_postgresql_database(survey: Path, pg_url: str) -> None:  # noqa: F811
    import subprocess
    import sys

    migrate(survey, pg_url)
    process = subprocess.Popen([sys.executable, "-m", "lensd", "web", "--db", pg_url, "--bind", "127.0.0.1:0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = url_line(process)
        with browser() as page:
            page.goto(url)
            assert page.text_content('[data-status="completed"]') == "30"
            assert page.text_content('[data-status="failed"]') == "2"
            page.goto(url.split("/?", 1)[0] + "/fit/fit-50")
            assert page.text_content("#history-points") == "9"
    finally:
        process.terminate()
        process.wait(30)
