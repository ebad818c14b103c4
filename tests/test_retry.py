"""``lensd retry``: a fake SLURM array run (real client processes with SLURM variables set, no
scheduler) whose lost and failed tasks come back as exactly one sbatch line per array job."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

from conftest import lensd_cli
from test_jobs import LOST_AFTER, wait_for_status, workers  # noqa: F401 - workers is a fixture

from lensd.domain.slurm import array_spec, parse_array_spec, retry_plan


def _slurm(task: int, folder: Path, array: str = "4242", name: str = "fit-array.sbatch") -> dict[str, str]:
    return {"SLURM_JOB_ID": str(5000 + task), "SLURM_ARRAY_JOB_ID": array, "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_JOB_NAME": name, "SLURM_SUBMIT_DIR": str(folder)}


def test_retry_prints_exactly_the_lost_and_failed_tasks_of_an_array_run(make_daemon, workers, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    daemon = make_daemon("--lost-after", LOST_AFTER)
    script = tmp_path / "fit-array.sbatch"
    script.write_text("#!/bin/bash\n")
    outcome = {0: "complete", 1: "fail", 2: "complete", 3: "kill", 4: "fail", 5: "kill", 6: "running",
               7: "complete", 8: "fail"}
    alive = []
    for task, what in outcome.items():
        worker = workers("hang" if what == "kill" else "script", daemon.socket, task, env=_slurm(task, tmp_path))
        if what == "complete":
            assert worker.do("complete", samples_of=task) == "applied"
        elif what == "fail":
            assert worker.do("fail", message=f"task {task} diverged") == "applied"
        elif what == "kill":
            os.kill(worker.pid, signal.SIGKILL)
            worker.process.wait(30)
        alive.append(worker)
    other = workers("script", daemon.socket, 40, env=_slurm(9, tmp_path / "elsewhere", "5151", "other"))
    assert other.do("fail", message="oom") == "applied"
    plain = workers("script", daemon.socket, 50)  # no SLURM variables at all
    assert plain.do("fail", message="not an array task") == "applied"
    for task in (3, 5):
        wait_for_status(daemon.db, f"fit-{task}", "lost")

    result = lensd_cli("retry", "--db", str(daemon.db))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"sbatch --array=1,3-5,8 {script}"
    assert parse_array_spec(lines[0].split()[1].removeprefix("--array=")) == \
        sorted(t for t, what in outcome.items() if what in ("fail", "kill"))
    assert lines[1] == "sbatch --array=9 <script>"  # its script file is not where the job says
    assert lines[2] == "# 1 selected fits were not array tasks (no SLURM ids): fit-50"
    assert len(lines) == 3

    only_lost = lensd_cli("retry", 'job["SLURM_ARRAY_JOB_ID"] == 4242', "--status", "lost", "--db", str(daemon.db))
    assert only_lost.stdout.splitlines() == [f"sbatch --array=3,5 {script}"]

    # --submit runs each line; here sbatch is a stand-in that records its arguments
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\necho "Submitted batch job 777"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    refused = lensd_cli("retry", "--submit", "--db", str(daemon.db), env=env)
    assert refused.returncode == 1 and "not known: pass --script" in refused.stderr
    submitted = lensd_cli("retry", 'job["SLURM_ARRAY_JOB_ID"] == 4242', "--submit", "--db", str(daemon.db), env=env)
    assert submitted.returncode == 0, submitted.stderr
    assert (tmp_path / "calls").read_text().splitlines()[-1] == f"--array=1,3-5,8 {script}"
    assert "Submitted batch job 777" in submitted.stdout
    for worker in (*alive, other, plain):
        if worker.process.poll() is None:
            worker.finish()


def test_array_specs_round_trip_and_group_by_array_and_name() -> None:
    for ids in ([0], [1, 2, 3], [0, 2, 4], [5, 6, 9, 10, 11, 40], list(range(100))):
        assert parse_array_spec(array_spec(ids)) == ids
    plan = retry_plan([("a", {"SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_NAME": "x"}),
                       ("b", {"SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "2", "SLURM_JOB_NAME": "x"}),
                       ("c", {"SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_NAME": "x"}),
                       ("d", {"SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_NAME": "y",
                              "LENSD_SLURM_SCRIPT": "/s/y.sh"})], script=None)
    assert [(line.array_job_id, line.job_name, line.task_ids, line.command) for line in plan.lines] == [
        ("9", "x", (2,), "sbatch --array=2 <script>"), ("12", "x", (1,), "sbatch --array=1 <script>"),
        ("12", "y", (3,), "sbatch --array=3 /s/y.sh")]
    assert retry_plan([("a", {"SLURM_ARRAY_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "0"})], "my job.sh").lines[0].command \
        == "sbatch --array=0 'my job.sh'"
