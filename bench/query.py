"""Query latency of the seed queries (SPEC §4) at 10^3, 10^4, 10^5 and 10^6 fits.

    .venv/bin/python -m bench.query [--quick]        # --quick stops at 10^5

The databases are made by ``bench._dbcache`` (the writer's own rows, cached in bench/.cache, keyed
on the schema): ``lensd.demo.synthetic.record`` fits, half Isothermal and half PowerLaw, Einstein radii
around 1.0, ten unique tags ``lens_0`` .. ``lens_9``, so a seed query selects 0 % to 55 % of the
fits. Each figure is the median of 5 runs after one warm-up (the file is in the page cache), with
``Aggregator.from_database`` in this process:

- **first page**: ``agg.query(q)`` and its first 256 fits loaded as ``Fit`` objects, which is what
  a notebook shows and the first page the daemon streams; the targets are on this figure;
- **count**: ``len(agg.query(q))``, one statement that must count every match
  (``lensd.query.counting``: index ranges and probes, never the matches' fits rows); target
  < 50 ms at 10^6 (issue 18).

PyAutoFit, when installed, answers the same seeds (its ``agg.query(q)[:256]`` and ``len``) on
its own database of the folder-ingest folders (10^3 fits; 10^2 with --quick).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from itertools import islice
from typing import Any

from bench import Options, Row
from bench import _pyautofit as pyautofit
from bench._common import folder_tree, main, ms, times, verdict
from bench._dbcache import database

PAGE = 256
TARGET_MS = 50.0
TARGET_GROWTH = 3.0  # at 10^6 over 10^4
SEEDS: dict[str, Callable[[Any], Any]] = {
    "mass == Isothermal": lambda agg: agg.model.galaxies.lens.mass == "Isothermal",
    "einstein_radius > 1.0": lambda agg: agg.model.galaxies.lens.mass.einstein_radius > 1.0,
    "Isothermal & einstein_radius > 1.0": lambda agg: ((agg.model.galaxies.lens.mass == "Isothermal")
                                                       & (agg.model.galaxies.lens.mass.einstein_radius > 1.0)),
    "einstein_radius > 1.0 | unique_tag == lens_3": lambda agg: (
        (agg.model.galaxies.lens.mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3")),
    "unique_tag == example_dataset_0": lambda agg: agg.unique_tag == "example_dataset_0",
    "unique_tag == lens_3": lambda agg: agg.unique_tag == "lens_3",
}


def _median(work: Callable[[], Any], repeat: int = 5) -> float:
    work()  # warm-up: the pages this query touches come into the cache
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


def _first_page(selected: Any) -> list[Any]:
    return list(islice(selected.fits(), PAGE))


def measure(path: Any) -> dict[str, dict[str, float]]:
    """Per seed: seconds to the first page, seconds to count, and the count."""
    import lensd

    agg = lensd.Aggregator.from_database(path)
    try:
        found = {}
        for name, seed in SEEDS.items():
            selected = agg.query(seed(agg))
            found[name] = {"first_page": _median(partial(_first_page, selected)),
                           "count": _median(selected.__len__), "n": float(len(selected))}
        return found
    finally:
        agg.close()


def _size(n: int) -> str:
    return f"10^{len(str(n)) - 1}"


def run(options: Options) -> list[Row]:
    sizes = [10**3, 10**4, 10**5] if options.quick else [10**3, 10**4, 10**5, 10**6]
    results: dict[int, dict[str, dict[str, float]]] = {}
    built = []
    for n in sizes:
        path, seconds = database(options.cache, n)
        if seconds is not None:
            built.append(f"{_size(n)} in {seconds:.0f} s")
        results[n] = measure(path)
    theirs: dict[str, Any] = {}
    version = pyautofit.available()
    m = 100 if options.quick else 1000
    if version is not None:
        db, _ = pyautofit.database(options.work, folder_tree(options.work, m))
        theirs = pyautofit.queries(options.work, db, PAGE)
    labels = " / ".join(_size(n) for n in sizes)
    low, mid, high = sizes[0], 10**4, sizes[-1]
    rows = [Row("query databases", f"{labels} fits (bench/.cache, keyed on the schema)",
                f"built this run: {', '.join(built)}" if built else "cached")]
    for kind, section in (("first_page", f"seed query latency: first {PAGE} fits ({labels})"),
                          ("count", f"seed query latency: count, len(agg) ({labels})")):
        for name in SEEDS:
            figures = [results[n][name][kind] for n in sizes]
            matches = results[high][name]["n"] / high
            target = ""
            if kind == "first_page" and high == 10**6:
                top, base = results[high][name][kind], results[mid][name][kind]
                met = top * 1000 < TARGET_MS and top <= TARGET_GROWTH * base
                target = f"<{TARGET_MS:.0f} ms, <={TARGET_GROWTH:.0f}x 10^4: {verdict(met)}"
            elif kind == "count" and high == 10**6:  # issue 18: counts served by indexes
                target = f"<{TARGET_MS:.0f} ms: {verdict(results[high][name][kind] * 1000 < TARGET_MS)}"
            other = theirs.get(name)
            rows.append(Row(section, f"{name} ({matches:.0%} match)",
                            " / ".join(ms(f).replace(" ms", "") for f in figures) + " ms",
                            ratio=f"{_size(high)}/{_size(low)}: {times(figures[-1] / figures[0])}",
                            pyautofit=f"{ms(other[kind])} at {_size(m)}" if other else
                            ("" if version else "not installed"),
                            target=target))
    return rows


if __name__ == "__main__":
    main(run, __doc__)
