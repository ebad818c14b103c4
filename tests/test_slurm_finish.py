"""The SLURM templates as a new user meets them: a clone of lensd in the submit folder, a home that
holds a clone named ``lensd``, placeholders to fill in, a daemon job that keeps a successor queued.
The scripts run for real (bash, this checkout's lensd, a real daemon); only ``sbatch`` is a stand-in
that records what it was asked, since there is no scheduler here."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from test_deploy import SLURM, end_of_time_limit, fits_by_tag, run_script, slurm_env, start_daemon_job

from lensd.demo.synthetic import write_fit

CLONE_FILES = ("pyproject.toml", "lensd/__init__.py")


def make_clone(folder: Path) -> Path:
    """What `git clone lensd` leaves: a lensd/ package without the installed one's names."""
    for name in CLONE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("")
    return folder


def test_a_lensd_clone_in_the_submit_folder_does_not_shadow_the_package(make_daemon, shared, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    (shared / "lensd.env").write_text(f"LENSD_NODE={os.uname().nodename}\nLENSD_SOCKET={daemon.socket}\n"
                                      f"LENSD_SPOOL={shared / 'spool'}\n")
    submit_dir = make_clone(short_tmp / "clone")
    task = run_script("fit-array.sbatch", env=slurm_env(shared, task=0), cwd=submit_dir)
    assert task.returncode == 0, task.stderr
    assert "(applied)" in task.stdout
    assert fits_by_tag(daemon.db)["lens_a"].status == "completed"


def test_the_shared_folder_never_defaults_into_a_clone(short_tmp: Path) -> None:
    home = short_tmp / "home"
    make_clone(home / "lensd")  # the clone a user made with `git clone ... ~/lensd`
    env = {**slurm_env(short_tmp, task=0), "HOME": str(home)}
    del env["LENSD_SHARED"]
    task = run_script("fit-array.sbatch", env=env)
    assert task.returncode != 0
    assert f"{home}/.lensd/shared/datasets.txt" in task.stderr  # the default is not ~/lensd
    assert sorted(p.name for p in (home / "lensd").iterdir()) == ["lensd", "pyproject.toml"]
    for script in ("fit-array.sbatch", "lensd-daemon.sbatch"):
        refused = run_script(script, env={**env, "LENSD_SHARED": str(home / "lensd")})
        assert refused.returncode == 1 and "is a clone of lensd" in refused.stderr, refused.stderr
    folder = write_fit(short_tmp / "out", 1, n_samples=10)
    refused = run_script("submit-at-end.sh", str(folder), env={**env, "LENSD_SHARED": str(home / "lensd")})
    assert refused.returncode == 1 and "is a clone of lensd" in refused.stderr


def test_placeholders_and_time_limits_a_cluster_accepts() -> None:
    for name in ("fit-array.sbatch", "lensd-daemon.sbatch"):
        text = (SLURM / name).read_text()
        assert "##SBATCH --partition=YOUR_PARTITION" in text and "##SBATCH --account=YOUR_ACCOUNT" in text
        days, hours = re.search(r"^#SBATCH --time=(?:(\d+)-)?(\d+):", text, flags=re.M).groups()  # type: ignore[union-attr]
        assert int(days or 0) * 24 + int(hours) <= 48, f"{name} asks for more than two days"
    daemon = (SLURM / "lensd-daemon.sbatch").read_text()
    header = daemon[:daemon.index("\nset -euo pipefail")]
    assert "LENSD_BACKUP_EVERY seconds of records" in header  # what a dead node costs, next to the promise
    fits = (SLURM / "fit-array.sbatch").read_text()
    assert "one dataset name per line" in fits and "-P - " in fits


def test_the_daemon_job_queues_its_successor(shared, short_tmp, daemon_jobs) -> None:  # type: ignore[no-untyped-def]
    stand_in = short_tmp / "bin"
    stand_in.mkdir()
    asked = short_tmp / "sbatch-args"
    sbatch = stand_in / "sbatch"
    sbatch.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" >"{asked}"\necho "Submitted batch job 4301"\n')
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    env = slurm_env(shared, LENSD_LOCAL=str(short_tmp / "node1"), LENSD_BACKUP_EVERY="0", SLURM_JOB_NAME="lensd")
    env["PATH"] = f"{stand_in}{os.pathsep}{env['PATH']}"
    job, printed = start_daemon_job(env, daemon_jobs)
    args = asked.read_text().splitlines()
    assert args[:2] == ["--dependency=singleton", "--job-name=lensd"]
    assert args[2].endswith("lensd-daemon.sbatch")
    end_of_time_limit(job)

    asked.unlink()
    job, _ = start_daemon_job({**env, "LENSD_CHAIN": "0"}, daemon_jobs)
    assert not asked.exists()
    end_of_time_limit(job)
