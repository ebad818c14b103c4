"""Helpers for the dashboard tests: a ``lensd web`` process, plain HTTP requests, and Debian's
chromium driven by Playwright (pointed at /usr/bin/chromium: nothing downloads a browser)."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conftest import _readline

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium waits on the closed network of CI.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000  # the longest a page may take to show a change, on a loaded machine


@dataclass
class Web:
    """A served dashboard: its URL with the token, and the process serving it."""

    url: str
    process: subprocess.Popen[str] | None = None

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]

    @property
    def token(self) -> str:
        return self.url.rsplit("token=", 1)[1]


START_SECONDS = 120.0  # the longest a ``lensd web`` may take to listen: imports take a minute at load 30


def url_line(process: subprocess.Popen[str], timeout: float = START_SECONDS) -> str:
    """The ``lensd web: URL`` line a server prints once it listens (an empty line: it did not, in
    ``timeout`` seconds, or it exited first -- its return code then says which)."""
    line = _readline(process, timeout)
    assert line.startswith("lensd web: "), (f"expected the dashboard's URL, got {line!r} "
                                            f"(exit code {process.poll()}, {timeout:.0f} s)")
    return line.removeprefix("lensd web: ").strip()


@contextmanager
def web_process(db: Path, *args: str) -> Iterator[Web]:
    process = subprocess.Popen([sys.executable, "-m", "lensd", "web", "--db", str(db), "--bind", "127.0.0.1:0",
                                *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield Web(url_line(process), process)
    finally:
        process.terminate()
        process.wait(30)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET without following redirects: status, headers, body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


@contextmanager
def browser() -> Iterator[Any]:
    """A fresh headless chromium (its own user data folder); yields a Playwright page."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (make test does, as root)"
    profile = tempfile.mkdtemp(prefix="lensd-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900})
            context.set_default_timeout(WAIT_MS)
            try:
                yield context.pages[0] if context.pages else context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
