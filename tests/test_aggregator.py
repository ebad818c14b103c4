"""The sync Aggregator on real PyAutoFit output: the seed queries, answered as PyAutoFit answers them."""

from __future__ import annotations

import copy
import json
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DIR_OUTPUT, FIXTURES, SENSITIVITY_OUTPUT, lensd_cli

import lensd
from lensd.errors import QueryError, StorageError

RECORDS = {r["identifier"]: r for r in json.loads((FIXTURES / "records_dir.json").read_text())}
FITS = {i: r for i, r in RECORDS.items() if r["key"] != "grid_ge_c_lbfgs"}
GRID = next(r for r in RECORDS.values() if r["key"] == "grid_ge_c_lbfgs")
SENSITIVITY = json.loads((FIXTURES / "records_sensitivity.json").read_text())


def parameters(instance: dict[str, float]) -> dict[str, float]:
    """PyAutoFit's instance dumps carry each object's ``id``: an object counter, not a parameter."""
    return {k: v for k, v in instance.items() if k != "id" and not k.endswith(".id")}


class Gaussian:  # stands in for toy_models.Gaussian: only its module and name matter
    pass


Gaussian.__module__, Gaussian.__qualname__ = "toy_models", "Gaussian"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agg") / "lensd.sqlite"
    result = lensd_cli("ingest", str(DIR_OUTPUT), str(SENSITIVITY_OUTPUT), "--db", str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def agg(db: Path) -> lensd.Aggregator:
    return lensd.Aggregator.from_database(db)


def test_every_fit_with_pyautofits_max_log_likelihood_and_instance(agg: lensd.Aggregator) -> None:
    fits = {f.id: f for f in agg.fits()}
    assert set(FITS) <= set(fits)
    for fit_id, expected in FITS.items():
        fit = fits[fit_id]
        assert math.isclose(fit.max_log_likelihood, expected["max_log_likelihood"], rel_tol=1e-12)
        assert fit.unique_tag == expected["unique_tag"]
        assert fit.info == expected["info"]
        assert fit.instance is not None
        flat = fit.instance.to_flat()
        for path, value in parameters(expected["max_log_likelihood_instance"]).items():
            assert math.isclose(flat[path], value, rel_tol=1e-12), (fit_id, path)


def test_samples_values_match_pyautofit(agg: lensd.Aggregator) -> None:
    by_best = {r["max_log_likelihood"]: r for r in FITS.values()}
    seen = 0
    for samples in agg.values("samples"):
        expected = by_best[samples.max_log_likelihood_sample.log_likelihood]
        assert len(samples) == samples.parameters.shape[0] == len(samples.log_likelihood) > 0
        instance = samples.max_log_likelihood_instance.to_flat()
        for path, value in parameters(expected["max_log_likelihood_instance"]).items():
            assert math.isclose(instance[path], value, rel_tol=1e-12)
        seen += 1
    assert seen == len(FITS)


def test_instances_copy_and_pickle(agg: lensd.Aggregator) -> None:
    """copy, deepcopy and pickle (multiprocessing) give back an equal instance, not a RecursionError."""
    instances = [f.instance for f in agg.fits() if f.instance is not None]
    instances += [s.median_pdf_instance for s in agg.values("samples")]
    assert instances
    for instance in instances:
        for again in (copy.copy(instance), copy.deepcopy(instance), pickle.loads(pickle.dumps(instance))):
            assert type(again) is lensd.Instance
            assert again == instance and again.class_path == instance.class_path
            assert again.to_flat() == instance.to_flat() and repr(again) == repr(instance)
    with pytest.raises(AttributeError, match="_children_of"):
        instances[0]._children_of  # noqa: B018 - a private name is never a child


def test_seed_query_class_and_value(agg: lensd.Aggregator) -> None:
    g = agg.model.gaussian
    want = {i for i, r in FITS.items() if r["max_log_likelihood_instance"].get("gaussian.centre", 0) > 35}
    assert {f.id for f in agg.query((g == Gaussian) & (g.centre > 35.0)).fits()} == want
    assert {f.id for f in agg.query(g == "toy_models.Gaussian").fits()} == {
        i for i, r in FITS.items() if "gaussian.centre" in r["max_log_likelihood_instance"]}
    assert len(agg.query(g == "Gaussian")) == len(agg.query(g == Gaussian))
    bare = agg.query(agg.model == Gaussian)  # the fit whose model is a bare Model(Gaussian)
    assert [f.id for f in bare.fits()] == ["217bad4a8464958d3fc997c91550c934"]


def test_seed_query_or_and_unique_tag(agg: lensd.Aggregator) -> None:
    g = agg.model.gaussian
    got = {f.id for f in agg.query((g.centre > 45.0) | (agg.unique_tag == "gaussian_b")).fits()}
    want = {i for i, r in FITS.items() if r["max_log_likelihood_instance"].get("gaussian.centre", 0) > 45
            or r["unique_tag"] == "gaussian_b"}
    assert got == want
    for tag in ("gaussian_a", "gaussian_b", "gauss_exp_c"):
        expected = {i for i, r in RECORDS.items() if r["unique_tag"] == tag}
        assert {f.id for f in agg.query(agg.unique_tag == tag).fits()} == expected
        assert len(agg.query(agg.search.unique_tag == tag)) == len(expected)


def test_negation_and_info(agg: lensd.Aggregator) -> None:
    a_fits = agg.query(agg.info["telescope"] == "A")
    assert {f.id for f in a_fits.fits()} == {i for i, r in FITS.items() if (r["info"] or {}).get("telescope") == "A"}
    exposure = agg.query(agg.info["exposure_s"] >= 250)
    assert {f.id for f in exposure.fits()} == {
        i for i, r in FITS.items() if (r["info"] or {}).get("exposure_s", 0) >= 250}
    assert len(agg.query(~(agg.info["telescope"] == "A"))) == len(agg) - len(a_fits)


def test_info_values_and_sorting(agg: lensd.Aggregator) -> None:
    infos = list(agg.query(agg.unique_tag == "gaussian_a").values("info"))
    assert all(info["telescope"] == "A" for info in infos) and len(infos) == 3
    best = list(agg.order_by(agg.max_log_likelihood, reverse=True)[:3].fits())
    values = sorted((f.max_log_likelihood for f in agg.fits()), reverse=True)[:3]
    assert [f.max_log_likelihood for f in best] == values
    assert len(list(agg.limit(2).fits())) == 2


def test_grid_search_parent_and_cells(agg: lensd.Aggregator) -> None:
    grids = agg.grid_searches()
    assert {f.id for f in grids.fits()} == {GRID["identifier"], SENSITIVITY["sensitivity"]["identifier"]}
    grid = grids.query(grids.unique_tag == "gauss_exp_c")
    assert math.isclose(next(grid.fits()).max_log_likelihood, GRID["max_log_likelihood"])
    cells = sorted(grid.children().fits(), key=lambda f: f.max_log_likelihood)
    assert [c.parent_id for c in cells] == [GRID["identifier"]] * 2
    assert [round(c.max_log_likelihood, 9) for c in cells] == sorted(
        round(c["max_log_likelihood"], 9) for c in GRID["cells"])
    assert all(c.id.startswith(GRID["identifier"] + "/gaussian_centre_") for c in cells)


def test_sensitivity_fits_by_nesting(db: Path) -> None:
    everything = lensd.Aggregator.from_database(db, top_level_only=False)
    root = SENSITIVITY["sensitivity"]["identifier"]
    children = {f.id: f for f in everything.query(everything.parent_id == root).fits()}
    assert len(children) == 8
    for cell in SENSITIVITY["cells"]:
        base = children[f"{root}/{cell['label']}/[base]"]
        perturb = children[f"{root}/{cell['label']}/[perturb]"]
        assert math.isclose(base.max_log_likelihood, cell["base_max_log_likelihood"], rel_tol=1e-12)
        assert math.isclose(perturb.max_log_likelihood - base.max_log_likelihood,
                            cell["log_likelihood_increase"], rel_tol=1e-9)
    lens = everything.model.galaxies.lens
    isothermal = everything.query((lens.mass == "Isothermal") & (lens.mass.einstein_radius > 1.0))
    assert {f.id for f in isothermal.fits()} == {
        f.id for f in everything.fits()
        if f.instance is not None and f.instance.to_flat().get("galaxies.lens.mass.einstein_radius", 0) > 1.0
        and (f.model or {}).get("arguments", {}).get("galaxies", {}).get("arguments", {}).get("lens", {})
        .get("arguments", {}).get("mass", {}).get("class_path") == "lensmodels.Isothermal"}
    assert len(isothermal) > 0


def test_completed_only_hides_running(tmp_path: Path) -> None:
    tree = tmp_path / "out"
    shutil.copytree(DIR_OUTPUT / "howtofit" / "single", tree)
    running = next(tree.glob("gaussian_a/lbfgs/*/.completed"))
    running.unlink()
    db = tmp_path / "l.sqlite"
    assert lensd_cli("ingest", str(tree), "--db", str(db)).returncode == 0
    assert len(lensd.Aggregator.from_database(db)) == 4
    assert len(lensd.Aggregator.from_database(db, completed_only=True)) == 3
    agg = lensd.Aggregator.from_database(db)
    assert [f.status for f in agg.query(agg.status == "running").fits()] == ["running"]


def test_readable_errors(db: Path, tmp_path: Path) -> None:
    agg = lensd.Aggregator.from_database(db)
    with pytest.raises(QueryError):
        agg.query(agg.unique_tag == 3)
    with pytest.raises(QueryError):
        bool(agg.unique_tag == "a")
    with pytest.raises(StorageError, match="no database"):
        lensd.Aggregator.from_database(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StorageError):
        lensd.Aggregator.from_database(tmp_path / "junk.sqlite")


MEMORY_SCRIPT = """
import resource, sys
import lensd
agg = lensd.Aggregator.from_database(sys.argv[1])
n = 0
for samples in agg.limit(int(sys.argv[2])).values("samples"):
    n += len(samples)
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_values_samples_memory_stays_flat(tmp_path: Path) -> None:
    """Peak memory reading 3,000 fits' samples is that of reading 100: values() streams."""
    from lensd.demo.synthetic import record

    db = tmp_path / "m.sqlite"
    import anyio

    from lensd.domain.records import validate_record
    from lensd.store.writeops import Upsert
    from lensd.store.writer import BatchWriter

    async def fill() -> None:
        writer = await BatchWriter.open(db, "normal")
        for start in range(0, 3000, 250):
            await writer.apply([Upsert(validate_record(record(i, n_samples=1000))) for i in range(start, start + 250)])
        await writer.close()

    anyio.run(fill)
    peaks = {}
    for count in (100, 3000):
        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(db), str(count)], capture_output=True,
                             text=True, check=True).stdout.split()
        assert int(out[0]) == count * 1000
        peaks[count] = int(out[1])  # KiB
    # 3,000 fits × 1,000 samples × 4 parameters is ~100 MB of arrays; streaming keeps it out of memory.
    assert peaks[3000] < peaks[100] + 20_000, peaks


def test_a_zero_dimensional_array_queries_as_its_element(agg: lensd.Aggregator) -> None:
    """What numpy hands a notebook (``np.asarray`` of a median: a 0-d array) selects as the number."""
    import numpy as np

    middle = np.asarray(np.median([fit.max_log_likelihood for fit in agg.fits()]))
    assert middle.ndim == 0
    chosen, plain = agg.query(agg.max_log_likelihood > middle), agg.query(agg.max_log_likelihood > float(middle))
    assert [fit.id for fit in chosen.fits()] == [fit.id for fit in plain.fits()]
    assert 0 < len(chosen) < len(agg)
