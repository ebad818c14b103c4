"""``make demo``: a daemon on a temporary database, fed the three ways jobs use, then queried.

1. ``lensd start --foreground`` on a database in a new temporary folder, watching a folder (polled,
   as on a cluster file system) and a spool folder;
2. three client processes stream fits as SLURM array tasks would (start, progress, complete; one
   fit in eight fails), and a fourth, "on another node", cannot reach the socket and spools;
3. PyAutoFit-format output folders appear in the watched folder: synthetic lens fits, and the real
   PyAutoFit fixtures when run from a checkout;
4. the seed queries of SPEC §4 (and a few more) are answered from the file (``Aggregator``) and
   over the socket (``AsyncAggregator``), which must agree; then ``lensd jobs`` and ``lensd query``;
5. ``lensd stop`` commits and exits; no process is left running. The database stays, to explore.

``python -m lensd.demo [--dir DIR]``; ``--client`` runs one client process (the demo starts them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

import lensd
from lensd.demo import synthetic

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "autofit" / "dir_output"
FITS_PER_CLIENT = 8
STREAMING_CLIENTS = 3
WATCHED_FITS = 24
Predicate = Callable[[Any], Any]  # an aggregator (sync or async) -> a query expression


def seed_queries() -> list[tuple[str, Predicate]]:
    """SPEC §4's seed queries, then fields a cluster user asks about: survey, SLURM task, status."""
    def lens(agg: Any) -> Any:
        return agg.model.galaxies.lens

    return [
        ('lens.mass == "Isothermal"', lambda agg: lens(agg).mass == "Isothermal"),
        ("lens.mass.einstein_radius > 1.0", lambda agg: lens(agg).mass.einstein_radius > 1.0),
        ('(lens.mass == "Isothermal") & (lens.mass.einstein_radius > 1.0)',
         lambda agg: (lens(agg).mass == "Isothermal") & (lens(agg).mass.einstein_radius > 1.0)),
        ('(lens.mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3")',
         lambda agg: (lens(agg).mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3")),
        ('agg.search.unique_tag == "gaussian_a"', lambda agg: agg.search.unique_tag == "gaussian_a"),
        ('agg.info["survey"] == "SLACS"', lambda agg: agg.info["survey"] == "SLACS"),
        ('agg.job["SLURM_ARRAY_TASK_ID"] == 1', lambda agg: agg.job["SLURM_ARRAY_TASK_ID"] == 1),
        ('agg.status == "failed"', lambda agg: agg.status == "failed"),
    ]


def client(socket: Path, first: int, spool: Path | None) -> None:
    """One job: fits ``first`` .. ``first + 7``, each started, half-way reported, then completed.

    The last of the eight fails, as a fit whose likelihood went NaN would. With ``spool`` and no
    daemon at ``socket`` (a node the socket does not reach), every event goes to the spool.
    """
    with lensd.connect_sync(socket=socket, spool=spool) as job:
        for i in range(first, first + FITS_PER_CLIENT):
            data = synthetic.record(i, n_samples=500, seed=7)
            fit = job.start(id=data["id"], name="nautilus", unique_tag=data["unique_tag"],
                            path_prefix="streamed", model=data["model"], info=data["info"])
            fit.progress(max_log_likelihood=float(data["samples"]["log_likelihood"][:250].max()), progress=0.5)
            if i % FITS_PER_CLIENT == FITS_PER_CLIENT - 1:
                fit.fail("the likelihood went NaN (a demo failure)")
            else:
                fit.complete(samples=data["samples"])


def start_client(first: int, socket: Path, spool: Path | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "lensd.demo", "--client", str(first), "--socket", str(socket)]
    return subprocess.Popen(command + (["--spool", str(spool)] if spool is not None else []), env=env)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def lensd_cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "lensd", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"lensd {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def settled(db: Path, expected: int, timeout: float = 60.0) -> int:
    """Wait until ``expected`` fits are stored and none is still running (watch and spool are async)."""
    deadline = time.monotonic() + timeout
    while True:
        agg = lensd.Aggregator.from_database(db, top_level_only=False)
        try:
            stored, running = len(agg), len(agg.query(agg.status == "running"))
        finally:
            agg.close()
        if (stored >= expected and not running) or time.monotonic() > deadline:
            return stored
        time.sleep(0.2)  # a demo's progress poll, not synchronisation in a test


def answer_from_file(db: Path) -> list[int]:
    agg = lensd.Aggregator.from_database(db)
    try:
        counts = []
        for label, predicate in seed_queries():
            chosen = agg.query(predicate(agg))
            tags = sorted({str(fit.unique_tag) for fit in chosen.limit(200).fits()})
            counts.append(len(chosen))
            more = " ..." if len(tags) > 4 else ""
            print(f"{len(chosen):3} fits  {label:66} unique_tag: {', '.join(tags[:4])}{more}")
        lens = agg.model.galaxies.lens
        best = agg.query((lens.mass == "Isothermal") & (lens.mass.einstein_radius > 1.0))
        print("\nthe three best isothermal lenses with einstein_radius > 1.0, from their samples:")
        for samples in best.order_by(agg.max_log_likelihood, reverse=True)[:3].values("samples"):
            radius = samples.max_log_likelihood_instance.galaxies.lens.mass.einstein_radius
            print(f"  max log L {max(samples.log_likelihood_list):9.3f}  einstein_radius {radius:.3f}  "
                  f"({len(samples)} samples)")
        return counts
    finally:
        agg.close()


async def answer_over_socket(socket: Path) -> list[int]:
    async with await lensd.AsyncAggregator.connect(socket=socket) as agg:
        counts = [await agg.query(predicate(agg)).count() for _, predicate in seed_queries()]
        lens = agg.model.galaxies.lens
        best = agg.query((lens.mass == "Isothermal") & (lens.mass.einstein_radius > 1.0))
        top = [max(s.log_likelihood_list) async for s in best.order_by(agg.max_log_likelihood, reverse=True)[:3]
               .values("samples")]
        print("counts: " + " ".join(map(str, counts)))
        print("the three best max log L: " + ", ".join(f"{value:.3f}" for value in top))
        return counts


def run_demo(work: Path) -> None:
    db, socket, watched, spool = work / "demo.sqlite", work / "lensd.sock", work / "output", work / "spool"
    watched.mkdir(parents=True, exist_ok=True)
    spool.mkdir(mode=0o700, exist_ok=True)
    daemon = subprocess.Popen([sys.executable, "-m", "lensd", "start", "--foreground", "--db", str(db),
                               "--socket", str(socket), "--watch", str(watched), "--poll", "--spool",
                               str(spool), "--poll-interval", "0.5", "--log-level", "warning"],
                              stdout=subprocess.PIPE, text=True)
    clients: list[subprocess.Popen[bytes]] = []
    try:
        assert daemon.stdout is not None
        ready = daemon.stdout.readline()
        if not ready.startswith("lensd ready"):
            raise SystemExit("the daemon did not start")
        say(f"daemon up (pid {daemon.pid}): {ready.strip()}")

        say(f"{STREAMING_CLIENTS} jobs (SLURM array tasks 0-{STREAMING_CLIENTS - 1}) stream {FITS_PER_CLIENT} "
            f"fits each over the socket; a job on 'another node' spools {FITS_PER_CLIENT} more")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        for task in range(STREAMING_CLIENTS):
            slurm = {"SLURM_JOB_ID": str(4243 + task), "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": str(task)}
            clients.append(start_client(FITS_PER_CLIENT * task, socket, None, {**env, **slurm}))
        clients.append(start_client(FITS_PER_CLIENT * STREAMING_CLIENTS, work / "unreachable.sock", spool, env))
        say(f"{WATCHED_FITS} PyAutoFit output folders appear in the watched folder {watched}")
        synthetic.write_fits(watched, WATCHED_FITS, n_samples=300, seed=1)
        expected = FITS_PER_CLIENT * (STREAMING_CLIENTS + 1) + WATCHED_FITS
        if FIXTURES.is_dir():
            print("and the real PyAutoFit output folders of tests/fixtures (12 fits, a grid search among them)")
            shutil.copytree(FIXTURES, watched / "pyautofit")
            expected += 12
        if any(c.wait(120) != 0 for c in clients):
            raise SystemExit("a client failed")
        stored = settled(db, expected)
        print(f"{stored} fits stored (expected {expected}); grid cells are hidden from queries unless asked for")

        say("seed queries, read straight from the sqlite file (Aggregator)")
        from_file = answer_from_file(db)
        say("the same queries over the socket (AsyncAggregator)")
        over_socket = anyio.run(answer_over_socket, socket)
        if over_socket != from_file:
            raise SystemExit(f"the file and the daemon disagree: {from_file} != {over_socket}")
        print("the file and the daemon agree")

        say("lensd jobs --limit 6")
        print(lensd_cli("jobs", "--socket", str(socket), "--limit", "6"), end="")
        say("lensd jobs --status failed")
        print(lensd_cli("jobs", "--socket", str(socket), "--status", "failed"), end="")
        expression = 'model.galaxies.lens.mass == "Isothermal" & model.galaxies.lens.mass.einstein_radius > 1.0'
        say(f"lensd query '{expression}' --order-by -max_log_likelihood --limit 5")
        print(lensd_cli("query", expression, "--db", str(db), "--order-by", "-max_log_likelihood", "--limit", "5"),
              end="")
        say("lensd status")
        print(lensd_cli("status", "--socket", str(socket)))
        lensd_cli("stop", "--socket", str(socket))
        daemon.wait(60)
        say(f"daemon stopped (exit {daemon.returncode}); nothing of the demo is running")
        print(f"the database stays at {db}; try\n  lensd query 'info[\"survey\"] == \"SLACS\"' --db {db}\n"
              f"  lensd export --db {db} --query 'status == \"completed\"' | head")
    finally:
        processes: list[subprocess.Popen[Any]] = [*clients, daemon]
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lensd.demo", description="make demo: a daemon fed and queried")
    parser.add_argument("--dir", type=Path, help="work in this folder (default: a new temporary folder)")
    parser.add_argument("--client", type=int, metavar="FIRST", help=argparse.SUPPRESS)
    parser.add_argument("--socket", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spool", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:
        client(args.socket, args.client, args.spool)
        return
    work = args.dir if args.dir is not None else Path(tempfile.mkdtemp(prefix="lensd-demo-", dir="/tmp"))
    run_demo(work)


if __name__ == "__main__":
    main()
