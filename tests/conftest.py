"""Shared fixtures: short socket paths, database paths, and real daemon processes.

A daemon fixture starts ``lensd start --foreground`` as a real process and waits for its ready
line on stdout (printed only once it serves), never for a sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pg_server import pg_server, pg_url  # noqa: F401  (fixtures: the test PostgreSQL cluster)

FIXTURES = Path(__file__).parent / "fixtures" / "autofit"
DIR_OUTPUT = FIXTURES / "dir_output"
SENSITIVITY_OUTPUT = FIXTURES / "sensitivity_output"


@pytest.fixture(autouse=True)
def _own_contact_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's daemons write their contact file in a folder of its own, never ~/.lensd."""
    monkeypatch.setenv("LENSD_CONTACT", str(tmp_path_factory.mktemp("contact") / "contact.json"))


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary folder with a short path: a socket path must fit in ~100 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="ld", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class DaemonProcess:
    """A running ``lensd start --foreground`` and where it lives."""

    db: Path
    socket: Path
    args: list[str]
    process: subprocess.Popen[str] | None = None
    url: str | None = None  # a postgresql:// URL: the daemon's database instead of ``db``
    stderr_lines: list[str] = field(default_factory=list)
    _logged: threading.Condition = field(default_factory=threading.Condition)

    def interpreter(self) -> list[str]:
        """The command that runs Python for the daemon (another user's, in the attack tests)."""
        return [sys.executable]

    def start(self, timeout: float = 60.0) -> None:
        command = [*self.interpreter(), "-m", "lensd", "start", "--foreground", "--db", self.url or str(self.db),
                   "--socket", str(self.socket), *self.args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        line = _readline(self.process, timeout)
        if not line.startswith("lensd ready"):
            self.process.kill()
            _, err = self.process.communicate(timeout=30)
            raise RuntimeError(f"daemon did not start: {line!r} {err[-2000:]}")
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            with self._logged:
                self.stderr_lines.append(line)
                self._logged.notify_all()

    def wait_for_log(self, text: str, after: int = 0, timeout: float = 60.0) -> str:
        """The first stderr line from index ``after`` on that holds ``text``: how a test learns the
        daemon has done something it only logs (a connection's slot freed), without sleeping."""
        def found() -> str | None:
            return next((line for line in self.stderr_lines[after:] if text in line), None)

        with self._logged:
            if not self._logged.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"the daemon did not log {text!r} within {timeout:.0f}s")
            line = found()
            assert line is not None
            return line

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful) and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._drainer.join(timeout)  # its stderr ends with it: every line is in stderr_lines now
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        box.append(process.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


@pytest.fixture
def make_daemon(short_tmp: Path) -> Iterator[type[DaemonProcess] | object]:
    started: list[DaemonProcess] = []

    def make(*args: str, db: Path | str | None = None, socket: Path | None = None,
             start: bool = True) -> DaemonProcess:
        url = db if isinstance(db, str) else None
        file = db if isinstance(db, Path) else short_tmp / "lensd.sqlite"
        daemon = DaemonProcess(file, socket or short_tmp / "s", list(args), url=url)
        if start:
            daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(30)


@pytest.fixture
def daemon(make_daemon) -> DaemonProcess:  # type: ignore[no-untyped-def]
    """One running daemon on a fresh database."""
    return make_daemon()  # type: ignore[no-any-return]


def integrity_ok(db: Path) -> bool:
    conn = sqlite3.connect(db)
    try:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
    finally:
        conn.close()


def lensd_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
              input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lensd", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, input=input)


# --- SLURM templates (test_deploy, test_slurm_finish) -------------------------------------

@pytest.fixture
def shared(short_tmp: Path) -> Path:
    """The shared folder of a survey, with its list of datasets."""
    folder = short_tmp / "shared"
    folder.mkdir()
    (folder / "datasets.txt").write_text("lens_a\nlens_b\nlens_c\n")
    return folder


@pytest.fixture
def daemon_jobs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for job in started:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)
