"""``make demo`` (``python -m lensd.demo``) runs end to end, every query has an answer, nothing is left running."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name ``text`` (the demo's daemon and clients all do)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:  # exited while we looked
            continue
        line = " ".join(w.decode(errors="replace") for w in words)
        if text in line:
            found.append(line)
    return found


def test_the_demo_answers_every_query_and_leaves_nothing_running(short_tmp: Path) -> None:
    work = short_tmp / "demo"
    run = subprocess.run([sys.executable, "-m", "lensd.demo", "--dir", str(work)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout

    stored = re.search(r"(\d+) fits stored \(expected (\d+)\)", out)
    assert stored is not None and stored.group(1) == stored.group(2)
    counts = [int(n) for n in re.findall(r"^\s*(\d+) fits  ", out, flags=re.M)]
    assert len(counts) == 8 and all(counts), f"a demo query found nothing: {counts}"
    assert f"counts: {' '.join(map(str, counts))}" in out and "the file and the daemon agree" in out
    assert "4242_1" in out and "the likelihood went NaN" in out  # lensd jobs shows SLURM ids and errors
    assert "daemon stopped (exit 0)" in out

    assert processes_mentioning(str(work)) == []
    assert not (work / "lensd.sock").exists() and (work / "demo.sqlite").exists()
    assert not list((work / "spool").glob("*.lensd"))
