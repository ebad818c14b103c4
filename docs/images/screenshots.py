"""Make the screenshots of docs/web.md: ``.venv/bin/python docs/images/screenshots.py``.

A small campaign is written with the daemon's writer (completed fits of two mass profiles, failed
and lost SLURM array tasks, running fits with a convergence history), ``lensd web`` serves it, and
Debian's chromium (Playwright, headless) photographs each page into docs/images/web-*.png.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from lensd.demo.synthetic import record
from lensd.store.writeops import MarkLost, Op, op_from_request
from lensd.store.writer import BatchWriter

HERE = Path(__file__).parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _job(task: int) -> dict[str, Any]:
    return {"SLURM_JOB_ID": str(91000 + task), "SLURM_ARRAY_JOB_ID": "90999", "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_JOB_NAME": "fit-array.sbatch", "LENSD_SLURM_SCRIPT": "/home/astro/slurm/fit-array.sbatch",
            "host": f"node{task % 8:02d}"}


def campaign(db: Path) -> None:
    def started(i: int) -> dict[str, Any]:
        return {**record(i, 2000), "status": "running", "job": _job(i)}

    ops: list[Op] = [op_from_request("submit", {"record": {**record(i, 2000), "job": _job(i)}}) for i in range(300)]
    ops += [op_from_request("start", {"record": started(i)}) for i in (300, 301, 302)]
    later: list[Op] = [MarkLost(0.0)]  # those three were killed: lost (the cutoff is set when it is written)
    later += [op_from_request("submit", {"record": {**record(i, 2000), "status": "failed", "job": _job(i),
                                                  "error": message}})
            for i, message in ((303, "MemoryError: the likelihood grid did not fit"), (304, "sampler diverged: NaN"))]
    later += [op_from_request("start", {"record": started(i)}) for i in (310, 311)]
    for step in range(1, 40):
        for i in (310, 311):
            later.append(op_from_request("progress", {"id": record(i)["id"], "n_samples": 250 * step,
                                                    "max_log_likelihood": -400.0 + 350 * (1 - 0.9 ** step) + i % 3,
                                                    "progress": step / 50}))

    async def write() -> None:
        writer = await BatchWriter.open(db)
        await writer.apply(ops)
        for op in later:  # one by one: each progress point gets its own commit time
            await writer.apply([MarkLost(time.time() + 1) if isinstance(op, MarkLost) else op])
        await writer.close()
    anyio.run(write)


def main() -> None:
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="lensd-shots-"))
    db = folder / "campaign.sqlite"
    campaign(db)
    server = subprocess.Popen([sys.executable, "-m", "lensd", "web", "--db", str(db), "--bind", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().removeprefix("lensd web: ").strip()
        base = url.split("/?")[0]
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(folder / "profile"), executable_path="/usr/bin/chromium", headless=True, args=FLAGS,
                viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(url)
            page.screenshot(path=HERE / "web-overview.png", full_page=True)
            page.goto(f"{base}/fits?q=" + 'model.galaxies.lens.mass.einstein_radius > 1.0 %26 info["survey"] == "SLACS"'
                      + "&sort=max_log_likelihood&desc=1")
            page.screenshot(path=HERE / "web-fits.png")
            page.goto(f"{base}/fit/{record(310)['id']}")
            page.screenshot(path=HERE / "web-fit.png", full_page=True)
            page.goto(f"{base}/plot?x=model.galaxies.lens.mass.einstein_radius&colour=model.galaxies.lens.mass")
            page.screenshot(path=HERE / "web-plot.png", full_page=True)
            context.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
