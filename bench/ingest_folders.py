"""Folder ingest: ``lensd ingest`` of synthetic PyAutoFit output folders into a fresh database.

    .venv/bin/python -m bench.ingest_folders [--quick]

The folders are ``lensd.demo.synthetic.write_fits`` output (the files real PyAutoFit writes: metadata,
.completed, files/*.json, a space-padded samples.csv of 1,000 samples × 4 parameters). lensd runs
as the command line does (``python -m lensd ingest TREE --db NEW --quiet``, no daemon: the direct
writer), timed from start to exit, start-up included. Baselines, same run and same folders:
reading every file of the tree (the I/O floor) and, when autofit is installed, PyAutoFit's own
scraper ``Aggregator.from_database(file).add_directory(tree)``.

The CPU a folder costs (``wait4``: the process and its reader processes) is printed beside the
rate, since on a shared machine the rate also holds waiting for a core; and the CPU to parse one
samples.csv with lensd's reader (``csvnumbers``: orjson, the ``fast`` extra; numpy's ``loadtxt``
without it) and with the field's parsers that are installed (pandas' C engine; pyarrow, when
present), the step the profile named as most of a folder's cost.

Beside the command's rate, the same 1,000 folders are ingested by ``lensd.ingest.run.ingest`` in a
child that has imported lensd first, timed around the call alone, as ``add_directory`` is timed
after ``import autofit``: the like-for-like figure (the command's adds the interpreter's start and
its imports, ~0.2 s, to a run of ~1 s).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import Options, Row
from bench import _pyautofit as pyautofit
from bench._common import child, folder_tree, main, ms, rate, times, verdict

SECTION = "folder ingest (lensd ingest, direct writer)"
TARGET_RATE = 500.0
TARGET_VS_PYAUTOFIT = 100.0
INGEST_CALL = """
import time
from pathlib import Path
from lensd.ingest.run import ingest
began = time.perf_counter()
report = ingest([sys.argv[1]], Path(sys.argv[2]))
result = {"seconds": time.perf_counter() - began, "fits": len(report.ingested), "failed": len(report.failed)}
"""


def lensd_ingest(tree: Path, db: Path) -> float:
    """Seconds for ``lensd ingest`` (a fresh process) to ingest ``tree`` into ``db``."""
    return lensd_ingest_cpu(tree, db)[0]


def lensd_ingest_cpu(tree: Path, db: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``lensd ingest``; CPU from wait4, so it holds its reader processes."""
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "lensd", "ingest", str(tree), "--db", str(db), "--quiet"],
                               stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"lensd ingest exited {os.waitstatus_to_exitcode(status)}")
    return time.perf_counter() - began, usage.ru_utime + usage.ru_stime


def _cpu_per_call(work: Callable[[], Any], repeat: int = 30) -> float:
    work()
    laps = []
    for _ in range(repeat):
        began = time.process_time()
        work()
        laps.append(time.process_time() - began)
    return statistics.median(laps)


def parsers(tree: Path) -> list[Row]:
    """CPU to parse one samples.csv (1,000 x 8 numbers): lensd's reader against the field's parsers."""
    import io

    import numpy as np

    from lensd.ingest import csvnumbers

    data = next(tree.rglob("samples.csv")).read_bytes()
    names = [c.strip() for c in data.split(b"\n", 1)[0].decode().split(",")]
    body = data.split(b"\n", 1)[1]
    used = ("lensd (csvnumbers: orjson, the one used)" if csvnumbers.available()
            else "lensd (np.loadtxt: orjson, lensd[fast], not installed)")
    found = {used: _cpu_per_call(lambda: csvnumbers.read_samples(data)),
             "np.loadtxt (without lensd[fast])": _cpu_per_call(
                 lambda: np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2))}
    try:
        import pandas as pd

        found["pandas read_csv, C engine"] = _cpu_per_call(
            lambda: pd.read_csv(io.BytesIO(data), engine="c", dtype=np.float64).to_numpy())
    except ImportError:
        pass
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        options = (pacsv.ReadOptions(use_threads=False, skip_rows=1, column_names=names),
                   pacsv.ParseOptions(), pacsv.ConvertOptions(column_types={n: pa.float64() for n in names}))
        found["pyarrow read_csv, typed, 1 thread"] = _cpu_per_call(
            lambda: pacsv.read_csv(io.BytesIO(data), *options).columns)
    except ImportError:
        found["pyarrow read_csv: not installed here (measured apart: docs/performance.md)"] = float("nan")
    ours = found[used]
    return [Row(SECTION, f"parse one samples.csv, CPU: {name}", "" if seconds != seconds else ms(seconds),
                ms(ours) if seconds == seconds and seconds != ours else "",
                f"{times(seconds / ours)} lensd's" if seconds == seconds and seconds != ours else "")
            for name, seconds in found.items()]


def steps(tree: Path, count: int = 200) -> list[Row]:
    """CPU a folder of each step of ``lensd ingest``, in this process over ``count`` folders (the
    least of three passes): what the reader processes and the writing process each spend on one."""
    import asyncio
    import tempfile

    from lensd.domain.records import validate_record
    from lensd.ingest import folders, pyautofit, run
    from lensd.ingest.csvnumbers import read_samples
    from lensd.store import batchplan
    from lensd.store.writeops import Upsert
    from lensd.store.writers import open_writer
    from lensd.wire import codec

    jobs = run.discover_all([tree])[:count]
    found: dict[str, float] = {}

    def step(name: str, work: Callable[[], Any]) -> Any:
        laps = []
        for _ in range(3):
            began = time.process_time()
            value = work()
            laps.append(time.process_time() - began)
        found[name] = min(laps) / len(jobs)
        return value

    csvs = [(folder / "files" / "samples.csv").read_bytes() for folder, _ in jobs]
    step("signature and listing (signed_listing)", lambda: [folders.signed_listing(f) for f, _ in jobs])
    read = step("reading a fit (read_in_scan)", lambda: [pyautofit.read_in_scan(f, r, {}, str(f)) for f, r in jobs])
    step("  of which samples.csv to arrays (read_samples)", lambda: [read_samples(data) for data in csvs])
    records = step("validate_record", lambda: [validate_record(dict(data)) for data in read])
    step("row preparation (batchplan.prepare)", lambda: [batchplan.prepare(Upsert(r)) for r in records])
    loaded = step("a reader, all of it (_load_ready)", lambda: [run._load_ready(f, r, {}, {}) for f, r in jobs])
    step("msgpack to the pipe and back", lambda: [codec.unpack(codec.pack(list(item))) for item in loaded])
    ready = [pair for kind, value in loaded for pair in run._records(kind, value, run.IngestReport())]

    async def write() -> float:
        writer = await open_writer(Path(tempfile.mkdtemp(dir=tree.parent)) / "steps.sqlite")
        began = time.process_time()
        for start in range(0, len(ready), run.BATCH):
            batch = ready[start:start + run.BATCH]
            await writer.apply([Upsert(record) for record, _ in batch], [rows for _, rows in batch])
        await writer.close()
        return time.process_time() - began

    found["the writer: batches of 256 and the close (sqlite)"] = asyncio.run(write()) / len(jobs)
    return [Row(SECTION, f"a folder's step, CPU: {name}", ms(seconds)) for name, seconds in found.items()]


def read_everything(tree: Path) -> float:
    """Seconds to read every file under ``tree`` once (the floor any ingest pays)."""
    began = time.perf_counter()
    for folder, _, names in os.walk(tree):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                handle.read()
    return time.perf_counter() - began


def run(options: Options) -> list[Row]:
    import compileall

    import lensd

    n, m = (500, 100) if options.quick else (2000, 1000)
    # an installed lensd has its bytecode; a source tree under PYTHONDONTWRITEBYTECODE (this
    # machine) would compile its modules in every ``lensd ingest`` timed here (bench/startup.py)
    compileall.compile_dir(Path(lensd.__file__).parent, quiet=1)
    tree = folder_tree(options.work, n)
    seconds, cpu = lensd_ingest_cpu(tree, options.work / "ingest.sqlite")
    again = lensd_ingest(tree, options.work / "ingest.sqlite")
    floor = n / read_everything(tree)
    lensd_rate = n / seconds
    rows = [Row(SECTION, f"{n} folders x 1,000 samples, fresh database; CPU {cpu / n * 1000:.2f} ms a folder",
                rate(lensd_rate, "folders"),
                f"read files: {rate(floor, 'folders')}", f"{times(lensd_rate / floor)} file reading",
                target=f">= {TARGET_RATE:.0f}/s: {verdict(lensd_rate >= TARGET_RATE)}"),
            Row(SECTION, f"the same {n} folders again (unchanged: skipped)", rate(n / again, "folders")),
            *steps(tree), *parsers(tree)]
    small = folder_tree(options.work, m)
    ours = m / lensd_ingest(small, options.work / f"ingest{m}.sqlite")
    version = pyautofit.available()
    if version is None:
        rows.append(Row(SECTION, f"{m} folders, vs PyAutoFit add_directory", rate(ours, "folders"),
                        pyautofit="not installed"))
        return rows
    _, made = pyautofit.database(options.work, small)
    theirs = made["fits"] / made["seconds"]
    ratio = ours / theirs
    rows.append(Row(SECTION, f"{m} folders, vs PyAutoFit add_directory ({made['fits']} fits found)",
                    rate(ours, "folders"), ratio=f"{times(ratio)} PyAutoFit",
                    pyautofit=rate(theirs, "folders"),
                    target=f">= {TARGET_VS_PYAUTOFIT:.0f}x: {verdict(ratio >= TARGET_VS_PYAUTOFIT)}"))
    call = child(INGEST_CALL, str(small), str(options.work / f"ingest{m}-call.sqlite"), timeout=600)
    if call["fits"] != m or call["failed"]:
        raise RuntimeError(f"lensd.ingest.run.ingest stored {call['fits']} of {m} folders")
    like = m / call["seconds"]
    rows.append(Row(SECTION, f"{m} folders, lensd.ingest.run.ingest() timed as add_directory is (after imports)",
                    rate(like, "folders"), ratio=f"{times(like / theirs)} PyAutoFit",
                    pyautofit=rate(theirs, "folders")))
    return rows


if __name__ == "__main__":
    main(run, __doc__)
