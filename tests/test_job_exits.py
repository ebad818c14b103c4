"""How a job's own exceptions leave the client's block, tried in real job processes against a real
daemon: the exception leaves as itself (never an ExceptionGroup), ``sys.exit`` keeps its code (SLURM
records it), Ctrl-C stays KeyboardInterrupt, and the fits the block left open are marked failed.
``connect_sync()`` also works without ``with`` (``client.close()``).

Each job is a ``python -c`` process; the test waits for its exit and then reads the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from records_factory import record
from test_jobs import fit_of

import lensd
from lensd.wire import spoolfile

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


AFTER_CLOSE = {
    "sync": """
        import sys
        import lensd
        client = lensd.connect_sync(socket=sys.argv[1], spool=sys.argv[2])
        fit = client.start(id="fit-c", name="closed")
        client.close()
        for call in (lambda: fit.progress(progress=0.5), lambda: fit.complete(samples=None),
                     lambda: client.start(id="fit-d", name="after")):
            try:
                call()
            except lensd.errors.ClientClosed as exc:
                print("refused", exc.code, exc, flush=True)
    """,
    "async": """
        import sys
        import anyio
        import lensd
        async def main():
            async with lensd.connect(socket=sys.argv[1], spool=sys.argv[2]) as client:
                fit = await client.start(id="fit-c", name="closed")
            for call in (lambda: fit.progress(progress=0.5), lambda: fit.complete(samples=None),
                         lambda: client.start(id="fit-d", name="after")):
                try:
                    await call()
                except lensd.errors.ClientClosed as exc:
                    print("refused", exc.code, exc, flush=True)
        anyio.run(main)
    """,
}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_closed_client_refuses_every_op_and_sends_nothing(daemon, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    """A call on a closed client is one clear ``ClientClosed``: it neither reconnects (a closed
    client sends no heartbeats, so the fit would be reported to and then go lost) nor spools."""
    spool = tmp_path / "spool"
    spool.mkdir()
    job = subprocess.run([sys.executable, "-c", textwrap.dedent(AFTER_CLOSE[kind]), str(daemon.socket), str(spool)],
                         capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    message = "this lensd client is closed: open a new one (lensd.connect or lensd.connect_sync)"
    assert job.stdout.splitlines() == [f"refused closed {message}"] * 3
    fit = fit_of(daemon.db, "fit-c")
    assert fit is not None and fit.status == "running" and fit.progress is None
    assert fit_of(daemon.db, "fit-d") is None
    assert list(spool.iterdir()) == []


class _WatchedLock:
    """A lock that says when it was taken, and keeps who took, waited in vain for and gave it back
    in order: the test knows the heartbeat holds the connection, and what waited on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = threading.Event()
        self.events: list[tuple[str, str]] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        self.events.append((threading.current_thread().name, "took" if got else "gave up"))
        if got:
            self.taken.set()
        return got

    def release(self) -> None:
        self.events.append((threading.current_thread().name, "released"))
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_heartbeat_to_a_stalled_daemon_holds_neither_the_exits_fail_nor_close(  # type: ignore[no-untyped-def]
        daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """connect_sync's heartbeat thread shares the job's connection. With the daemon stopped
    (SIGSTOP) while a beat waits for its reply (up to half a period: 60 s here), leaving the block
    on an exception still fails the open fit: its send gives up waiting for the connection the beat
    holds and spools the fail; and closing shuts the beat's socket down instead of waiting for it:
    close gives up waiting too, the beat lets go only then, and close takes the connection after."""
    from lensd.client import sync

    monkeypatch.setattr(sync, "FAIL_ON_EXIT_TIMEOUT", 1.0)
    spool = tmp_path / "spool"
    client = lensd.connect_sync(socket=daemon.socket, spool=spool, heartbeat=120.0)
    lock = _WatchedLock()
    client._sender.lock = lock  # type: ignore[assignment]
    beat = threading.Thread(target=client._beat, args=(["fit-held"],), name="beat")
    try:
        with pytest.raises(ValueError, match="boom"), client:
            client.start(id="fit-held", name="held")
            lock.taken.clear()
            os.kill(daemon.process.pid, signal.SIGSTOP)
            lock.events.clear()
            beat.start()
            assert lock.taken.wait(30)
            raise ValueError("boom")
        beat.join(60)
        assert not beat.is_alive()  # its socket was shut down under it
    finally:
        os.kill(daemon.process.pid, signal.SIGCONT)
    main = threading.main_thread().name
    assert lock.events == [("beat", "took"),
                           (main, "gave up"),  # the fail's send, at the exit's deadline: spooled
                           (main, "gave up"),  # close's patience: then it shuts the beat's socket down
                           ("beat", "released"),  # its reply never came: the shut-down socket ended it
                           (main, "took"), (main, "released")]  # close drops the connection
    spooled = [spoolfile.read(path) for path in spoolfile.pending(spool)]
    assert [(op, fields["id"], fields["error"]) for op, fields in spooled if op == "fail"] == \
        [("fail", "fit-held", "ValueError: boom")]


class _Interrupting:
    """A socket whose next large ``sendall`` writes half the frame, then is interrupted (Ctrl-C)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.armed = True

    def sendall(self, data: bytes) -> None:
        if self.armed and len(data) > 4096:
            self.armed = False
            self._sock.sendall(data[: len(data) // 2])
            raise KeyboardInterrupt
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_ctrl_c_in_the_middle_of_a_frame_still_fails_the_open_fit(daemon) -> None:  # type: ignore[no-untyped-def]
    """Half a frame sent leaves the connection unusable: the exit's ``fail`` goes on a new one
    (on the old one the daemon would read it as the rest of the frame and never answer)."""
    with pytest.raises(KeyboardInterrupt), lensd.connect_sync(socket=daemon.socket) as client:
        client.start(id="fit-cut", name="cut")
        inner = client._sender.client
        assert inner is not None
        inner._sock = _Interrupting(inner._sock)  # type: ignore[assignment]
        client.submit(record(77, n_samples=1000))
    fit = fit_of(daemon.db, "fit-cut")
    assert fit is not None and (fit.status, fit.error) == ("failed", "KeyboardInterrupt")
