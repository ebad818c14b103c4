"""Re-running what failed: the ``sbatch --array=<task ids> <script>`` lines for a set of fits.

lensd keeps every fit's SLURM facts (``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID``,
``SLURM_JOB_NAME``, ``SLURM_SUBMIT_DIR``; lensd.client.jobs captures them), so the tasks of an
array that were lost or failed can be resubmitted exactly, one line per stored array job and job
name. ``lensd retry`` prints the lines (``--submit`` runs them), the web overview shows them.

Which script to run: SLURM does not tell a job where its batch script was (it runs a copy), so
the script is, in order: the one the user names (``lensd retry --script``); ``LENSD_SLURM_SCRIPT``
when the job had it in its environment; else ``SLURM_SUBMIT_DIR/SLURM_JOB_NAME`` when that file
exists (sbatch names a job after its script unless told otherwise); else unknown, and the line
says ``<script>`` so that it cannot be run by mistake.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

UNKNOWN_SCRIPT: Final = "<script>"


@dataclass(frozen=True)
class RetryLine:
    """One ``sbatch`` command: the tasks of one array job and job name to run again."""

    array_job_id: str
    job_name: str | None
    script: str | None  # None: not known (see the module docstring)
    task_ids: tuple[int, ...]

    @property
    def argv(self) -> list[str]:
        return ["sbatch", f"--array={array_spec(self.task_ids)}", self.script or UNKNOWN_SCRIPT]

    @property
    def command(self) -> str:
        """The shell line, quoted so that it can be pasted."""
        return " ".join(shlex.quote(arg) if arg != UNKNOWN_SCRIPT else arg for arg in self.argv)


@dataclass(frozen=True)
class RetryPlan:
    lines: tuple[RetryLine, ...]
    not_array: tuple[str, ...]  # ids of selected fits that were not SLURM array tasks


def array_spec(task_ids: Iterable[int]) -> str:
    """SLURM's ``--array`` syntax, consecutive ids as ranges: ``1-3,7,9-10``."""
    ids = sorted(set(task_ids))
    parts: list[str] = []
    start = previous = None
    for task in [*ids, None]:
        if task is not None and previous is not None and task == previous + 1:
            previous = task
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = task
    return ",".join(parts)


def parse_array_spec(spec: str) -> list[int]:
    """The task ids of an ``--array`` value written by ``array_spec`` (for tests and scripts)."""
    ids: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        ids.extend(range(int(low), int(high or low) + 1))
    return ids


def _task(job: Mapping[str, Any]) -> int | None:
    value = job.get("SLURM_ARRAY_TASK_ID")
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    return int(text) if text.isascii() and text.isdigit() else None


def _script(job: Mapping[str, Any], override: str | None) -> str | None:
    if override:
        return override
    named = job.get("LENSD_SLURM_SCRIPT")
    if isinstance(named, str) and named:
        return named
    name, folder = job.get("SLURM_JOB_NAME"), job.get("SLURM_SUBMIT_DIR")
    if isinstance(name, str) and name and isinstance(folder, str) and folder:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def retry_plan(fits: Iterable[tuple[str, Mapping[str, Any] | None]], script: str | None = None) -> RetryPlan:
    """The lines that re-run the array tasks of ``fits`` (``(id, job facts)`` pairs), grouped by
    array job id and job name, in the order of their array job ids."""
    groups: dict[tuple[str, str | None], tuple[set[int], str | None]] = {}
    not_array: list[str] = []
    for fit_id, job in fits:
        facts = job or {}
        task, array = _task(facts), facts.get("SLURM_ARRAY_JOB_ID")
        if task is None or not isinstance(array, (str, int)) or isinstance(array, bool) or str(array) == "":
            not_array.append(fit_id)
            continue
        name = facts.get("SLURM_JOB_NAME")
        key = (str(array), name if isinstance(name, str) else None)
        tasks, known = groups.setdefault(key, (set(), None))
        tasks.add(task)
        if known is None:
            groups[key] = (tasks, _script(facts, script))
    ordered = sorted(groups.items(), key=lambda item: (len(item[0][0]), item[0][0], item[0][1] or ""))
    lines = tuple(RetryLine(array, name, found, tuple(sorted(tasks)))
                  for (array, name), (tasks, found) in ordered)
    return RetryPlan(lines, tuple(not_array))
