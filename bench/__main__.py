"""``python -m bench [--quick] [--only NAME,...] [--skip NAME,...] [--install-pyautofit]``: every
benchmark, one table.

Runs each module of ``bench/`` that defines ``run(options) -> list[Row]`` (the contract is in
``bench/__init__.py``), the known ones first in the order below, then any other alphabetically. A
module without ``run`` is run as a script (``python bench/<name>.py``) and its printed lines become
rows of its section. A benchmark that fails is reported in the table and the others still run.
The table is printed at the end and kept in ``bench/.cache/last-table.txt``.

PyAutoFit's columns appear when an interpreter with ``autofit`` is found (``bench._common.
autofit_python``): ``--install-pyautofit`` first makes ``.venv-autofit`` beside ``.venv`` with
``pip install autofit==2026.7.29.1`` (``AUTOFIT_PIN``), so the project's own environment keeps its versions.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import CACHE, Options, Row
from bench._common import AUTOFIT_VENV, autofit_python, format_table, machine_facts

ORDER = ("startup", "daemon_ingest", "ingest_folders", "query", "values_samples", "pg_reads", "growth", "watch_poll",
         "heartbeats")
# Arguments for modules that are scripts without run(): (quick run, full run).
SCRIPT_ARGS: dict[str, tuple[list[str], list[str]]] = {
    "watch_poll": (["--fits", "10000", "--new", "200", "--idle", "10"], []),
    "heartbeats": (["--seconds", "3", "--paced-seconds", "5"], []),
    "tcp": (["--clients", "1,8", "--fits", "160", "--opens", "50", "--beats", "500"], []),
}
SCRIPT_TIMEOUT = 900
AUTOFIT_PIN = "2026.7.29.1"  # the release issue 8 names; the newest for Python 3.11 then


def install_pyautofit() -> None:
    """Make ``.venv-autofit`` with PyAutoFit in it, unless it is there already."""
    python = AUTOFIT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(AUTOFIT_VENV)], check=True, timeout=600)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"autofit=={AUTOFIT_PIN}"], check=True,
                   timeout=1800)
    autofit_python.cache_clear()


def modules() -> list[str]:
    here = Path(__file__).parent
    found = [m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_")]
    return [m for m in ORDER if m in found] + sorted(m for m in found if m not in ORDER)


def run_script(name: str, options: Options) -> list[Row]:
    """A benchmark without ``run``: its own command line, its lines as rows."""
    quick, full = SCRIPT_ARGS.get(name, ([], []))
    script = Path(__file__).parent / f"{name}.py"
    done = subprocess.run([sys.executable, str(script), *(quick if options.quick else full)],
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT,
                          cwd=Path(__file__).parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-500:]}")
    section = f"{name} (bench/{name}.py, its own lines)"
    rows = []
    for line in done.stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] and not set(line.strip()) <= set("-|: "):
            rows.append(Row(section, cells[0], " | ".join(cells[1:])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: about five minutes")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--install-pyautofit", action="store_true",
                        help=f"first pip install autofit=={AUTOFIT_PIN} into .venv-autofit (for the PyAutoFit columns)")
    args = parser.parse_args()
    names = modules()
    if args.list:
        print("\n".join(names))
        return
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(names)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; there are {names}")
    chosen = [n for n in names if (not only or n in only) and n not in skip]
    if args.install_pyautofit:
        install_pyautofit()
    work = Path(tempfile.mkdtemp(prefix="lbench", dir="/tmp"))  # short: sockets live here
    options = Options(quick=args.quick, work=work, cache=CACHE)
    rows: list[Row] = []
    durations = []
    began = time.perf_counter()
    try:
        for name in chosen:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                module = importlib.import_module(f"bench.{name}")
                run = getattr(module, "run", None)
                rows += run(options) if callable(run) else run_script(name, options)
            except Exception as exc:  # one broken benchmark must not hide the others
                traceback.print_exc()
                rows.append(Row(name, "FAILED", f"{type(exc).__name__}: {str(exc)[:200]}"))
            durations.append(f"{name} {time.perf_counter() - started:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mode = "quick" if args.quick else "full"
    lines = [*machine_facts(), f"run: {mode}, {time.perf_counter() - began:.0f} s ({', '.join(durations)})", "",
             *format_table(sorted(rows, key=_section_order(rows)))]
    print("\n".join(lines))
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "last-table.txt").write_text("\n".join(lines) + "\n")


def _section_order(rows: list[Row]) -> Callable[[Row], int]:
    first: dict[str, int] = {}
    for index, row in enumerate(rows):
        first.setdefault(row.section, index)
    return lambda row: first[row.section]


if __name__ == "__main__":
    main()
