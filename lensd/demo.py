"""``make demo``: a daemon on a temporary database, fed the three ways jobs use, then queried.

1. start ``lensd start --foreground`` watching a folder (polled, as on a cluster file system);
2. three client processes stream fits (start, progress, complete; one fails);
3. PyAutoFit-format output folders appear in the watched folder (synthetic lens fits, and the real
   PyAutoFit fixtures when run from a checkout);
4. the seed queries are answered from the file (``Aggregator``) and over the socket
   (``AsyncAggregator``), and ``lensd jobs`` shows the fits;
5. ``lensd stop`` commits and exits; nothing is left running.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio

import lensd
from lensd import synthetic

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "autofit" / "dir_output"
CLIENT = textwrap.dedent("""
    import sys
    import lensd
    from lensd import synthetic
    socket, first = sys.argv[1], int(sys.argv[2])
    with lensd.connect_sync(socket=socket) as client:
        for i in range(first, first + 8):
            data = synthetic.record(i, n_samples=500, seed=7)
            fit = client.start(id=data["id"], name="nautilus", unique_tag=data["unique_tag"],
                               path_prefix="streamed", model=data["model"], info=data["info"])
            fit.progress(max_log_likelihood=-80.0, progress=0.5)
            if i % 8 == 7:
                fit.fail("the likelihood went NaN (demo)")
            else:
                fit.complete(samples=data["samples"])
""")


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def lensd_cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "lensd", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"lensd {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def wait_for(db: Path, count: int, timeout: float = 60.0) -> int:
    """Until ``count`` fits are in the database (the watcher ingests in the background)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = len(lensd.Aggregator.from_database(db, top_level_only=False))
        if seen >= count:
            return seen
        time.sleep(0.2)  # a demo's progress display, not synchronisation in a test
    return seen


def seed_queries(agg: lensd.Aggregator) -> None:
    lens = agg.model.galaxies.lens
    print(f"fits: {len(agg)}")
    print(f"lens.mass == Isothermal: {len(agg.query(lens.mass == 'Isothermal'))}")
    print(f"einstein_radius > 1.0: {len(agg.query(lens.mass.einstein_radius > 1.0))}")
    both = agg.query((lens.mass == "Isothermal") & (lens.mass.einstein_radius > 1.0))
    print(f"both: {len(both)}")
    either = agg.query((lens.mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3"))
    print(f"einstein_radius > 1.0 | unique_tag == 'lens_3': {len(either)}")
    print(f"info['survey'] == 'SLACS': {len(agg.query(agg.info['survey'] == 'SLACS'))}")
    for samples in both.order_by(agg.max_log_likelihood, reverse=True)[:3].values("samples"):
        best = samples.max_log_likelihood_instance
        print(f"  max log L {max(samples.log_likelihood):9.3f}  "
              f"einstein_radius {best.galaxies.lens.mass.einstein_radius:.3f}  ({len(samples)} samples)")
    for info in agg.query(agg.unique_tag == "lens_3")[:2].values("info"):
        print(f"  info of a lens_3 fit: {info}")


async def async_queries(socket: Path) -> None:
    async with await lensd.AsyncAggregator.connect(socket=socket) as agg:
        lens = agg.model.galaxies.lens
        both = agg.query((lens.mass == "Isothermal") & (lens.mass.einstein_radius > 1.0))
        print(f"fits: {await agg.count()}, both: {await both.count()}")
        best = [max(s.log_likelihood) async for s in both.values("samples")]
        print(f"best max log L over the socket: {max(best):.3f}" if best else "no samples")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lensd-demo-", dir="/tmp"))
    db, socket, watched = work / "demo.sqlite", work / "s", work / "output"
    watched.mkdir()
    daemon = subprocess.Popen([sys.executable, "-m", "lensd", "start", "--foreground", "--db", str(db),
                               "--socket", str(socket), "--watch", str(watched), "--poll", "--poll-interval",
                               "0.5", "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        ready = daemon.stdout.readline()
        if not ready.startswith("lensd ready"):
            raise SystemExit("the daemon did not start")
        say(f"daemon up: {ready.strip()}")

        say("three jobs stream 8 fits each (one of each job's fits fails)")
        clients = [subprocess.Popen([sys.executable, "-c", CLIENT, str(socket), str(8 * k)]) for k in range(3)]
        say("24 PyAutoFit output folders appear in the watched folder")
        synthetic.write_fits(watched, 24, n_samples=300, seed=1)
        expected = 24 + 24
        if FIXTURES.is_dir():
            shutil.copytree(FIXTURES, watched / "pyautofit")
            expected += 12
        if any(c.wait(120) != 0 for c in clients):
            raise SystemExit("a client failed")
        seen = wait_for(db, expected)
        print(f"{seen} fits stored (expected {expected})")

        say("seed queries, read straight from the sqlite file (Aggregator)")
        seed_queries(lensd.Aggregator.from_database(db))
        say("the same over the socket (AsyncAggregator)")
        anyio.run(async_queries, socket)
        say("lensd jobs --limit 8")
        print(lensd_cli("jobs", "--socket", str(socket), "--limit", "8"), end="")
        say("lensd query 'unique_tag == \"lens_3\" & max_log_likelihood > 0' --db ...")
        print(lensd_cli("query", 'unique_tag == "lens_3" & max_log_likelihood > 0', "--db", str(db)), end="")
        say("lensd status")
        print(lensd_cli("status", "--socket", str(socket)))
        lensd_cli("stop", "--socket", str(socket))
        daemon.wait(60)
        say(f"stopped (exit {daemon.returncode}); the database stays at {db}")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


if __name__ == "__main__":
    main()
