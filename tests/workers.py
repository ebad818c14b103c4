"""Client processes for daemon tests: run as ``python tests/workers.py MODE SOCKET FIRST COUNT``.

``submit`` sends COUNT records and prints ``ack <id>`` after each acknowledgement (the ledger the
crash tests compare with the database), then ``done``. ``fit`` streams start/progress/complete.
``hang`` opens a fit and waits for stdin to close (to be killed mid-fit). ``script`` opens fit
``fit-FIRST`` (heartbeats at the client's default period) and runs one JSON command per stdin line
(``{"op": "progress", ...}``, ``{"op": "complete", "samples_of": i}``, ``{"op": "fail", "message": m}``,
``{"op": "raise", "message": m}``), printing ``ack <outcome>`` after each is acknowledged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from records_factory import lens_model, record

import lensd
from lensd.errors import LensdError


def submit(socket: str, first: int, count: int, n_samples: int = 100) -> None:
    with lensd.connect_sync(address=socket) as client:  # a socket path, or tcp://host:port
        for i in range(first, first + count):
            outcome = client.submit(record(i, n_samples))
            print(f"ack fit-{i} {outcome}", flush=True)
    print("done", flush=True)


def fit(socket: str, first: int, count: int) -> None:
    with lensd.connect_sync(address=socket) as client:
        for i in range(first, first + count):
            data = record(i)
            handle = client.start(id=data["id"], name="live", unique_tag=data["unique_tag"],
                                  model=data["model"], info=data["info"])
            print(f"started {handle.id}", flush=True)
            handle.progress(max_log_likelihood=-60.0, progress=0.5)
            handle.complete(samples=data["samples"])
            print(f"completed {handle.id}", flush=True)
    print("done", flush=True)


def hang(socket: str, first: int, count: int) -> None:
    del count
    with lensd.connect_sync(socket=socket, heartbeat=0.2) as client:
        handle = client.start(id=f"fit-{first}", name="hanging", model=lens_model())
        print(f"started {handle.id}", flush=True)
        sys.stdin.read()  # until the test closes stdin, or kills this process
        handle.progress(max_log_likelihood=-1.0)
        print("revived", flush=True)
    print("done", flush=True)


def script(socket: str, first: int, count: int) -> None:
    del count
    with lensd.connect_sync(socket=socket) as client:
        handle = client.start(id=f"fit-{first}", name="scripted", unique_tag=f"lens_{first}",
                              model=lens_model(), info={"index": first})
        print(f"started {handle.id}", flush=True)
        for line in sys.stdin:
            command: dict[str, Any] = json.loads(line)
            op = command.pop("op")
            if op == "progress":
                if "samples_of" in command:
                    command["samples"] = record(command.pop("samples_of"))["samples"]
                outcome = handle.progress(**command)
            elif op == "complete":
                samples_of = command.get("samples_of")
                outcome = handle.complete(samples=None if samples_of is None else record(samples_of)["samples"])
            elif op == "fail":
                outcome = handle.fail(command["message"])
            else:  # "raise": leave the client's block with an exception, the fit still open
                raise RuntimeError(command["message"])
            print(f"ack {outcome}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    mode, sock, start, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    try:
        {"submit": submit, "fit": fit, "hang": hang, "script": script}[mode](sock, start, n)
    except LensdError as exc:
        print(f"error {type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)
    del np
