"""``lensd retry``: the fits to re-run, read from the file or the daemon, as sbatch lines."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from lensd.domain.slurm import RetryPlan, retry_plan
from lensd.errors import LensdError, QueryError
from lensd.query.nodes import Column
from lensd.settings import Database

if TYPE_CHECKING:
    from lensd.client.address import Target

STATUSES = ("running", "completed", "failed", "lost")


def plan(expression: str, statuses: Sequence[str], db: Database | None, target: Target | None,
         script: str | None) -> RetryPlan:
    """The retry plan of the fits matching ``expression`` whose status is one of ``statuses``
    (grid cells included: they are tasks of their grid's job too). Read from the database unless
    the daemon was named (``--socket``, ``--address``, ``$LENSD_ADDRESS``) and ``--db`` was not, as
    ``lensd query`` does."""
    from lensd.cli import export as exporting

    unknown = sorted(set(statuses) - set(STATUSES))
    if unknown or not statuses:
        raise QueryError(f"--status takes statuses among {', '.join(STATUSES)}, not {', '.join(unknown) or 'none'}")
    state = exporting.state_of(expression, all_fits=True).where(Column("status").in_(list(statuses)))
    return retry_plan(((fit.id, fit.job) for fit in exporting.selected_fits(state, db, target)), script)


def report(found: RetryPlan, run: bool) -> Iterator[str]:
    """The lines to print; with ``run``, each sbatch is run and its answer printed."""
    if not found.lines:
        yield "# nothing to re-run: no selected fit was a SLURM array task"
    for line in found.lines:
        if not run:
            yield line.command
            continue
        if line.script is None:
            raise LensdError(f"the script of array job {line.array_job_id} ({line.job_name or 'no job name'}) "
                             "is not known: pass --script")
        if shutil.which("sbatch") is None:
            raise LensdError("sbatch is not on PATH: run the printed lines where SLURM is")
        done = subprocess.run(line.argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LensdError(f"{line.command} failed: {(done.stderr or done.stdout).strip()}")
        yield f"{line.command}: {done.stdout.strip()}"
    if found.not_array:
        shown = ", ".join(found.not_array[:5]) + (", ..." if len(found.not_array) > 5 else "")
        yield f"# {len(found.not_array)} selected fits were not array tasks (no SLURM ids): {shown}"
