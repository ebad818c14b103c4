"""``lensd query`` and ``lensd export`` from the shell, and the notebook side (rows, DataFrames, HTML).

Every seed query of SPEC §4 is run as text on the command line, as a real process, and must give
the fits the Python API gives: the ``gaussian`` equivalents on PyAutoFit's own output, the literal
lens queries on synthetic lens fits, from the file and from a running daemon.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import DIR_OUTPUT, SENSITIVITY_OUTPUT, lensd_cli

import lensd
from lensd.cli import export
from lensd.demo.synthetic import write_fit, write_fits
from lensd.store import flatrows

Build = Callable[[Any], Any]
QUERY_KEYS = ["id", "unique_tag", "name", "status", "max_log_likelihood"]


def _class(path: str) -> type:
    """A stand-in class: only its module and name matter to a query (nothing is imported)."""
    module, _, name = path.rpartition(".")
    cls = type(name, (), {})
    cls.__module__, cls.__qualname__ = module, name
    return cls


Gaussian = _class("toy_models.Gaussian")
Isothermal = _class("lensmodels.Isothermal")

# text for `lensd query` -> the same query in Python; each has at least one answer (checked below)
GAUSSIAN_SEEDS: dict[str, Build] = {
    "model.gaussian == toy_models.Gaussian": lambda a: a.query(a.model.gaussian == Gaussian),
    'model.gaussian == "Gaussian"': lambda a: a.query(a.model.gaussian == "Gaussian"),
    "model.gaussian.centre > 35.0": lambda a: a.query(a.model.gaussian.centre > 35.0),
    "(model.gaussian == toy_models.Gaussian) & (model.gaussian.centre > 35.0)":
        lambda a: a.query((a.model.gaussian == Gaussian) & (a.model.gaussian.centre > 35.0)),
    'model.gaussian.centre > 45.0 | unique_tag == "gaussian_b"':
        lambda a: a.query((a.model.gaussian.centre > 45.0) | (a.unique_tag == "gaussian_b")),
    'unique_tag == "gaussian_a"': lambda a: a.query(a.unique_tag == "gaussian_a"),
    'search.unique_tag == "gauss_exp_c"': lambda a: a.query(a.search.unique_tag == "gauss_exp_c"),
    'info["telescope"] == "A"': lambda a: a.query(a.info["telescope"] == "A"),
    'info["exposure_s"] >= 250': lambda a: a.query(a.info["exposure_s"] >= 250),
    "model == toy_models.Gaussian": lambda a: a.query(a.model == Gaussian),
}
LENS_SEEDS: dict[str, Build] = {
    'model.galaxies.lens.mass == "Isothermal"': lambda a: a.query(a.model.galaxies.lens.mass == "Isothermal"),
    "model.galaxies.lens.mass == lensmodels.Isothermal":
        lambda a: a.query(a.model.galaxies.lens.mass == Isothermal),
    "model.galaxies.lens.mass.einstein_radius > 1.0":
        lambda a: a.query(a.model.galaxies.lens.mass.einstein_radius > 1.0),
    '(model.galaxies.lens.mass == "Isothermal") & (model.galaxies.lens.mass.einstein_radius > 1.0)':
        lambda a: a.query((a.model.galaxies.lens.mass == "Isothermal")
                          & (a.model.galaxies.lens.mass.einstein_radius > 1.0)),
    'model.galaxies.lens.mass.einstein_radius > 1.0 | unique_tag == "lens_3"':
        lambda a: a.query((a.model.galaxies.lens.mass.einstein_radius > 1.0) | (a.unique_tag == "lens_3")),
    'agg.unique_tag == "lens_3"': lambda a: a.query(a.unique_tag == "lens_3"),
    'search.unique_tag == "lens_3"': lambda a: a.query(a.search.unique_tag == "lens_3"),
    'info["survey"] == "SLACS"': lambda a: a.query(a.info["survey"] == "SLACS"),
    'status == "running"': lambda a: a.query(a.status == "running"),
    '~(info["survey"] == "SLACS") & median.galaxies.lens.mass.einstein_radius < 1.5':
        lambda a: a.query(~(a.info["survey"] == "SLACS") & (a.median.galaxies.lens.mass.einstein_radius < 1.5)),
}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shell") / "lensd.sqlite"
    result = lensd_cli("ingest", str(DIR_OUTPUT), str(SENSITIVITY_OUTPUT), "--db", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    return path


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def _lens_fits(root: Path) -> Path:
    """Twelve finished synthetic lens fits and one still running."""
    write_fits(root, 12)
    write_fit(root, 12, completed=False)
    return root


def _ingest(folder: Path, db: Path) -> None:
    result = lensd_cli("ingest", str(folder), "--db", str(db), "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def lens_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _lens_fits(tmp_path_factory.mktemp("lens") / "out")


@pytest.fixture(scope="module")
def lens_db(lens_folder: Path) -> Path:
    path = lens_folder.parent / "lens.sqlite"
    _ingest(lens_folder, path)
    return path


def python_ids(db: Path, build: Build) -> list[str]:
    agg = lensd.Aggregator.from_database(db)
    try:
        return [fit.id for fit in build(agg).fits()]
    finally:
        agg.close()


def cli_json(*args: str) -> list[dict[str, Any]]:
    result = lensd_cli(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


# --- every seed query: the command line answers as Python does ---------------------------------

@pytest.mark.parametrize("text", sorted(GAUSSIAN_SEEDS))
def test_seed_queries_on_pyautofit_output(db: Path, text: str) -> None:
    want = python_ids(db, GAUSSIAN_SEEDS[text])
    rows = cli_json("query", text, "--db", str(db))
    assert [row["id"] for row in rows] == want
    assert want, "a seed query with no answer would prove nothing"
    assert all(list(row) == QUERY_KEYS for row in rows)


@pytest.mark.parametrize("text", sorted(LENS_SEEDS))
def test_seed_queries_on_lens_fits(lens_db: Path, text: str) -> None:
    want = python_ids(lens_db, LENS_SEEDS[text])
    rows = cli_json("query", text, "--db", str(lens_db))
    assert [row["id"] for row in rows] == want
    assert 0 < len(want) < 13, "each seed query selects some fits, not all"


def test_seed_answers_are_what_they_say(lens_db: Path) -> None:
    """A spot check that the shared answers are right, not merely equal."""
    agg = lensd.Aggregator.from_database(lens_db)
    fits = list(agg.fits())
    assert all(f.instance is not None for f in fits)
    radius = {f.id: f.instance.galaxies.lens.mass.einstein_radius for f in fits}  # type: ignore[union-attr]
    rows = cli_json("query", 'model.galaxies.lens.mass.einstein_radius > 1.0 | unique_tag == "lens_3"',
                    "--db", str(lens_db))
    assert {r["id"] for r in rows} == {f.id for f in fits if radius[f.id] > 1.0 or f.unique_tag == "lens_3"}
    running = cli_json("query", 'status == "running"', "--db", str(lens_db))
    assert [(r["unique_tag"], r["status"]) for r in running] == [("lens_2", "running")]


def test_socket_answers_equal_file_answers(make_daemon: Any, short_tmp: Path, lens_folder: Path) -> None:
    """``--socket`` against a real daemon gives what ``--db`` gives, for queries and exports."""
    daemon = make_daemon(db=short_tmp / "d.sqlite", start=False)
    _ingest(lens_folder, daemon.db)
    _ingest(DIR_OUTPUT, daemon.db)
    daemon.start()
    file, sock = ("--db", str(daemon.db)), ("--socket", str(daemon.socket))
    seeds = {**LENS_SEEDS, **{t: GAUSSIAN_SEEDS[t] for t in sorted(GAUSSIAN_SEEDS)[:3]}}
    for text, build in seeds.items():
        by_file = cli_json("query", text, *file)
        assert by_file == cli_json("query", text, *sock), text
        assert [r["id"] for r in by_file] == python_ids(daemon.db, build)
    ordered = ("--order-by", "-model.galaxies.lens.mass.einstein_radius", "--limit", "4")
    assert cli_json("query", "", *ordered, *file) == cli_json("query", "", *ordered, *sock)
    for options in (["--median", "--all"], ["--query", 'info["survey"] == "SLACS"']):
        assert cli_json("export", *options, *file) == cli_json("export", *options, *sock), options
    csv_by_file = lensd_cli("export", *file).stdout
    assert csv_by_file == lensd_cli("export", *sock).stdout and csv_by_file.count("\n") == 1 + 13 + 10

    async def remote_rows() -> list[dict[str, Any]]:
        async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as agg:
            return await agg.to_rows()

    local = lensd.Aggregator.from_database(daemon.db)
    assert anyio.run(remote_rows) == list(local.to_rows())
    if _has_pandas():
        async def remote_frame() -> Any:
            async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as agg:
                return await agg.to_dataframe()

        assert ["id", *anyio.run(remote_frame).columns] == local.columns()
    assert daemon.stop() == 0


# --- expressions that try to run code, or do not parse ------------------------------------------

HOSTILE = [
    '__import__("os").system("touch MARKER")',
    "model.__class__",
    "model.galaxies.__class__.__bases__",
    '().__class__.__bases__[0].__subclasses__()',
    'eval("open(\'MARKER\', \'w\')")',
    'exec("import os")',
    "`touch MARKER`",
    "$(touch MARKER)",
    'unique_tag == "a"; touch MARKER',
    'unique_tag == "a" ; import os',
    "lambda: 1",
    'unique_tag == open("MARKER", "w")',
    "[c for c in ().__class__.__base__.__subclasses__()]",
    'info["x"].__class__',
    "model.x if True else model.y",
]
MALFORMED = [
    "model.galaxies.lens.mass.einstein_radius >",
    '(unique_tag == "a"',
    'unique_tag == "a" &',
    "model.x > 1 and model.y < 2",
    "1 < model.x < 2",
    'unique_tag == "unterminated',
    "unique_tag == 3",
    'max_log_likelihood == "high"',
    "model.x > nan",
    'nosuchfield == "x"',
]


def run_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lensd", *args], capture_output=True, text=True, timeout=120,
                          cwd=folder, env=os.environ.copy())


def assert_refused(result: subprocess.CompletedProcess[str], text: str) -> None:
    """Exit 2, nothing on stdout, no traceback: the message, the expression and a caret under it."""
    assert result.returncode == 2, (text, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    message, shown, caret = result.stderr.rstrip("\n").split("\n")
    assert message.startswith("lensd: ")
    assert shown == f"  {text}"
    assert caret.strip() == "^" and 0 <= len(caret) - 3 <= len(text)


@pytest.mark.parametrize("text", HOSTILE + MALFORMED)
def test_code_and_malformed_text_exit_2_with_a_caret(lens_db: Path, tmp_path: Path, text: str) -> None:
    assert_refused(run_in(tmp_path, "query", text, "--db", str(lens_db)), text)
    assert not (tmp_path / "MARKER").exists()
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_the_same_text(lens_db: Path, tmp_path: Path) -> None:
    for text in (HOSTILE[0], HOSTILE[3], MALFORMED[0]):
        assert_refused(run_in(tmp_path, "export", "--query", text, "--db", str(lens_db)), text)
    assert list(tmp_path.iterdir()) == []


def test_order_by_is_parsed_too(lens_db: Path, tmp_path: Path) -> None:
    for bad in ("__class__", "-model.__class__", 'max_log_likelihood; touch MARKER', "model.x > 1"):
        result = run_in(tmp_path, "query", "--db", str(lens_db), "--order-by", bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.rstrip("\n").split("\n")[-1].strip() == "^"
    assert list(tmp_path.iterdir()) == []


def test_a_missing_database_is_one_line(tmp_path: Path) -> None:
    result = lensd_cli("query", "", "--db", str(tmp_path / "nothing.sqlite"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "no database" in result.stderr


# --- formats, limits and order -----------------------------------------------------------------

def test_table_is_aligned(lens_db: Path) -> None:
    result = lensd_cli("query", 'info["survey"] == "SLACS"', "--db", str(lens_db))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == QUERY_KEYS
    want = python_ids(lens_db, LENS_SEEDS['info["survey"] == "SLACS"'])
    assert [line.split()[0] for line in lines[1:]] == want
    starts = [lines[0].index(name) for name in QUERY_KEYS]
    for line in lines[1:]:
        assert all(line[s - 2:s] == "  " and line[s] != " " for s in starts[1:]), line
    assert lensd_cli("query", 'unique_tag == "none such"', "--db", str(lens_db)).stdout == "no fits\n"


def test_csv_parses_with_the_csv_module(lens_db: Path) -> None:
    result = lensd_cli("query", 'model.galaxies.lens.mass == "Isothermal"', "--db", str(lens_db), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    agg = lensd.Aggregator.from_database(lens_db)
    fits = list(agg.query(agg.model.galaxies.lens.mass == "Isothermal").fits())
    assert [r["id"] for r in rows] == [f.id for f in fits] and list(rows[0]) == QUERY_KEYS
    assert [float(r["max_log_likelihood"]) for r in rows] == [f.max_log_likelihood for f in fits]


def test_json_is_one_list_of_objects(lens_db: Path) -> None:
    rows = cli_json("query", "", "--db", str(lens_db))
    agg = lensd.Aggregator.from_database(lens_db)
    assert rows == [{k: getattr(f, k) for k in QUERY_KEYS} for f in agg.fits()]
    assert len(rows) == 13
    assert cli_json("query", 'unique_tag == "none such"', "--db", str(lens_db)) == []


def test_limit_and_order_by(lens_db: Path) -> None:
    agg = lensd.Aggregator.from_database(lens_db)
    best = cli_json("query", "", "--db", str(lens_db), "--order-by", "-max_log_likelihood", "--limit", "3")
    assert [r["id"] for r in best] == [f.id for f in agg.order_by(agg.max_log_likelihood, reverse=True)[:3].fits()]
    values = [r["max_log_likelihood"] for r in best]
    assert values == sorted(values, reverse=True) and values[0] == max(f.max_log_likelihood for f in agg.fits())
    radius = agg.model.galaxies.lens.mass.einstein_radius
    small = cli_json("query", 'info["survey"] == "BELLS"', "--db", str(lens_db),
                     "--order-by", "model.galaxies.lens.mass.einstein_radius", "--limit", "2")
    assert [r["id"] for r in small] == [f.id for f in agg.query(agg.info["survey"] == "BELLS")
                                        .order_by(radius).limit(2).fits()]


# --- export ---------------------------------------------------------------------------------------

def parameter_paths(fits: list[Any]) -> set[str]:
    return {path for f in fits if f.instance is not None for path in f.instance.to_flat()}


def test_export_has_a_row_per_fit_and_a_column_per_parameter_path(db: Path) -> None:
    agg = lensd.Aggregator.from_database(db)
    fits = list(agg.fits())
    result = lensd_cli("export", "--db", str(db))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["id"] for r in rows] == [f.id for f in fits] and len(rows) == len(agg) == 11
    paths = parameter_paths(fits)
    info = {f"info.{k}" for f in fits for k in (f.info or {})}
    assert paths >= {"gaussian.centre", "gaussian.sigma", "exponential.rate", "centre"}
    assert list(rows[0]) == [*flatrows.FIT_FIELDS, *sorted(paths), *sorted(info)]
    for row, fit in zip(rows, fits, strict=True):
        flat = fit.instance.to_flat() if fit.instance is not None else {}
        for path in paths:
            assert (row[path] == "") if path not in flat else math.isclose(float(row[path]), flat[path])
        assert row["info.telescope"] == (fit.info or {}).get("telescope", "")
    everything = list(csv.DictReader(io.StringIO(lensd_cli("export", "--db", str(db), "--all").stdout)))
    assert len(everything) == len(lensd.Aggregator.from_database(db, top_level_only=False)) == 21


def test_export_csv_opens_in_pandas_with_the_right_dtypes(db: Path) -> None:
    pandas = pytest.importorskip("pandas")
    text = lensd_cli("export", "--db", str(db), "--all").stdout
    frame = pandas.read_csv(io.StringIO(text))
    fits = list(lensd.Aggregator.from_database(db, top_level_only=False).fits())
    assert len(frame) == len(fits)
    for path in parameter_paths(fits):
        assert frame[path].dtype == "float64", path
    for column in ("max_log_likelihood", "info.exposure_s"):
        assert frame[column].dtype == "float64"
    for column in ("id", "unique_tag", "name", "status", "parent_id", "info.telescope"):
        # object in pandas 2; pandas 3 reads text as its "str" dtype
        assert pandas.api.types.is_string_dtype(frame[column]) and frame[column].dtype != "float64", column
    assert list(frame["id"]) == [f.id for f in fits]
    # the DataFrame of the Python API has the same columns and dtypes
    api = lensd.Aggregator.from_database(db, top_level_only=False).to_dataframe()
    assert api.index.name == "id" and list(api.index) == list(frame["id"])  # indexed by id
    assert ["id", *api.columns] == list(frame.columns)
    api = api.reset_index(drop=True)  # by position, as the CSV was read
    for path in parameter_paths(fits):
        assert api[path].dtype == "float64"
        assert api[path].equals(frame[path]) or (api[path].fillna(0) - frame[path].fillna(0)).abs().max() < 1e-12


def test_export_median_and_query(lens_db: Path) -> None:
    agg = lensd.Aggregator.from_database(lens_db)
    slacs = list(agg.query(agg.info["survey"] == "SLACS").fits())
    rows = cli_json("export", "--db", str(lens_db), "--median", "--query", 'info["survey"] == "SLACS"')
    assert [r["id"] for r in rows] == [f.id for f in slacs] and len(rows) == 5
    for row, fit in zip(rows, slacs, strict=True):
        assert fit.median is not None and fit.instance is not None
        median = fit.median.to_flat()
        assert median.keys() <= row.keys()
        assert all(row[p] == v for p, v in median.items())
        assert row["galaxies.lens.mass.einstein_radius"] != fit.instance.to_flat()["galaxies.lens.mass.einstein_radius"]
        assert row["info.survey"] == "SLACS" and row["info.index"] == fit.info["index"]
    maximum = cli_json("export", "--db", str(lens_db), "--query", 'info["survey"] == "SLACS"')
    assert [list(r) for r in maximum] == [list(r) for r in rows]
    assert slacs[0].instance is not None
    assert maximum[0]["galaxies.lens.mass.centre.centre_0"] == slacs[0].instance.galaxies.lens.mass.centre.centre_0
    assert cli_json("export", "--db", str(lens_db), "--query", 'unique_tag == "none"') == []
    header = lensd_cli("export", "--db", str(lens_db), "--query", 'unique_tag == "none"').stdout
    assert header == ",".join(flatrows.FIT_FIELDS) + "\n"


def test_to_rows_and_to_dataframe_have_the_export_columns(lens_db: Path) -> None:
    agg = lensd.Aggregator.from_database(lens_db)
    exported = cli_json("export", "--db", str(lens_db))
    assert json.loads(json.dumps(list(agg.to_rows()))) == exported
    assert agg.columns() == list(exported[0])
    medians = agg.to_rows(median=True)
    first = next(agg.fits()).median
    assert first is not None
    assert next(medians)["galaxies.lens.mass.einstein_radius"] == first.galaxies.lens.mass.einstein_radius
    medians.close()
    picked = list(agg.to_rows(["id", "galaxies.lens.mass.einstein_radius", "info.survey", "info.nothing"]))
    assert list(picked[0]) == ["id", "galaxies.lens.mass.einstein_radius", "info.survey", "info.nothing"]
    assert picked[0]["info.nothing"] is None
    pytest.importorskip("pandas")
    frame = agg.query(agg.status == "completed").to_dataframe()
    assert ["id", *frame.columns] == agg.columns() and len(frame) == 12 and frame.index.name == "id"
    for column in ("error", "n_samples", "created_at", "updated_at", "completed_at"):
        assert column in frame.columns
    assert (frame["completed_at"] >= frame["created_at"]).all()  # never completed before created
    assert frame["galaxies.lens.mass.einstein_radius"].dtype == "float64"


def test_columns_come_from_the_facts_index_in_one_snapshot(lens_db: Path) -> None:
    from lensd.query import statements
    from lensd.store import reader, schema

    agg = lensd.Aggregator.from_database(lens_db)
    sql, params = statements.select_fact_keys(agg.state, (schema.KIND_VALUE, schema.KIND_INFO))
    plan = " ".join(statements.explain(agg._conn, sql, params))
    assert "USING COVERING INDEX facts_" in plan and "SCAN x" not in plan, plan
    assert list(reader.stream(agg._conn, sql, params))[:2] == [
        (schema.KIND_VALUE, "galaxies.lens.mass.centre.centre_0"),
        (schema.KIND_VALUE, "galaxies.lens.mass.centre.centre_1")]
    rows = agg.to_rows()
    next(rows)
    assert agg._conn.in_transaction  # columns and rows are read in one snapshot
    rows.close()
    assert not agg._conn.in_transaction


def test_a_parameter_named_like_a_fit_column_keeps_its_own_column() -> None:
    assert flatrows.parameter_column("name") == "model.name"
    assert flatrows.parameter_column("info.x") == "model.info.x"
    assert flatrows.parameter_column("model.x") == "model.model.x"
    assert flatrows.parameter_column("galaxies.lens.name") == "galaxies.lens.name"
    assert flatrows.columns_of(["b", "a", "status"], ["z", "y"]) == [
        *flatrows.FIT_FIELDS, "a", "b", "model.status", "info.y", "info.z"]


def test_export_writes_rows_as_they_come() -> None:
    """The CSV and JSON writers never hold the table: each row is out before the next is read."""
    out = io.StringIO()

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(3):
            yield {"id": f"fit-{i}", "x": i / 2, "info.tags": {"a": [1, 2]}}
            assert f"fit-{i}" in out.getvalue()

    export.write(rows(), "csv", out)
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [
        ["id", "x", "info.tags"], *([f"fit-{i}", str(i / 2), '{"a": [1, 2]}'] for i in range(3))]
    out = io.StringIO()
    export.write(rows(), "json", out)
    assert json.loads(out.getvalue()) == [{"id": f"fit-{i}", "x": i / 2, "info.tags": {"a": [1, 2]}} for i in range(3)]
    out = io.StringIO()
    export.write(iter([{"id": "a", "x": float("nan"), "y": float("inf")}]), "json", out)
    assert json.loads(out.getvalue()) == [{"id": "a", "x": None, "y": None}]  # strict JSON


def test_export_memory_stays_flat(tmp_path: Path) -> None:
    """Python's peak memory exporting 6,000 fits is that of exporting 500: rows stream.

    tracemalloc counts Python objects only, not sqlite's page cache, which fills with any read.
    """
    import tracemalloc

    from lensd.demo.synthetic import record
    from lensd.domain.records import validate_record
    from lensd.store.writeops import Upsert
    from lensd.store.writer import BatchWriter

    db = tmp_path / "m.sqlite"

    async def fill() -> None:
        writer = await BatchWriter.open(db, "normal")
        for start in range(0, 6000, 1000):
            batch = [validate_record({**record(i, n_samples=2), "info": {"index": i, "note": "x" * 200}})
                     for i in range(start, start + 1000)]
            await writer.apply([Upsert(r) for r in batch])
        await writer.close()

    anyio.run(fill)
    peaks = {}
    for count in (500, 6000):
        out = Counting()
        tracemalloc.start()
        try:
            export.write(export.export_rows(export.state_of("", limit=count), db, None), "csv", out)
            peaks[count] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out.lines == count + 1
    # held in memory, 6,000 rows of 17 values and a 200-character note take ~7 MB
    assert peaks[6000] < peaks[500] + 2_500_000, peaks

    # a reader that stops early (lensd export | head -1) ends the export quietly
    reader = subprocess.Popen([sys.executable, "-m", "lensd", "export", "--db", str(db)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline().startswith("id,unique_tag,")
    reader.stdout.close()
    assert reader.wait(120) == 1
    assert reader.stderr is not None and reader.stderr.read() == ""


class Counting(io.TextIOBase):
    """A text stream that counts lines and keeps nothing."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)


# --- the notebook: HTML escapes what fits hold, instances print readably ------------------------

HOSTILE_TEXT = "<script>alert(1)</script>"


def test_html_escapes_hostile_strings(tmp_path: Path) -> None:
    from records_factory import record

    db = tmp_path / "h.sqlite"

    async def fill() -> None:
        from lensd.domain.records import validate_record
        from lensd.store.writeops import Upsert
        from lensd.store.writer import BatchWriter

        writer = await BatchWriter.open(db, "normal")
        data = record(1, unique_tag=HOSTILE_TEXT, name=HOSTILE_TEXT, info={HOSTILE_TEXT: HOSTILE_TEXT})
        data["samples"]["paths"] = [*data["samples"]["paths"][:2], HOSTILE_TEXT]
        await writer.apply([Upsert(validate_record(data))])
        await writer.close()

    anyio.run(fill)
    agg = lensd.Aggregator.from_database(db)
    fit = next(agg.fits())
    assert fit.unique_tag == HOSTILE_TEXT
    samples = fit.samples
    assert samples is not None and HOSTILE_TEXT in samples.paths and fit.instance is not None
    for html in (agg._repr_html_(), fit._repr_html_(), samples._repr_html_(), fit.instance._repr_html_()):
        assert "<script>" not in html and "alert(1)" in html, html[:300]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in agg._repr_html_()
    assert "&lt;script&gt;" in fit._repr_html_() and "&lt;script&gt;" in samples._repr_html_()


def test_aggregator_html_shows_the_first_rows(lens_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agg = lensd.Aggregator.from_database(lens_db)
    html = agg._repr_html_()
    assert html.startswith("<p>13 fits</p><table>") and html.count("<tr>") == 14
    assert "<th>galaxies.lens.mass.einstein_radius</th>" in html and "<th>info.survey</th>" in html
    assert agg[:2]._repr_html_().startswith("<p>2 fits</p>")
    monkeypatch.setattr(flatrows, "HTML_ROWS", 5)
    html = agg._repr_html_()
    assert html.startswith("<p>the first 5 of 13 fits</p>") and html.count("<tr>") == 6


def test_instances_print_readably(lens_db: Path, db: Path) -> None:
    agg = lensd.Aggregator.from_database(lens_db)
    instance = next(agg.fits()).instance
    assert instance is not None
    mass = instance.galaxies.lens.mass
    text = repr(instance)
    assert text.startswith("Collection(galaxies=Collection(lens=Galaxy(mass=Isothermal(centre=(")
    assert f"centre=({mass.centre.centre_0!r}, {mass.centre.centre_1!r}), einstein_radius=" in text
    assert repr(mass) == (f"Isothermal(centre=({mass.centre.centre_0!r}, {mass.centre.centre_1!r}), "
                          f"einstein_radius={mass.einstein_radius!r})")
    assert "redshift=0.5" in text and "source=Galaxy(bulge=Sersic(intensity=" in text
    assert mass.centre.centre_1 == instance.to_flat()["galaxies.lens.mass.centre.centre_1"]
    gaussian = lensd.Aggregator.from_database(db)
    bare = next(gaussian.query(gaussian.model == Gaussian).fits()).instance
    assert repr(bare).startswith("Gaussian(centre=") and "sigma=" in repr(bare)
