"""docs/quickstart.md, run as written: its ```bash blocks in order in one shell, in a fresh folder.

The ```python blocks are the files the page asks the reader to save (their first line names
them), and every line of the ```text blocks (what the page says you will see) must appear in what
the commands printed, up to what changes from run to run: pids, socket paths, ages. The ```sh
block is the installation, which the test environment has already done. The shell starts with no
LENSD_* variables and its own $XDG_RUNTIME_DIR and $HOME, so the page's defaults are the ones used.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from lensd.store import writerlock

PAGE = Path(__file__).resolve().parent.parent / "docs" / "quickstart.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", flags=re.S | re.M)
VOLATILE = [(re.compile(r"/\S*/lensd\.sock"), "SOCKET"), (re.compile(r"\bpid \d+"), "pid N"),
            (re.compile(r"\b\d+s\b"), "Ns"), (re.compile(r"\s+"), " ")]


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(PAGE.read_text()) if lang == kind]


def normal(line: str) -> str:
    for pattern, replacement in VOLATILE:
        line = pattern.sub(replacement, line)
    return line.strip()


def test_the_quickstart_runs_as_written(short_tmp: Path) -> None:
    home, runtime, tour = short_tmp / "home", short_tmp / "run", short_tmp / "lensd-tour"
    for folder in (home, runtime, tour):
        folder.mkdir(mode=0o700)
    for body in blocks("python"):
        name = body.split("\n", 1)[0].split()[1].rstrip(":")
        (tour / name).write_text(body)
    script = "\n".join(["set -euo pipefail", *blocks("bash")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSD_")}
    env |= {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    try:
        run = subprocess.run(["bash", "-c", script], cwd=short_tmp, env=env, capture_output=True, text=True,
                             timeout=120)
    finally:
        holder = writerlock.read_holder(tour / "lensd.sqlite")
        if holder is not None and (tour / "lensd.sqlite.lock").exists():  # the page did not get to stop
            subprocess.run([sys.executable, "-m", "lensd", "stop"], env=env, capture_output=True, timeout=120)
            try:
                os.kill(int(holder.pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    assert run.returncode == 0, run.stdout + run.stderr

    printed = {normal(line) for line in run.stdout.splitlines()}
    for shown in blocks("text"):
        for line in shown.splitlines():
            assert normal(line) in printed, f"the page shows {line!r}, the commands did not print it"
    assert "lensd stopped" in run.stdout
    assert not (runtime / "lensd.sock").exists()
