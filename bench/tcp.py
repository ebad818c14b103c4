"""TCP against the Unix socket, in the same run: fits/s for K client processes, the handshake's
cost, and heartbeats through a polled spool for 1,000 open fits.

    .venv/bin/python bench/tcp.py [--clients 1,8,64] [--fits 1200] [--opens 200] [--beats 3000]

- **Streams.** K client processes (``lensd.connect_sync``) each submit fits/K whole records with
  100 samples, first over the Unix socket, then over authenticated TCP on 127.0.0.1, against one
  daemon. Every child connects, says it is ready and waits for "go", so interpreter start-up and
  the handshake are outside the timing; fits/s is all fits over (last end - first start).
- **Handshake.** ``--opens`` sequential ``Client.open`` + close over each transport: the Unix
  socket's hello against TCP's hello, challenge and proof (HMAC-SHA256 both ways).
- **Spool heartbeats.** 1,000 running fits; ``--beats`` heartbeat files (the file a spool-only job
  writes each period, here one fit each: the worst case, one job per fit) dropped into a spool the
  daemon polls every 0.5 s; files/s to apply and delete them, and the daemon's CPU per file, read
  from /proc/<pid>/stat. What a job really sends is then one file per --lost-after/4 (at most a
  minute), so 1,000 one-fit jobs at the default --lost-after need 1000/60 files/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from lensd.client.address import Target
from lensd.client.connection import Client
from lensd.wire import spoolfile

TICK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from records_factory import record
import lensd
first, count = int(sys.argv[1]), int(sys.argv[2])
records = [record(i, 100) for i in range(first, first + count)]
with lensd.connect_sync(address=sys.argv[3]) as client:
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    for r in records:
        client.submit(r)
    print(start, time.time(), flush=True)
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_daemon(folder: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    command = [sys.executable, "-m", "lensd", "start", "--foreground", "--db", str(folder / "b.sqlite"),
               "--socket", str(folder / "s"), "--listen", "127.0.0.1:0", "--secret-file", str(folder / "k" / "secret"),
               "--contact", str(folder / "k" / "contact.json"), "--log-level", "warning", *extra]
    daemon = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    if not daemon.stdout.readline().startswith("lensd ready"):
        daemon.kill()
        raise SystemExit("the daemon did not start")
    return daemon, json.loads((folder / "k" / "contact.json").read_text())


def stream(address: str, clients: int, fits: int, first: int, env: dict[str, str]) -> float:
    """fits/s of ``clients`` processes submitting ``fits`` records between them."""
    code = CHILD.format(tests=str(ROOT / "tests"))
    each = max(1, fits // clients)
    children = [subprocess.Popen([sys.executable, "-c", code, str(first + k * each), str(each), address],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                for k in range(clients)]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    spans = []
    for child in children:
        out, _ = child.communicate(timeout=1800)
        start, end = map(float, out.split())
        spans.append((start, end))
    return each * clients / (max(e for _, e in spans) - min(s for s, _ in spans))


def handshakes(where: Target, opens: int) -> float:
    """Median seconds of one connect + hello (+ authentication over TCP) + close."""
    async def run() -> float:
        times = []
        for _ in range(opens):
            began = time.perf_counter()
            client = await Client.open(where)
            times.append(time.perf_counter() - began)
            await client.aclose()
        return statistics.median(times)
    return anyio.run(run)


def spool_heartbeats(folder: Path, beats: int) -> tuple[float, float]:
    """(files/s, daemon CPU ms per file) for ``beats`` heartbeat files over 1,000 running fits."""
    spool = folder / "spool"
    folder.mkdir()
    daemon, _ = start_daemon(folder, "--spool", str(spool), "--poll", "--poll-interval", "0.5")
    try:
        async def open_fits() -> None:
            client = await Client.open(Target(socket=folder / "s"))
            for i in range(1000):
                await client.request("start", record={"id": f"beat-{i}", "status": "running"}, seq=1)
            await client.aclose()
        anyio.run(open_fits)
        stage = folder / "stage"
        paths = [spoolfile.write(stage, "heartbeat", {"ids": [f"beat-{i % 1000}"]}) for i in range(beats)]
        before = cpu_seconds(daemon.pid)
        began = time.perf_counter()
        for path in paths:
            os.rename(path, spool / path.name)  # all at once: the folder the daemon polls
        while any(p.suffix == ".lensd" for p in spool.iterdir()):
            time.sleep(0.05)  # a benchmark's progress poll
        took = time.perf_counter() - began
        return beats / took, (cpu_seconds(daemon.pid) - before) / beats * 1000
    finally:
        daemon.terminate()
        daemon.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--fits", type=int, default=1280)
    parser.add_argument("--opens", type=int, default=200)
    parser.add_argument("--beats", type=int, default=3000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lb", dir="/tmp") as scratch:
        folder = Path(scratch)
        daemon, contact = start_daemon(folder)
        env = {**os.environ, "LENSD_SECRET_FILE": str(folder / "k" / "secret")}
        tcp = f"tcp://127.0.0.1:{contact['tcp'][0]['port']}"
        try:
            first = 0
            for k in map(int, options.clients.split(",")):
                rates = {}
                for name, address in (("socket", str(folder / "s")), ("tcp", tcp)):
                    rates[name] = stream(address, k, options.fits, first, env)
                    first += options.fits
                print(f"K={k:<3} fits/s  socket {rates['socket']:8.0f}  tcp {rates['tcp']:8.0f}  "
                      f"ratio {rates['tcp'] / rates['socket']:.2f}", flush=True)
            unix = handshakes(Target(socket=folder / "s"), options.opens)
            over_tcp = handshakes(Target(address=tcp, secret_file=folder / "k" / "secret"), options.opens)
            print(f"handshake (connect+hello[+auth]+close, median of {options.opens})  socket {unix * 1e3:.2f} ms  "
                  f"tcp {over_tcp * 1e3:.2f} ms  ratio {over_tcp / unix:.2f}", flush=True)
        finally:
            daemon.terminate()
            daemon.wait(120)
        rate, cpu = spool_heartbeats(folder / "beats", options.beats)
        print(f"spool heartbeats, 1,000 open fits, polled every 0.5 s: {rate:.0f} files/s, daemon CPU "
              f"{cpu:.2f} ms/file; 1,000 one-fit jobs at one beat a minute: {1000 / 60 * cpu / 10:.2f}% "
              f"of a core", flush=True)


if __name__ == "__main__":
    main()
