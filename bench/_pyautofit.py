"""PyAutoFit, measured on the same synthetic folders as lensd, in child processes.

PyAutoFit's database aggregator (``autofit.Aggregator.from_database(file)``) scrapes folders with
``add_directory``, answers the seed queries with its own SQL, and loads samples with
``values("samples")``. It rebuilds every model by importing the class paths stored in
``model.json`` (here ``lensmodels.Galaxy`` and friends), so the child runs in a scratch folder
holding a small ``lensmodels`` module with those classes. That import is PyAutoFit's design, done
only in this benchmark on data it wrote itself; lensd never imports a class path from data.

Every measurement runs in a fresh interpreter (``bench._common.child``): importing autofit is slow
and noisy, and the peak memory of ``values("samples")`` must be the child's own.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from bench._common import autofit_python, autofit_version, child

LENSMODELS = textwrap.dedent('''
    """Classes named by lensd.demo.synthetic's model.json (lensmodels.*), for PyAutoFit to import."""


    class Galaxy:
        def __init__(self, redshift: float = 0.5, **kwargs):
            self.redshift = redshift
            for name, value in kwargs.items():
                setattr(self, name, value)


    class Isothermal:
        def __init__(self, centre: tuple = (0.0, 0.0), einstein_radius: float = 1.0):
            self.centre = centre
            self.einstein_radius = einstein_radius


    class PowerLaw(Isothermal):
        pass


    class Sersic:
        def __init__(self, intensity: float = 1.0):
            self.intensity = intensity
''')

QUIET = "version:\n  python_version_check: False\n  workspace_version_check: False\n"

PRELUDE = textwrap.dedent("""
    import logging, os, sys, time, warnings
    warnings.filterwarnings("ignore")
    sys.path.insert(0, os.getcwd())
    import autofit as af
    logging.disable(logging.CRITICAL)
    import lensmodels
""")

ADD_DIRECTORY = PRELUDE + textwrap.dedent("""
    db, tree = sys.argv[1], sys.argv[2]
    agg = af.Aggregator.from_database(db)
    began = time.perf_counter()
    agg.add_directory(tree)
    seconds = time.perf_counter() - began
    result = {"seconds": seconds, "fits": len(af.Aggregator.from_database(db))}
""")

QUERIES = PRELUDE + textwrap.dedent("""
    from itertools import islice
    db, page, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    agg = af.Aggregator.from_database(db)
    lens = agg.model.galaxies.lens
    seeds = {
        "mass == Isothermal": lens.mass == lensmodels.Isothermal,
        "einstein_radius > 1.0": lens.mass.einstein_radius > 1.0,
        "Isothermal & einstein_radius > 1.0":
            (lens.mass == lensmodels.Isothermal) & (lens.mass.einstein_radius > 1.0),
        "einstein_radius > 1.0 | unique_tag == lens_3":
            (lens.mass.einstein_radius > 1.0) | (agg.search.unique_tag == "lens_3"),
        "unique_tag == example_dataset_0": agg.search.unique_tag == "example_dataset_0",
        "unique_tag == lens_3": agg.search.unique_tag == "lens_3",
    }
    result = {}
    for name, predicate in seeds.items():
        first = count = float("inf")
        for _ in range(repeat):
            began = time.perf_counter()
            list(agg.query(predicate)[:page])
            first = min(first, time.perf_counter() - began)
            began = time.perf_counter()
            n = len(agg.query(predicate))
            count = min(count, time.perf_counter() - began)
        result[name] = {"first_page": first, "count": count, "n": n}
""")

VALUES = PRELUDE + textwrap.dedent("""
    db = sys.argv[1]
    agg = af.Aggregator.from_database(db)
    began = time.perf_counter()
    n = 0
    for samples in agg.values("samples"):
        max(samples.log_likelihood_list)
        n += 1
    result = {"seconds": time.perf_counter() - began, "fits": n}
""")


def available() -> str | None:
    """PyAutoFit's version, or None when autofit is not installed."""
    return autofit_version()


def _scratch(work: Path) -> Path:
    folder = work / "pyautofit"
    (folder / "config").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "general.yaml").write_text(QUIET)
    (folder / "lensmodels.py").write_text(LENSMODELS)
    return folder


def _run(work: Path, code: str, *args: str, timeout: float) -> dict[str, Any]:
    return child(code, *args, timeout=timeout, cwd=_scratch(work), python=autofit_python(),
                 env={"PYAUTO_SKIP_WORKSPACE_VERSION_CHECK": "1"})


def add_directory(work: Path, tree: Path, db: Path, timeout: float = 1200) -> dict[str, Any]:
    """``Aggregator.from_database(db).add_directory(tree)``: seconds, and fits its database holds."""
    return _run(work, ADD_DIRECTORY, str(db), str(tree), timeout=timeout)


def queries(work: Path, db: Path, page: int, repeat: int = 3, timeout: float = 600) -> dict[str, Any]:
    """Per seed query: best seconds to its first ``page`` fits and to ``len()``, and its count."""
    return _run(work, QUERIES, str(db), str(page), str(repeat), timeout=timeout)


def values_samples(work: Path, db: Path, timeout: float = 1200) -> dict[str, Any]:
    """``for samples in agg.values("samples")``: seconds, fits, and the child's peak memory."""
    return _run(work, VALUES, str(db), timeout=timeout)


def database(work: Path, tree: Path) -> tuple[Path, dict[str, Any]]:
    """PyAutoFit's database of ``tree`` (made once per run by ``add_directory``) and what making
    it measured."""
    import json

    db = work / "pyautofit" / f"{tree.name}.sqlite"
    report = db.with_suffix(".json")
    if not report.exists():
        db.unlink(missing_ok=True)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(add_directory(work, tree, db)))
    return db, json.loads(report.read_text())
