"""Folder ingest: ``lensd ingest`` of synthetic PyAutoFit output folders into a fresh database.

    .venv/bin/python -m bench.ingest_folders [--quick]

The folders are ``lensd.demo.synthetic.write_fits`` output (the files real PyAutoFit writes: metadata,
.completed, files/*.json, a space-padded samples.csv of 1,000 samples × 4 parameters). lensd runs
as the command line does (``python -m lensd ingest TREE --db NEW --quiet``, no daemon: the direct
writer), timed from start to exit, start-up included. Baselines, same run and same folders:
reading every file of the tree (the I/O floor) and, when autofit is installed, PyAutoFit's own
scraper ``Aggregator.from_database(file).add_directory(tree)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench import Options, Row
from bench import _pyautofit as pyautofit
from bench._common import folder_tree, main, rate, times, verdict

SECTION = "folder ingest (lensd ingest, direct writer)"
TARGET_RATE = 500.0
TARGET_VS_PYAUTOFIT = 100.0


def lensd_ingest(tree: Path, db: Path) -> float:
    """Seconds for ``lensd ingest`` (a fresh process) to ingest ``tree`` into ``db``."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lensd", "ingest", str(tree), "--db", str(db), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, timeout=1200)
    return time.perf_counter() - began


def read_everything(tree: Path) -> float:
    """Seconds to read every file under ``tree`` once (the floor any ingest pays)."""
    began = time.perf_counter()
    for folder, _, names in os.walk(tree):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                handle.read()
    return time.perf_counter() - began


def run(options: Options) -> list[Row]:
    n, m = (500, 100) if options.quick else (2000, 1000)
    tree = folder_tree(options.work, n)
    seconds = lensd_ingest(tree, options.work / "ingest.sqlite")
    again = lensd_ingest(tree, options.work / "ingest.sqlite")
    floor = n / read_everything(tree)
    lensd_rate = n / seconds
    rows = [Row(SECTION, f"{n} folders x 1,000 samples, fresh database", rate(lensd_rate, "folders"),
                f"read files: {rate(floor, 'folders')}", f"{times(lensd_rate / floor)} file reading",
                target=f">= {TARGET_RATE:.0f}/s: {verdict(lensd_rate >= TARGET_RATE)}"),
            Row(SECTION, f"the same {n} folders again (unchanged: skipped)", rate(n / again, "folders"))]
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
    return rows


if __name__ == "__main__":
    main(run, __doc__)
