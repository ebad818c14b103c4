"""What a job pays: start-up of ``import lensd`` and the CLI, and one ``fit.progress()`` round trip.

    .venv/bin/python -m bench.startup [--quick]

- **start-up**: a fresh interpreter running ``import lensd``, ``lensd status`` and ``lensd submit``
  (one PyAutoFit folder of 200 samples) against a real daemon, each run ``RUNS`` times, interleaved
  with the baseline, ``python -c pass``, in the same run, lensd's bytecode compiled first (as an
  installed package's is). Each line gives the median wall time and
  the median CPU time (user + system of the child, from ``wait4``); on this shared 2-core machine
  the wall time also holds the time spent waiting for a core, so the verdict is on CPU time, with
  the wall time beside it when it misses. ``lensd status`` and ``import lensd`` load neither numpy nor the store
  (tests/test_startup.py holds that); ``lensd submit`` of a folder parses samples.csv, so it needs
  numpy.
- **progress round trip**: ``connect_sync()``, ``start()``, then ``fit.progress(progress=...,
  max_log_likelihood=...)`` ``PROGRESS`` times, one at a time as a job sends them; each returns when
  the daemon has committed it. Measured against daemons at ``--durability full`` (the default:
  every commit fsynced, ~1 ms on this disk) and ``normal`` (WAL without fsync at commit), with the
  CPU it costs the client (``time.process_time``) and the daemon (/proc) per call. The baseline is a
  bare request the daemon answers without the writer (``status``, blocking client) on the same
  daemon. The verdict is given on the wall median and on the CPU: a round trip cannot be shorter
  than the CPU it needs, and on a loaded machine it waits for cores besides.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lensd
from bench import Options, Row
from bench._common import child, cpu_seconds, daemon, main, ms, times, verdict

SECTION = "what a job pays: start-up and a progress round trip"
TARGET_START = 0.150
TARGET_PROGRESS = 0.001
RUNS = 15
PROGRESS = 400

ROUND_TRIPS = """
import statistics, time
import lensd
socket, n = sys.argv[1], int(sys.argv[2])
with lensd.connect_sync(socket) as client:
    fit = client.start(name="bench", unique_tag="lens_0")
    laps = []
    cpu = time.process_time()
    for i in range(n):
        began = time.perf_counter()
        fit.progress(progress=i / n, max_log_likelihood=float(i))
        laps.append(time.perf_counter() - began)
    cpu = time.process_time() - cpu
    fit.complete()
result = {"median": statistics.median(laps), "p90": sorted(laps)[int(0.9 * n)], "cpu": cpu / n}
"""

BARE_REQUESTS = """
import statistics, time
from lensd.client.blocking import BlockingClient
socket, n = sys.argv[1], int(sys.argv[2])
with BlockingClient(socket) as client:
    laps = []
    cpu = time.process_time()
    for _ in range(n):
        began = time.perf_counter()
        client.request("status")
        laps.append(time.perf_counter() - began)
    cpu = time.process_time() - cpu
result = {"median": statistics.median(laps), "cpu": cpu / n}
"""


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one child process (CPU from wait4's rusage: user + system)."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command} exited {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def _startup(options: Options, socket: Path, folder: Path) -> list[Row]:
    python = sys.executable
    lensd_cli = [python, "-m", "lensd"]
    commands = {
        "python -c pass (baseline)": [python, "-c", "pass"],
        "import lensd": [python, "-c", "import lensd"],
        "lensd status": [*lensd_cli, "status", "--socket", str(socket)],
        "lensd submit <folder of 200 samples>": [*lensd_cli, "submit", str(folder), "--socket", str(socket)],
    }
    env = dict(os.environ)
    # An installed package has its bytecode (pip compiles it); with PYTHONDONTWRITEBYTECODE set
    # (as on this machine) a source tree would compile ~50 modules in every run (~50 ms of CPU).
    compileall.compile_dir(Path(lensd.__file__).parent, quiet=1)
    laps: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for command in commands.values():
        _run(command, env)  # warm-up: bytecode and pages in the cache
    for _ in range(5 if options.quick else RUNS):
        for name, command in commands.items():  # interleaved, so load hits each alike
            laps[name].append(_run(command, env))
    base_wall = statistics.median(w for w, _ in laps["python -c pass (baseline)"])
    base_cpu = statistics.median(c for _, c in laps["python -c pass (baseline)"])
    rows = []
    for name in commands:
        wall = statistics.median(w for w, _ in laps[name])
        cpu = statistics.median(c for _, c in laps[name])
        if name.endswith("(baseline)"):
            rows.append(Row(SECTION, f"{name}: wall / CPU", f"{ms(wall)} / {ms(cpu)}", "(the baseline)"))
            continue
        rows.append(Row(SECTION, f"{name}: wall / CPU, median of {len(laps[name])}", f"{ms(wall)} / {ms(cpu)}",
                        f"{ms(base_wall)} / {ms(base_cpu)}",
                        f"+{ms(cpu - base_cpu)} CPU, {times(cpu / base_cpu)} pass",
                        target=f"< {TARGET_START * 1000:.0f} ms CPU: {verdict(cpu < TARGET_START)}"
                               f"{'' if wall < TARGET_START else f' (wall {ms(wall)}: a shared machine)'}"))
    return rows


def run(options: Options) -> list[Row]:
    from lensd.demo.synthetic import write_fit

    folder = options.work / "startup-tree"
    write_fit(folder, 0, 200)
    rows: list[Row] = []
    for durability in ("full", "normal"):
        db, socket = options.work / f"startup-{durability}.sqlite", options.work / f"startup-{durability}.sock"
        n = 100 if options.quick else PROGRESS
        with daemon(db, socket, "--durability", durability) as process:
            if durability == "full":
                rows += _startup(options, socket, folder)
            cpu = cpu_seconds(process.pid)
            found = child(ROUND_TRIPS, str(socket), str(n), timeout=300)
            daemon_cpu = (cpu_seconds(process.pid) - cpu) / n
            cpu = cpu_seconds(process.pid)
            bare = child(BARE_REQUESTS, str(socket), str(n), timeout=300)
            bare_daemon_cpu = (cpu_seconds(process.pid) - cpu) / n
        median, total_cpu = found["median"], found["cpu"] + daemon_cpu
        rows.append(Row(
            SECTION, f"fit.progress() round trip, --durability {durability}: wall median (p90); CPU client + daemon",
            f"{ms(median)} ({ms(found['p90'])}); {ms(found['cpu'])} + {ms(daemon_cpu)}",
            f"status request: {ms(bare['median'])}; {ms(bare['cpu'])} + {ms(bare_daemon_cpu)}",
            times(median / bare["median"]) + " a bare request",
            target=f"< {TARGET_PROGRESS * 1000:.0f} ms: wall {verdict(median < TARGET_PROGRESS)},"
                   f" CPU {verdict(total_cpu < TARGET_PROGRESS)}"))
    return rows


if __name__ == "__main__":
    main(run, __doc__)
