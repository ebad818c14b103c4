"""Opening a results file never runs code, and a crafted one gives a clear LensdError.

PyAutoFit's database unpickles what it stores and imports the class paths it finds, so opening a
colleague's results file can run anything. Here each crafted database (hostile class paths, pickled
payloads, lying or oversized blobs, invalid JSON, a newer schema, a file that is not lensd's) goes
through every read the Aggregator offers. Two proofs that nothing ran: marker files that an import
of the named module or an unpickling would create stay absent, and an audit hook in a fresh
interpreter (``python tests/test_untrusted.py DB...``) sees no import, exec, unpickling or process
start while the reads run.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from records_factory import record
from wire import integrity

import lensd
from lensd.errors import LensdError, StorageError, UnsupportedDatabase

MARKER_MODULE = "lensd_hostile_marker"
HOSTILE_CLASS_PATHS = ("os.system", "__import__('os').system('touch /tmp/lensd-pwned')",
                       f"{MARKER_MODULE}.Evil", "subprocess.Popen", "builtins.eval")


class _Boom:
    """Unpickling this runs ``touch <marker>``: a pickle stored as a payload must never be loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def write_database(path: Path, records: list[dict[str, Any]]) -> None:
    """A genuine lensd database holding ``records``, written by lensd's own writer."""
    from lensd.store.writeops import op_from_request
    from lensd.store.writer import BatchWriter

    async def write() -> None:
        writer = await BatchWriter.open(path)
        try:
            outcomes = await writer.apply([op_from_request("submit", {"record": r}) for r in records])
            assert outcomes == ["applied"] * len(records)
        finally:
            await writer.close()

    anyio.run(write)


def tamper(path: Path, *statements: tuple[str, tuple[Any, ...]] | str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            sql, params = (statement, ()) if isinstance(statement, str) else statement
            conn.execute(sql, params)
    finally:
        conn.close()


def crafted_databases(folder: Path) -> dict[str, tuple[Path, type[LensdError] | None]]:
    """name → (database, the LensdError opening it must give, or None when it opens)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "unpickled"
    good = [record(i, 20) for i in range(3)]
    good[0]["files"] = {"extra.table": {"rows": [1, 2, 3]}}
    made: dict[str, tuple[Path, type[LensdError] | None]] = {}

    def base(name: str, error: type[LensdError] | None = None) -> Path:
        path = folder / f"{name}.sqlite"
        write_database(path, good)
        made[name] = (path, error)
        return path

    hostile_model = json.dumps({"type": "collection", "class_path": HOSTILE_CLASS_PATHS[1], "arguments": {
        "galaxies": {"type": "collection", "arguments": {"lens": {
            "type": "model", "class_path": f"{MARKER_MODULE}.Evil", "arguments": {
                "mass": {"type": "model", "class_path": "os.system", "arguments": {
                    "einstein_radius": {"type": "Uniform", "lower_limit": 0, "upper_limit": 3}}}}}}}}})
    path = base("hostile_class_paths")
    tamper(path, ("UPDATE fits SET model = ?", (hostile_model,)),
           *((("UPDATE nodes SET class_path = ?, class_name = ? WHERE fit_key = ?",
               (cp, cp.rsplit(".", 1)[-1], key)) for key, cp in enumerate(HOSTILE_CLASS_PATHS[:3], 1))),
           ("INSERT INTO nodes VALUES (1, '', ?, 'x')", (HOSTILE_CLASS_PATHS[3],)))

    evil = pickle.dumps(_Boom(marker), protocol=4)
    path = base("pickled_payloads")
    tamper(path, ("UPDATE payloads SET data = ?", (evil,)),
           ("UPDATE fits SET model = ?, info = ?, summary = ? WHERE fit_key = 2", (evil, evil, evil)))

    path = base("lying_blobs")
    huge_str = b"\xdb\xff\xff\xff\xff"  # msgpack: a 4 GiB string follows (it does not)
    huge_array = b"\xdd\xff\xff\xff\xff"  # msgpack: 4 billion items follow
    lying_shape = msgpack.packb({"paths": ["a"], "parameters": msgpack.ExtType(1, msgpack.packb(
        ["<f8", [2**32, 2**32], b""])), "log_likelihood": msgpack.ExtType(1, msgpack.packb(["<f8", [0], b""]))})
    object_dtype = msgpack.packb({"paths": ["a"], "parameters": msgpack.ExtType(1, msgpack.packb(
        ["|O", [1, 1], evil[:8]]))})
    depth_bomb = b"\x91" * 100_000 + b"\xc0"
    tamper(path, ("UPDATE payloads SET data = ? WHERE fit_key = 1", (huge_str,)),
           ("UPDATE payloads SET data = ? WHERE fit_key = 2", (lying_shape,)),
           ("UPDATE payloads SET data = ? WHERE fit_key = 3", (huge_array,)),
           ("INSERT INTO payloads VALUES (1, 'file:bomb', ?)", (depth_bomb,)),
           ("INSERT INTO payloads VALUES (2, 'file:bomb', ?)", (object_dtype,)),
           ("INSERT INTO payloads VALUES (3, 'file:bomb', ?)", ("not a blob",)))

    path = base("invalid_json")
    tamper(path, "UPDATE fits SET model = '{not json' WHERE fit_key = 1",
           "UPDATE fits SET info = '[1, 2]', instance = '\"a string\"', summary = '{\"arguments\": [1]}' "
           "WHERE fit_key = 2",
           ("UPDATE fits SET model = ?, job = ? WHERE fit_key = 3", ("[" * 100_000 + "]" * 100_000, "7")))

    path = base("wrong_samples")
    tamper(path, ("UPDATE payloads SET data = ? WHERE fit_key = 1", (msgpack.packb({"paths": 5}),)),
           ("UPDATE payloads SET data = ? WHERE fit_key = 2", (msgpack.packb([1, 2, 3]),)),
           ("UPDATE payloads SET data = ? WHERE fit_key = 3", (msgpack.packb(
               {"paths": ["a", "b"], "parameters": [[1.0]], "log_likelihood": [1.0]}),)))

    path = base("generated_columns", UnsupportedDatabase)  # computed on every read: 400 MB a row
    with_generated_info(path, "printf('%.*c', 400000000, 'x')")

    path = base("oversized_values")  # each refused before it is fetched or parsed (bounded memory)
    tamper(path, f"UPDATE payloads SET data = zeroblob({300 * 2**20}) WHERE fit_key = 1 AND name = 'samples'",
           "UPDATE fits SET info = '{\"a\": [' || replace(printf('%.*c', 6000000, 'x'), 'x', '[],') || '[]]}' "
           "WHERE fit_key = 2")

    path = base("extreme_facts")  # values no writer stores, where queries and rows read them
    tamper(path, "UPDATE facts SET num = 1e308 * 10 WHERE fit_key = 1",
           "UPDATE facts SET num = 'text', txt = X'00ff' WHERE fit_key = 2",
           "UPDATE facts SET num = X'00ff', txt = 5, json = '[' WHERE fit_key = 3",
           "INSERT INTO facts VALUES (1, 2, 'index', 9223372036854775807, NULL, NULL)",
           "INSERT INTO facts VALUES (2, 0, 'galaxies.lens.mass.einstein_radius', NULL, "
           "printf('%.*c', 1000000, 'y'), NULL)",
           "UPDATE fits SET n_samples = 9223372036854775807, progress = 1e308 * 10, max_log_likelihood = 'x', "
           "created_at = X'00' WHERE fit_key = 2")

    path = base("newer_schema", UnsupportedDatabase)
    tamper(path, "PRAGMA user_version = 99")
    path = base("foreign_application", UnsupportedDatabase)
    tamper(path, "PRAGMA application_id = 1234")
    path = base("missing_tables", UnsupportedDatabase)
    tamper(path, "DROP TABLE payloads", "DROP TABLE facts")
    path = base("view_instead_of_table", UnsupportedDatabase)
    tamper(path, "DROP TABLE payloads",
           "CREATE VIEW payloads AS SELECT fit_key, 'samples' AS name, randomblob(1000000000) AS data FROM fits")

    other = folder / "other_app.sqlite"
    tamper(other, "CREATE TABLE notes (x)", "INSERT INTO notes VALUES ('hello')")
    made["other_application"] = (other, UnsupportedDatabase)
    text = folder / "text.sqlite"
    text.write_text("this is not a database\n" * 100)
    made["text_file"] = (text, UnsupportedDatabase)
    noise = folder / "noise.sqlite"
    noise.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    made["corrupt_header"] = (noise, StorageError)
    empty = folder / "empty.sqlite"
    empty.write_bytes(b"")
    made["empty_file"] = (empty, StorageError)
    made["missing_file"] = (folder / "absent.sqlite", StorageError)
    made["a_directory"] = (folder, StorageError)
    return made


def with_generated_info(path: Path, expression: str) -> None:
    """Rebuild ``fits`` with its ``info`` column generated from ``expression`` (computed on read)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'fits'").fetchone()[0]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(fits)") if row[1] != "info"]
        conn.execute("ALTER TABLE fits RENAME TO old_fits")
        generated = re.sub(r"\binfo\s+TEXT\s*,", f"info TEXT GENERATED ALWAYS AS ({expression}) VIRTUAL,", sql)
        assert "GENERATED" in generated, sql
        conn.execute(generated)
        listed = ", ".join(columns)
        conn.execute(f"INSERT INTO fits ({listed}) SELECT {listed} FROM old_fits")
        conn.execute("DROP TABLE old_fits")
    finally:
        conn.close()


FIT_READS: dict[str, Callable[[Any], object]] = {
    "fit": lambda f: (f.to_dict(), repr(f), f.is_complete),
    "model": lambda f: f.model, "search": lambda f: f.search, "info": lambda f: f.info,
    "job": lambda f: f.job, "summary": lambda f: f.summary,
    "instance": lambda f: repr(f.instance), "median": lambda f: repr(f.median),
    "samples": lambda f: f.samples and (f.samples.max_log_likelihood_instance, f.samples.median_pdf_instance),
    "file": lambda f: (f.file("extra.table"), f.file("bomb")),
    "value": lambda f: [f.value(name) for name in ("instance", "model", "info", "samples")],
}
VALUE_NAMES = ("samples", "instance", "model", "search", "info", "summary", "job", "extra.table", "bomb")


def _reads(agg: lensd.Aggregator) -> Iterator[tuple[str, Callable[[], object]]]:
    """Every read an analysis script might do, each as a thunk; fit reads once per fit."""
    lens = agg.model.galaxies.lens
    yield "len", lambda: len(agg)
    try:
        fits = list(agg.fits())
    except LensdError:
        fits = []
    for fit in fits:
        for name, read in FIT_READS.items():
            yield f"{fit.id} {name}", lambda read=read, fit=fit: read(fit)  # type: ignore[misc]
    for name in VALUE_NAMES:
        yield f"values({name})", lambda name=name: list(agg.values(name))  # type: ignore[misc]
    yield "rows", lambda: list(agg.to_rows())
    yield "median rows", lambda: list(agg.to_rows(median=True))
    for class_path in HOSTILE_CLASS_PATHS:
        yield f"query class {class_path}", lambda cp=class_path: [  # type: ignore[misc]
            f.id for f in agg.query(lens.mass == cp).fits()]
    yield "query value", lambda: len(agg.query(lens.mass.einstein_radius > 1.0))
    yield "query info", lambda: len(agg.query(agg.info["index"] > 0))
    yield "grids", lambda: list(agg.grid_searches().children().fits())
    yield "order", lambda: [f.id for f in agg.order_by(agg.max_log_likelihood)[:2]]


def explore(path: Path) -> dict[str, str]:
    """Run every read on ``path``: "ok", or "<LensdError class>: message"; "BUG ..." for anything else."""
    outcomes: dict[str, str] = {}
    try:
        agg = lensd.Aggregator.from_database(path, top_level_only=False)
    except LensdError as exc:
        return {"open": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        return {"open": f"BUG {type(exc).__name__}: {exc}"}
    try:
        for name, read in _reads(agg):
            try:
                read()
                outcomes[name] = "ok"
            except LensdError as exc:
                outcomes[name] = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                outcomes[name] = f"BUG {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        agg.close()
    return outcomes


def refused_as(outcome: str, expected: type[LensdError]) -> bool:
    """Does ``outcome`` ("ClassName: message") name ``expected`` or a subclass of it?"""
    import lensd.errors

    raised = getattr(lensd.errors, outcome.split(":", 1)[0], None)
    return isinstance(raised, type) and issubclass(raised, expected)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, type[LensdError] | None]]:
    return crafted_databases(tmp_path_factory.mktemp("crafted"))


@pytest.fixture
def marker_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path whose import creates a file: importing a stored class path would show."""
    marker = tmp_path / "imported"
    (tmp_path / f"{MARKER_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Evil:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


CASES = ["hostile_class_paths", "pickled_payloads", "lying_blobs", "invalid_json", "wrong_samples",
         "generated_columns", "oversized_values", "extreme_facts", "newer_schema", "foreign_application",
         "missing_tables", "view_instead_of_table",
         "other_application", "text_file", "corrupt_header", "empty_file", "missing_file", "a_directory"]


@pytest.mark.parametrize("case", CASES)
def test_crafted_database_runs_no_code_and_fails_clearly(crafted, marker_module, case) -> None:  # type: ignore[no-untyped-def]
    path, refused_with = crafted[case]
    outcomes = explore(path)
    bugs = {name: outcome for name, outcome in outcomes.items() if outcome.startswith("BUG")}
    assert not bugs, f"errors that are not LensdError: {bugs}"
    if refused_with is not None:
        assert refused_as(outcomes["open"], refused_with), outcomes
    else:
        assert "open" not in outcomes and outcomes["len"] == "ok", outcomes
    assert not marker_module.exists(), "a stored class path was imported"
    assert MARKER_MODULE not in sys.modules
    assert not (path.parent / "unpickled").exists(), "a stored pickle was loaded"
    if path.is_file() and path.stat().st_size and refused_with is None:
        assert integrity(path) == "ok"  # reading never writes: the crafted file is as it was


def test_hostile_class_paths_are_plain_strings(crafted, marker_module) -> None:  # type: ignore[no-untyped-def]
    agg = lensd.Aggregator.from_database(crafted["hostile_class_paths"][0])
    lens = agg.model.galaxies.lens
    assert [f.id for f in agg.query(lens.mass == "os.system").fits()] == ["fit-0"]
    assert [f.id for f in agg.query(lens.mass == "Evil").fits()] == ["fit-2"]
    instance = next(agg.fits()).instance
    assert instance is not None
    assert instance.class_path == HOSTILE_CLASS_PATHS[1]
    assert instance.galaxies.lens.class_path == f"{MARKER_MODULE}.Evil"
    assert "lens=Evil(mass=system(" in repr(instance)  # names only: nothing was looked up
    assert not marker_module.exists()


def test_expected_refusals_name_the_problem(crafted) -> None:  # type: ignore[no-untyped-def]
    messages = {case: explore(crafted[case][0]).get("open", "") for case in
                ("newer_schema", "foreign_application", "missing_tables", "text_file", "empty_file")}
    assert "newer than this lensd" in messages["newer_schema"]
    assert "not a lensd database" in messages["foreign_application"]
    assert "facts table is missing" in messages["missing_tables"]
    assert "not a" in messages["text_file"]
    assert "empty" in messages["empty_file"]
    outcomes = explore(crafted["pickled_payloads"][0])
    assert outcomes["values(samples)"].startswith("StorageError: a stored payload cannot be decoded")
    assert explore(crafted["invalid_json"][0])["values(model)"].startswith("StorageError")


def test_oversized_and_generated_values_are_refused_in_bounded_memory(crafted) -> None:  # type: ignore[no-untyped-def]
    """Read in a fresh interpreter, whose peak resident size (VmHWM) is the reads' own: before these
    bounds the generated column cost 3 GB and 49 s, the 300 MB blob 1.7 GB, the JSON 1.5 GB."""
    paths = [str(crafted[case][0]) for case in ("generated_columns", "oversized_values")]
    code = ("import json, sys\nsys.path.insert(0, sys.argv[1])\nfrom test_untrusted import explore\n"
            "out = [explore(p) for p in sys.argv[2:]]\n"
            "peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
            "print(json.dumps([out, peak]))")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), *paths], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (generated, oversized), peak_kb = json.loads(done.stdout.splitlines()[-1])
    assert peak_kb < 500 * 1024, f"the reads peaked at {peak_kb // 1024} MB"
    assert "has generated columns ('info')" in generated["open"]
    assert oversized["fit-0 samples"] == (f"StorageError: a stored payload is {300 * 2**20} bytes, over the "
                                          f"{256 * 2**20} a lensd reader decodes")
    assert oversized["values(samples)"] == oversized["fit-0 samples"]
    assert oversized["fit-1 info"].endswith("holds more than 2000000 JSON values")
    assert oversized["fit-2 samples"] == "ok"  # the other fits read as ever


@pytest.mark.parametrize("case", ["pickled_payloads", "invalid_json", "newer_schema", "text_file"])
def test_cli_on_a_crafted_database_prints_one_line(crafted, case) -> None:  # type: ignore[no-untyped-def]
    from conftest import lensd_cli

    result = lensd_cli("export", "--db", str(crafted[case][0]), "--format", "json", "--all")
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode in (0, 1)
    if result.returncode == 1:
        assert result.stderr.startswith("lensd: ") and result.stderr.count("\n") == 1, result.stderr


def test_an_audit_hook_sees_no_code_run(crafted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """In a fresh interpreter, the reads of every crafted file raise no import/exec/pickle/process event."""
    paths = [str(crafted[case][0]) for case in CASES]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    (tmp_path / f"{MARKER_MODULE}.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w')\n")
    result = subprocess.run([sys.executable, __file__, *paths], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["events"] == [], report["events"]
    assert report["reads"] >= 20 * len(paths) // 2
    assert not (tmp_path / "imported").exists()


_WATCHED_EVENTS = ("import", "exec", "compile", "pickle.find_class", "os.system", "os.exec", "os.posix_spawn",
                   "os.spawn", "os.fork", "subprocess.Popen", "ctypes.dlopen", "marshal.loads")


def _audit(paths: list[str]) -> None:
    """Run every read on ``paths`` under an audit hook; print the events seen as JSON."""
    warm = Path(paths[0]).parent / "warm-up.sqlite"
    if not warm.exists():
        write_database(warm, [record(0, 5)])
    explore(warm)  # imports what lensd imports lazily, before the hook starts counting
    seen: list[str] = []
    watching = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if watching[0] and event.startswith(_WATCHED_EVENTS):
            seen.append(f"{event} {str(args)[:120]}")

    sys.addaudithook(hook)
    reads = 0
    for path in paths:
        reads += len(explore(Path(path)))
    watching[0] = False
    print(json.dumps({"events": seen, "reads": reads}))


if __name__ == "__main__":
    _audit(sys.argv[1:])
