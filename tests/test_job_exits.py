"""How a job's own exceptions leave the client's block, tried in real job processes against a real
daemon: the exception leaves as itself (never an ExceptionGroup), ``sys.exit`` keeps its code (SLURM
records it), Ctrl-C stays KeyboardInterrupt, and the fits the block left open are marked failed.
``connect_sync()`` also works without ``with`` (``client.close()``).

Each job is a ``python -c`` process; the test waits for its exit and then reads the database.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_jobs import fit_of

SYNC_JOB = """
import sys
import lensd
socket = sys.argv[1]
def body(client):
    client.start(id="fit-x", name="exiting")
    {action}
{wrapper}
"""
SYNC_WRAPPERS = {
    "with": "with lensd.connect_sync(socket=socket) as client:\n    body(client)",
    "catch": ("try:\n    with lensd.connect_sync(socket=socket) as client:\n        body(client)\n"
              "except {caught} as exc:\n    print('caught', type(exc).__name__, exc, flush=True)"),
}
ASYNC_JOB = """
import sys
import anyio
import lensd
socket = sys.argv[1]
async def main():
    async with lensd.connect(socket=socket) as client:
        await client.start(id="fit-x", name="exiting")
        {action}
{wrapper}
"""
ASYNC_WRAPPERS = {
    "with": "anyio.run(main)",
    "catch": ("try:\n    anyio.run(main)\nexcept {caught} as exc:\n"
              "    print('caught', type(exc).__name__, exc, flush=True)"),
}


def run_job(kind: str, socket: Path, action: str, wrapper: str = "with",
            caught: str = "Exception") -> subprocess.CompletedProcess[str]:
    template, wrappers = (SYNC_JOB, SYNC_WRAPPERS) if kind == "sync" else (ASYNC_JOB, ASYNC_WRAPPERS)
    code = template.format(action=action, wrapper=wrappers[wrapper].format(caught=caught))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(socket)],
                          capture_output=True, text=True, timeout=120)


def failed_with(db: Path) -> str | None:
    fit = fit_of(db, "fit-x")
    assert fit is not None
    assert fit.status == "failed", fit.status
    return str(fit.error) if fit.error is not None else None


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_exception_leaves_the_block_as_itself_and_fails_the_open_fit(daemon, kind: str) -> None:  # type: ignore[no-untyped-def]
    job = run_job(kind, daemon.socket, "raise ValueError('bad prior')", "catch", "ValueError")
    assert job.returncode == 0, job.stderr
    assert job.stdout.strip() == "caught ValueError bad prior"
    assert failed_with(daemon.db) == "ValueError: bad prior"

    uncaught = run_job(kind, daemon.socket, "raise ValueError('again')")
    assert uncaught.returncode == 1
    assert "ExceptionGroup" not in uncaught.stderr
    assert uncaught.stderr.rstrip().splitlines()[-1] == "ValueError: again"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sys_exit_keeps_its_code_without_a_traceback(daemon, kind: str) -> None:  # type: ignore[no-untyped-def]
    job = run_job(kind, daemon.socket, "sys.exit(3)")
    assert job.returncode == 3, job.stderr
    assert "Traceback" not in job.stderr
    assert failed_with(daemon.db) == "SystemExit: 3"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_keyboard_interrupt_stays_keyboard_interrupt(daemon, kind: str) -> None:  # type: ignore[no-untyped-def]
    job = run_job(kind, daemon.socket, "raise KeyboardInterrupt", "catch", "KeyboardInterrupt")
    assert job.returncode == 0, job.stderr
    assert job.stdout.startswith("caught KeyboardInterrupt")
    assert failed_with(daemon.db) == "KeyboardInterrupt"

    uncaught = run_job(kind, daemon.socket, "raise KeyboardInterrupt")
    assert uncaught.returncode == -signal.SIGINT, uncaught.stderr  # as Python ends on an unhandled Ctrl-C


def test_connect_sync_without_with_and_close(daemon) -> None:  # type: ignore[no-untyped-def]
    code = textwrap.dedent("""
        import sys
        import lensd
        client = lensd.connect_sync(socket=sys.argv[1])
        fit = client.start(id="fit-y", name="plain")
        print(repr(client), repr(fit), flush=True)
        print(fit.complete(samples=None), flush=True)
        client.close()
        client.close()  # twice is harmless
        print(repr(client), flush=True)
        forgotten = lensd.connect_sync(socket=sys.argv[1])  # never closed: the script still ends
        forgotten.start(id="fit-z", name="forgotten")
        print("end", flush=True)
    """)
    job = subprocess.run([sys.executable, "-c", code, str(daemon.socket)], capture_output=True, text=True,
                         timeout=120)
    assert job.returncode == 0, job.stderr
    first, outcome, closed, end = job.stdout.splitlines()
    assert first == (f"<lensd.SyncJobClient {daemon.socket}, 1 open fit(s)> "
                     "<lensd.SyncFitHandle 'fit-y' open>")
    assert (outcome, closed, end) == ("applied", "<lensd.SyncJobClient closed>", "end")
    fit = fit_of(daemon.db, "fit-y")
    assert fit is not None and fit.status == "completed"
    forgotten = fit_of(daemon.db, "fit-z")
    assert forgotten is not None and forgotten.status == "running"
