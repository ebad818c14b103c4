"""What the benchmarks share: machine facts, a real daemon process, child processes with a time
limit and a peak-memory report, number formatting, and the table printer."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import CACHE, Options, Row

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
COLUMNS = ("measure", "lensd", "baseline (same run)", "ratio", "PyAutoFit", "target")


def machine_facts() -> list[str]:
    """One line each: CPUs, memory, Python, sqlite, numpy, PyAutoFit, file system of the scratch folder."""
    import numpy

    from lensd.mounts import file_system_type

    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", encoding="ascii") as info:
        memory = f", {int(info.readline().split()[1]) / 1024 ** 2:.0f} GB RAM"
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    scratch = Path(tempfile.gettempdir())
    return [
        f"machine: {os.cpu_count()} CPUs ({model or platform.machine()}){memory}, {platform.system()} "
        f"{platform.release()}; scratch {scratch} on {file_system_type(scratch) or '?'}",
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, numpy {numpy.__version__}, "
        f"PyAutoFit: {_autofit_fact()}",
    ]


AUTOFIT_VENV = ROOT / ".venv-autofit"
AUTOFIT_PYTHON_ENV = "LENSD_BENCH_AUTOFIT_PYTHON"


@functools.cache
def autofit_python() -> str | None:
    """The Python interpreter that has ``autofit``, or None.

    PyAutoFit pins its own numpy, scipy, SQLAlchemy, ... so it is best kept out of the project's
    ``.venv``; its measurements run in child processes anyway. Looked for, in order: the
    interpreter named by ``$LENSD_BENCH_AUTOFIT_PYTHON`` (empty: never), ``.venv-autofit/bin/python``
    (made by ``python -m bench --install-pyautofit``), and this interpreter.
    """
    named = os.environ.get(AUTOFIT_PYTHON_ENV)
    if named is not None:
        return named or None
    candidates = [str(AUTOFIT_VENV / "bin" / "python"), sys.executable]
    for python in candidates:
        if python == sys.executable and importlib.util.find_spec("autofit") is None:
            continue
        if os.access(python, os.X_OK) and _autofit_version_of(python) is not None:
            return python
    return None


@functools.cache
def _autofit_version_of(python: str) -> str | None:
    """autofit's version in ``python`` (read from its metadata: importing autofit is slow)."""
    code = "from importlib.metadata import version; print(version('autofit'))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def autofit_version() -> str | None:
    """PyAutoFit's version when an interpreter with ``autofit`` was found (``autofit_python``)."""
    python = autofit_python()
    return None if python is None else _autofit_version_of(python)


def _autofit_fact() -> str:
    python = autofit_python()
    if python is None:
        return "not installed (python -m bench --install-pyautofit adds it in .venv-autofit)"
    where = ("this interpreter" if python == sys.executable else
             os.path.relpath(python, ROOT) if Path(python).is_relative_to(ROOT) else python)
    return f"{autofit_version()} ({where})"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (no dependency)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def bench_contact(socket: Path, args: Sequence[str] = ()) -> list[str]:
    """``--contact`` beside the bench daemon's socket, unless ``args`` name one: a bench daemon must
    never replace (and on stop remove) the contact file of the user's own daemon in ~/.lensd."""
    return [] if "--contact" in args else ["--contact", str(socket.with_suffix(".contact.json"))]


class Daemon:
    """A real ``lensd start --foreground`` process, ready when it printed its ready line."""

    def __init__(self, db: Path | str, socket: Path, *args: str, log: Path | None = None) -> None:
        self.db, self.socket = db, socket  # db: a sqlite file, or a postgresql:// URL (give ``log`` then)
        where = log or (db.with_suffix(".log") if isinstance(db, Path) else socket.with_suffix(".log"))
        self._log = open(where, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop
        command = [sys.executable, "-m", "lensd", "start", "--foreground", "--db", str(db), "--socket",
                   str(socket), "--log-level", "warning", *bench_contact(socket, args), *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                        start_new_session=True)
        line = _readline(self.process, 60)
        if not line.startswith("lensd ready"):
            self.process.kill()
            self.process.wait(30)
            self._log.close()
            raise RuntimeError(f"the daemon did not start: {line!r}; see {self._log.name}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 120) -> None:
        """SIGTERM (graceful: commits what is queued) and wait; kill if it takes too long."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        box.append(process.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


@contextlib.contextmanager
def daemon(db: Path | str, socket: Path, *args: str, log: Path | None = None) -> Iterator[Daemon]:
    process = Daemon(db, socket, *args, log=log)
    try:
        yield process
    finally:
        process.stop()


PEAK_RSS = """
def peak_rss_mb():
    # VmHWM: the peak resident set of this process image. ru_maxrss would also do on a fresh
    # process, but Linux carries it over exec from the forked parent, so a child of a large
    # benchmark process would report the parent's size.
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def child(code: str, *args: str, timeout: float, cwd: Path | None = None,
          env: dict[str, str] | None = None, python: str | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh Python (``python``, default this one); it sets ``result`` (a dict),
    returned with ``peak_rss_mb`` (the child's peak resident memory) added. ``peak_rss_mb()`` is
    defined for the code to call. The child is killed at ``timeout``."""
    wrapper = ("import json, resource, sys\n" + PEAK_RSS + code +
               "\nresult['peak_rss_mb'] = peak_rss_mb()\nprint(json.dumps(result))\n")
    done = subprocess.run([python or sys.executable, "-c", wrapper, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({done.returncode}): {done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"benchmark child printed no result: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def timed(work: Callable[[], Any], repeat: int = 5) -> float:
    """The best of ``repeat`` wall times of ``work()``, in seconds (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def rate(per_second: float, unit: str) -> str:
    return f"{per_second:,.0f} {unit}/s" if per_second >= 100 else f"{per_second:.1f} {unit}/s"


def times(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def format_table(rows: Sequence[Row]) -> list[str]:
    """Rows grouped by section; empty columns left out."""
    cells = [(row.measure, row.lensd, row.baseline, row.ratio, row.pyautofit, row.target) for row in rows]
    used = [i for i in range(len(COLUMNS)) if i == 0 or any(c[i] for c in cells)]
    widths = {i: max(len(COLUMNS[i]), *(len(c[i]) for c in cells)) for i in used}
    header = "  ".join(COLUMNS[i].ljust(widths[i]) if i == 0 else COLUMNS[i].rjust(widths[i]) for i in used)
    lines = [header, "-" * len(header)]
    section = None
    for row, cell in zip(rows, cells, strict=True):
        if row.section != section:
            section = row.section
            lines.append(f"[{section}]")
        lines.append("  ".join(("  " + cell[0]).ljust(widths[i]) if i == 0 else cell[i].rjust(widths[i])
                               for i in used).rstrip())
    return lines


def main(run: Callable[[Options], list[Row]], description: str | None) -> None:
    """``python -m bench.<name> [--quick] [--keep]``: one benchmark alone, with its table."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (the short run)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lbench", dir="/tmp"))  # short: sockets live here
    try:
        rows = run(Options(quick=args.quick, work=work, cache=CACHE))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join([*machine_facts(), "", *format_table(rows)]))


def folder_tree(work: Path, n: int, n_samples: int = 1000) -> Path:
    """``n`` synthetic PyAutoFit fit folders (``lensd.demo.synthetic.write_fits``), made once per run."""
    from lensd.demo.synthetic import write_fits

    tree = work / f"tree{n}x{n_samples}"
    done = tree / ".written"
    if not done.exists():
        shutil.rmtree(tree, ignore_errors=True)
        write_fits(tree, n, n_samples=n_samples)
        done.write_text("")
    return tree
