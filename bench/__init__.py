"""lensd benchmarks. ``python -m bench`` (``make bench``) runs them all and prints one table.

The contract every benchmark module follows, so that ``bench/__main__.py`` can find and run it:

    # bench/<name>.py
    from bench import Options, Row

    def run(options: Options) -> list[Row]:
        ...  # measure, with the baseline measured in the same run

- A module of ``bench/`` whose name does not start with ``_`` and that defines ``run`` is a
  benchmark. ``run`` gets the run's ``Options`` (``quick`` for the short run, ``work`` a scratch
  folder that is removed afterwards, ``cache`` for results worth keeping between runs) and returns
  ``Row``s: one line of the table each. A module keeps its own time bounded (every child process
  and wait has a timeout) and cleans up what it starts.
- Every module also runs alone: ``python -m bench.<name> [--quick]`` (see ``bench._common.main``).
- A module without ``run`` (a script with its own ``main``) is run as ``python bench/<name>.py``
  in a child process and its printed lines become rows of its section, so it still shows in the
  table; give it a ``run`` to make its figures first-class columns.

Benchmarks are not tests: nothing here asserts a time. Figures are ratios against baselines
measured in the same run, on the same machine, because absolute times move from machine to
machine and from run to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).parent / ".cache"


@dataclass(frozen=True)
class Options:
    """What every benchmark is run with."""

    quick: bool
    work: Path
    cache: Path = CACHE


@dataclass(frozen=True)
class Row:
    """One line of the table. Every figure is text, formatted by the benchmark that measured it.

    ``lensd`` is lensd's figure; ``baseline`` the reference measured in the same run (raw sqlite,
    watchfiles, ...) and ``ratio`` lensd against it, written so that the reader sees which way is
    better ("0.62x raw", "41x faster"); ``pyautofit`` PyAutoFit's figure when it was measured;
    ``target`` the target and whether it was met.
    """

    section: str
    measure: str
    lensd: str
    baseline: str = ""
    ratio: str = ""
    pyautofit: str = ""
    target: str = ""


__all__ = ["CACHE", "Options", "Row"]
