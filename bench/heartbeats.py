"""Heartbeats at 10,000 open fits: how many fit heartbeats per second one daemon absorbs, and what
keeping 10,000 fits alive costs it in CPU at the periods clients really use.

    .venv/bin/python bench/heartbeats.py [--fits 10000] [--connections 100] [--seconds 5]

The fits are spread over ``--connections`` client connections, each sending what
``lensd.connect()`` sends: one ``heartbeat`` frame naming all of its open fits, one request in
flight per connection. The baseline (same run) is one frame per fit, which is what a client that
beat for each fit separately would send. The daemon is a real ``lensd start --foreground`` process
(default durability: every commit is fsynced); its CPU is read from /proc/<pid>/stat (utime +
stime), so no dependency is added. Takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from lensd.client.connection import Client
from lensd.mounts import file_system_type

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_daemon(folder: Path, lost_after: float) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "lensd", "start", "--foreground", "--db", str(folder / "lensd.sqlite"),
               "--socket", str(folder / "s"), "--lost-after", str(lost_after), "--log-level", "warning",
               "--contact", str(folder / "contact.json")]  # never the user's ~/.lensd/contact.json
    daemon = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    line = daemon.stdout.readline()  # printed once the daemon serves
    if not line.startswith("lensd ready"):
        daemon.kill()
        raise SystemExit(f"the daemon did not start: {line!r}")
    return daemon


class Load:
    """``connections`` job clients holding ``fits`` open fits between them."""

    def __init__(self, socket: Path, fits: int, connections: int) -> None:
        self.socket = socket
        self.ids = [[f"fit-{c}-{i}" for i in range(fits // connections)] for c in range(connections)]
        self.clients: list[Client] = []

    async def open(self) -> float:
        """Connect and start every fit; returns the fits started per second."""
        self.clients = [await Client.open(self.socket) for _ in self.ids]
        started = time.perf_counter()

        async def start_all(client: Client, ids: list[str]) -> None:
            job = {"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7", "host": "node1", "pid": 1}
            for fit_id in ids:
                await client.request("start", record={"id": fit_id, "status": "running", "job": job}, seq=1)

        async with anyio.create_task_group() as group:
            for client, ids in zip(self.clients, self.ids, strict=True):
                group.start_soon(start_all, client, ids)
        return sum(map(len, self.ids)) / (time.perf_counter() - started)

    async def flood(self, seconds: float, per_fit: bool) -> tuple[int, int]:
        """Heartbeats as fast as the daemon acknowledges them; returns (frames, fits touched)."""
        frames = touched = 0
        with anyio.move_on_after(seconds):
            async def beat(client: Client, ids: list[str]) -> None:
                nonlocal frames, touched
                while True:
                    for group in ([[i] for i in ids] if per_fit else [ids]):
                        await client.request("heartbeat", ids=group)
                        frames += 1
                        touched += len(group)

            async with anyio.create_task_group() as group:
                for client, ids in zip(self.clients, self.ids, strict=True):
                    group.start_soon(beat, client, ids)
        return frames, touched

    async def paced(self, seconds: float, period: float) -> int:
        """Every connection beats once per ``period``, the connections evenly staggered."""
        frames = 0
        with anyio.move_on_after(seconds):
            async def beat(index: int, client: Client, ids: list[str]) -> None:
                nonlocal frames
                await anyio.sleep(period * index / len(self.clients))  # stagger, as real jobs are
                while True:
                    await client.request("heartbeat", ids=ids)
                    frames += 1
                    await anyio.sleep(period)  # the heartbeat period under test

            async with anyio.create_task_group() as group:
                for index, (client, ids) in enumerate(zip(self.clients, self.ids, strict=True)):
                    group.start_soon(beat, index, client, ids)
        return frames

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


def measure(pid: int, work: Any) -> tuple[Any, float, float]:
    """Run ``work`` (a coroutine function); returns its result, wall seconds, daemon CPU seconds."""
    cpu, wall = cpu_seconds(pid), time.perf_counter()
    result = anyio.run(work, backend="asyncio")
    return result, time.perf_counter() - wall, cpu_seconds(pid) - cpu


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(cells)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each flood and idle run")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of each paced run")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="lhb", dir="/tmp"))
    daemon = start_daemon(folder, lost_after=3600)  # nothing becomes lost while we measure
    load = Load(folder / "s", args.fits, args.connections)
    print(f"{args.fits} open fits over {args.connections} connections; database on "
          f"{file_system_type(folder) or '?'} ({folder}), durability full; {os.cpu_count()} CPUs")
    try:
        started_rate = anyio.run(load.open, backend="asyncio")
        print(f"opened them at {started_rate:,.0f} fits/s (one start event each)\n")

        rows = [["run", "frames/s", "fit heartbeats/s", "daemon CPU", "CPU µs per fit heartbeat"]]

        def flood_row(label: str, per_fit: bool) -> float:
            (frames, touched), wall, cpu = measure(daemon.pid, lambda: load.flood(args.seconds, per_fit))
            rows.append([label, f"{frames / wall:,.0f}", f"{touched / wall:,.0f}", f"{cpu / wall:.0%}",
                         f"{cpu / touched * 1e6:.1f}"])
            return float(touched / wall)

        per_fit = flood_row("flood, one frame per fit (baseline)", per_fit=True)
        per_connection = flood_row("flood, one frame per connection (lensd)", per_fit=False)
        _, wall, cpu = measure(daemon.pid, lambda: anyio.sleep(args.seconds))
        rows.append(["idle, no heartbeats", "0", "0", f"{cpu / wall:.1%}", ""])
        for period in (60.0, 10.0, 1.0):
            frames, wall, cpu = measure(daemon.pid, lambda p=period: load.paced(args.paced_seconds, p))
            touched = frames * args.fits // args.connections
            rows.append([f"paced, period {period:g} s", f"{frames / wall:,.1f}", f"{touched / wall:,.0f}",
                         f"{cpu / wall:.1%}", f"{cpu / touched * 1e6:.1f}" if touched else ""])
        print_table(rows)
        print(f"\nbatching heartbeats per connection absorbs {per_connection / per_fit:.0f}x the fit "
              f"heartbeats per second of one frame per fit")
        anyio.run(load.close, backend="asyncio")
    finally:
        daemon.terminate()
        daemon.wait(60)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
