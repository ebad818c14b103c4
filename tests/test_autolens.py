"""Real PyAutoLens output (tests/fixtures/autolens): lensd's answers against PyAutoFit's own.

``records.json`` holds what PyAutoFit's aggregators answered on these folders (see its README);
every expected value below comes from it, never from lensd.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import lensd_cli

import lensd

AUTOLENS = Path(__file__).parent / "fixtures" / "autolens"
OUTPUT = AUTOLENS / "output"
RECORDS = json.loads((AUTOLENS / "records.json").read_text())
DIRECTORY: dict[str, Any] = RECORDS["directory"]
DATABASE: dict[str, Any] = RECORDS["database"]
BY_NAME = {f"{v['unique_tag']}/{v['name']}": v for k, v in DIRECTORY.items() if "grid_slope/" not in k}
CHAINED = BY_NAME["lens_a/chained[source_fixed]"]


class Isothermal:  # only the module and name matter to a class query
    pass


class PowerLaw:
    pass


Isothermal.__module__ = "autogalaxy.profiles.mass.total.isothermal"
PowerLaw.__module__ = "autogalaxy.profiles.mass.total.power_law"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("autolens") / "lensd.sqlite"
    result = lensd_cli("ingest", str(OUTPUT), "--db", str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def agg(db: Path) -> Iterator[lensd.Aggregator]:
    aggregator = lensd.Aggregator.from_database(db)
    yield aggregator
    aggregator.close()


def names(agg: lensd.Aggregator) -> list[str]:
    return sorted(f"{fit.unique_tag}/{fit.name}" for fit in agg.fits())


def by_name(agg: lensd.Aggregator, key: str) -> lensd.Fit:
    tag, name = key.split("/", 1)
    (fit,) = agg.query((agg.unique_tag == tag) & (agg.name == name)).fits()
    return fit


def test_every_fit_is_read_with_pyautofits_max_log_likelihood(agg: lensd.Aggregator) -> None:
    """Six top-level fits (the grid search counts once) and two grid cells, zip-only fit included."""
    assert len(agg) == len(DATABASE["all"])
    everything = lensd.Aggregator.from_database(agg._path, top_level_only=False)
    fits = {fit.id: fit for fit in everything.fits()}
    for record in DIRECTORY.values():
        match = [fit for fit in fits.values() if fit.id == record["id"] or fit.id.endswith(record["id"])
                 or (record["name"] == fit.name and record["unique_tag"] == fit.unique_tag
                     and record["model_paths"] and fit.max_log_likelihood is not None
                     and math.isclose(fit.max_log_likelihood, record["max_log_likelihood"], rel_tol=1e-12))]
        assert match, record["id"]
        assert math.isclose(match[0].max_log_likelihood, record["max_log_likelihood"], rel_tol=1e-12)
    everything.close()


# Where lensd's answer differs from PyAutoFit's on purpose (docs/pyautolens.md says why):
# - the chained fit's source is an instance node without a ``disk``: for lensd a missing node is
#   None (as everywhere in lensd's queries), PyAutoFit's database says "not None";
# - ``centre.centre_0 < 1.0``: PyAutoFit's database finds no fit (it cannot compare a tuple's
#   component); lensd compares it in every fit, fixed tuples of instance nodes included;
# - a grid search's parent has no model, so its ``disk`` is None too (and it has its folder's
#   name in lensd, none in PyAutoFit's database).
DIFFERENCES = {
    "source.disk == None": sorted([*DATABASE["source.disk == None"], "lens_a/chained[source_fixed]",
                                   "lens_c/grid_slope"]),
    "source.disk != None": ["lens_b/emcee"],
    "source.bulge.centre.centre_0 < 1.0": sorted(k for k in BY_NAME),
}


def queries(agg: lensd.Aggregator) -> dict[str, lensd.Aggregator]:
    lens, source = agg.model.galaxies.lens, agg.model.galaxies.source
    return {
        "unique_tag == lens_a": agg.query(agg.search.unique_tag == "lens_a"),
        "unique_tag == incorrect_name": agg.query(agg.search.unique_tag == "incorrect_name"),
        "name == nautilus": agg.query(agg.search.name == "nautilus"),
        "lens.mass == Isothermal": agg.query(lens.mass == Isothermal),
        "lens.mass == PowerLaw": agg.query(lens.mass == PowerLaw),
        "source.disk == None": agg.query(source.disk == None),  # noqa: E711 - PyAutoFit's spelling
        "source.disk != None": agg.query(source.disk != None),  # noqa: E711
        "source.bulge.sersic_index < 3.0": agg.query(source.bulge.sersic_index < 3.0),
        "source.bulge.effective_radius < 0.35": agg.query(source.bulge.effective_radius < 0.35),
        "source.bulge.centre.centre_0 < 1.0": agg.query(source.bulge.centre.centre_0 < 1.0),
        "Isothermal & einstein_radius > 1.0": agg.query((lens.mass == Isothermal)
                                                        & (lens.mass.einstein_radius > 1.0)),
        "einstein_radius > 1.0 | unique_tag == lens_b": agg.query((lens.mass.einstein_radius > 1.0)
                                                                  | (agg.search.unique_tag == "lens_b")),
    }


QUERIES = sorted(k for k in DATABASE if k not in ("all", "grid_searches", "grid_searches.best_fits",
                                                  "max_log_likelihood_vectors"))


@pytest.mark.parametrize("query", QUERIES)
def test_database_tutorial_queries_as_pyautofit(agg: lensd.Aggregator, query: str) -> None:
    want = DIFFERENCES.get(query, DATABASE[query])
    assert names(queries(agg)[query]) == want


def test_a_model_node_with_a_class_is_not_none(agg: lensd.Aggregator) -> None:
    source = agg.model.galaxies.source
    with_disk = names(agg.query(source.disk != None))  # noqa: E711
    assert "lens_b/emcee" in with_disk
    assert "lens_b/emcee" not in names(agg.query(source.disk == None))  # noqa: E711
    assert "lens_b/emcee" in names(agg.query(~source.disk.is_none()))
    # a tuple node is a value too (the grid parent has no model: everything in it is None)
    assert names(agg.query(agg.model.galaxies.lens.mass.centre == None)) == ["lens_c/grid_slope"]  # noqa: E711


def test_fixed_tuples_in_instance_nodes_are_kept(agg: lensd.Aggregator) -> None:
    """The chained fit's source is the Nautilus fit's instance; its centre is a fixed tuple."""
    fit = by_name(agg, "lens_a/chained[source_fixed]")
    nautilus = BY_NAME["lens_a/nautilus"]["samples"]["max_log_likelihood_dict"]
    assert fit.instance is not None
    centre = fit.instance.galaxies.source.bulge.centre
    assert centre == (nautilus["galaxies.source.bulge.centre.centre_0"],
                      nautilus["galaxies.source.bulge.centre.centre_1"])
    assert "lens_a/chained[source_fixed]" in names(
        agg.query(agg.model.galaxies.source.bulge.centre.centre_0 < 1.0))
    # a fixed tuple of a model node (lens.mass.centre = (0.0, 0.0)) as well
    assert fit.instance.galaxies.lens.mass.centre == (0.0, 0.0)
    assert names(agg.query(agg.model.galaxies.lens.mass.centre.centre_0 == 0.0)) == sorted(BY_NAME)


def test_tuples_in_instances_are_tuples(agg: lensd.Aggregator) -> None:
    fit = by_name(agg, "lens_a/nautilus")
    expected = BY_NAME["lens_a/nautilus"]["instance"]["attributes"]["galaxies"]["attributes"]
    assert fit.instance is not None
    centre = fit.instance.galaxies.source.bulge.centre
    assert isinstance(centre, tuple) and len(centre) == 2
    y, x = centre
    assert [y, x] == list(centre) == [centre[0], centre[1]] == [centre.centre_0, centre.centre_1]  # type: ignore[attr-defined]
    assert list(centre) == expected["source"]["attributes"]["bulge"]["attributes"]["centre"]
    assert list(fit.instance.galaxies.lens.mass.ell_comps) == \
        expected["lens"]["attributes"]["mass"]["attributes"]["ell_comps"]


# ------------------------------------------------------------------------------------------------
# PyAutoFit's Samples API


def flat_dump(dump: Any, prefix: str = "") -> dict[str, Any]:
    """A PyAutoFit instance as generate.py dumped it, as dotted paths (tuples as ``<key>_<i>``)."""
    out: dict[str, Any] = {}
    for key, value in (dump.get("attributes") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and "attributes" in value:
            out.update(flat_dump(value, path))
        elif isinstance(value, list):
            out.update({f"{path}.{key}_{i}": item for i, item in enumerate(value)})
        else:
            out[path] = value
    return out


def close(a: Any, b: Any) -> bool:
    import numpy as np

    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-10, atol=1e-12))


def same_instance(instance: lensd.Instance, dump: Any) -> None:
    theirs = flat_dump(dump)
    ours = instance.to_flat()
    assert ours, "an empty instance"
    for path, value in ours.items():
        if path.endswith(".label"):
            continue  # a constant PyAutoFit keeps on the model, not on the object it builds
        assert path in theirs, path
        assert value == theirs[path] or close(value, theirs[path]), path


def samples_of(agg: lensd.Aggregator) -> list[tuple[Any, dict[str, Any]]]:
    """(lensd samples, PyAutoFit's record) for every fit with samples, grid cells included."""
    everything = lensd.Aggregator.from_database(agg._path, top_level_only=False)
    pairs = []
    for fit in everything.fits():
        samples = fit.samples
        if samples is None:
            continue
        sample = samples.max_log_likelihood_sample
        assert sample is not None
        best = sample.log_likelihood
        (record,) = [r for r in DIRECTORY.values() if math.isclose(r["max_log_likelihood"], best, rel_tol=1e-12)]
        pairs.append((samples, record))
    everything.close()
    assert len(pairs) == len(DIRECTORY)
    return pairs


def test_both_parameter_orders_are_explicit(agg: lensd.Aggregator) -> None:
    for samples, record in samples_of(agg):
        folder = record_folder(record)
        if folder is not None:  # the stored columns: samples.csv's order
            header = (OUTPUT / folder / "files" / "samples.csv").read_text().split("\n", 1)[0].split(",")
            assert samples.paths == [c.strip() for c in header][:len(samples.paths)]
        assert samples.model_paths == record["samples"]["model_paths"] == record["model_paths"]
        assert sorted(samples.paths) == sorted(samples.model_paths)
    assert any(s.paths != s.model_paths for s, _ in samples_of(agg)), "the fixtures show both orders"


def record_folder(record: dict[str, Any]) -> str | None:
    key = next(k for k, v in DIRECTORY.items() if v is record)
    return key if (OUTPUT / key).is_dir() else None


def test_lists_as_pyautofit(agg: lensd.Aggregator) -> None:
    for samples, record in samples_of(agg):
        want = record["samples"]
        for name in ("parameter_lists", "log_likelihood_list", "log_prior_list", "log_posterior_list",
                     "weight_list"):
            ours = getattr(samples, name)
            assert len(ours) == want[f"{name}.len"], name
            assert close(ours[:20], want[f"{name}.head"]), name
            assert close(ours[-1], want[f"{name}.last"]), name
            assert close([sum(column) for column in zip(*ours, strict=True)] if name == "parameter_lists"
                         else sum(ours), want[f"{name}.sum"]), name
        assert samples.total_samples == want["parameter_lists.len"]


def test_max_log_likelihood_as_pyautofit(agg: lensd.Aggregator) -> None:
    for samples, record in samples_of(agg):
        want = record["samples"]
        assert samples.max_log_likelihood_index == want["max_log_likelihood_index"]
        assert close(samples.max_log_likelihood(as_instance=False), want["max_log_likelihood_vector"])
        assert samples.max_log_likelihood(as_dict=True) == pytest.approx(want["max_log_likelihood_dict"], rel=1e-12)
        same_instance(samples.max_log_likelihood(), want["max_log_likelihood_instance"])
        same_instance(samples.max_log_likelihood(), record["instance"])
        same_instance(samples.from_sample_index(sample_index=-1), want["from_sample_index_last"])
        same_instance(samples.from_sample_index(9), want["from_sample_index_9"])


def test_pdf_estimates_as_pyautofit(agg: lensd.Aggregator) -> None:
    checked = set()
    for samples, record in samples_of(agg):
        want = record["samples"]
        if "pdf_error" in want:  # PyAutoFit's optimiser Samples have no median_pdf
            assert samples.median_pdf(as_instance=False) is not None
            continue
        checked.add(want["class"])
        assert close(samples.median_pdf(as_instance=False), want["median_pdf_vector"])
        same_instance(samples.median_pdf(), want["median_pdf_instance"])
        for sigma in (1.0, 3.0):
            key = f"{sigma:g}"
            for name in ("values_at_sigma", "values_at_upper_sigma", "values_at_lower_sigma",
                         "errors_at_sigma", "errors_at_upper_sigma", "errors_at_lower_sigma"):
                got = getattr(samples, name)(sigma=sigma, as_instance=False)
                assert close(got, want[f"{name}_{key}"]), (name, sigma, want["class"])
        upper = samples.values_at_upper_sigma(sigma=3.0)
        same_instance(upper, want["values_at_upper_sigma_3_instance"])
    assert checked == {"SamplesNest", "SamplesMCMC"}


def test_log_evidence_and_samples_info_as_pyautofit(agg: lensd.Aggregator) -> None:
    for samples, record in samples_of(agg):
        assert samples.samples_info == record["samples_info"]
        want = record["samples"]["log_evidence"]
        assert samples.log_evidence == want if want is None else math.isclose(samples.log_evidence, want)
    infos = list(agg.values("samples_info"))
    assert {i["class_path"].rsplit(".", 1)[-1] for i in infos} == {"SamplesNest", "SamplesMCMC", "Samples"}


def test_samples_summary_is_a_name_for_the_summary(agg: lensd.Aggregator) -> None:
    summaries = list(agg.values("summary"))  # lensd's field: one a fit, None for the grid's parent
    assert None in summaries and len(summaries) == len(agg)
    # PyAutoFit's file name reads as its file does: the fits without one give nothing
    assert list(agg.values("samples_summary")) == [s for s in summaries if s is not None]
    fit = by_name(agg, "lens_a/nautilus")
    assert fit.value("samples_summary") == fit.summary
    summary = fit.value("samples_summary")
    best = summary["arguments"]["max_log_likelihood_sample"]["arguments"]["kwargs"]["arguments"]
    vector = BY_NAME["lens_a/nautilus"]["samples_summary"]["max_log_likelihood_vector"]
    assert close([best[p] for p in BY_NAME["lens_a/nautilus"]["model_paths"]], vector)


# ------------------------------------------------------------------------------------------------
# FITS datasets and images


def same_hdus(hdus: Any, want: list[dict[str, Any]]) -> None:
    assert [hdu.name for hdu in hdus] == [h["name"] for h in want]
    for hdu, expected in zip(hdus, want, strict=True):
        assert list(hdu.data.shape) == expected["shape"]
        assert math.isclose(float(hdu.data.sum()), expected["sum"], rel_tol=1e-12, abs_tol=1e-12)
        for key, value in expected["header"].items():
            assert hdu.header[key] == value, key


def test_fits_datasets_are_hdulists_under_pyautofits_names(agg: lensd.Aggregator) -> None:
    from astropy.io import fits

    datasets = list(agg.values("dataset"))
    with_dataset = [r for k, r in DIRECTORY.items() if "dataset" in r["files"] and "grid_slope/" not in k]
    assert len(datasets) == len(with_dataset) == 5
    assert all(isinstance(d, fits.HDUList) for d in datasets)
    for key, record in BY_NAME.items():
        fit = by_name(agg, key)
        same_hdus(fit.value("dataset"), record["files"]["dataset"]["hdus"])
        for name in ("fit", "tracer", "galaxy_images", "source_plane_images"):
            if f"image/{name}" not in record["files"]:
                continue
            if name in record["files"]:  # files/tracer.json: PyAutoFit's fit.value("tracer") is the JSON
                assert not isinstance(fit.value(name), fits.HDUList)
                continue
            same_hdus(fit.value(name), record["files"][f"image/{name}"]["hdus"])


def test_pickles_are_skipped_with_a_note(agg: lensd.Aggregator) -> None:
    fit = by_name(agg, "lens_a/chained[source_fixed]")
    skipped = fit.value("lensd.skipped")
    assert "files/search_internal/search_internal.dill: a pickle, never opened (opening one runs code)" in skipped
    assert any(line.startswith("image/dataset.fits: PyAutoFit's name 'dataset'") for line in skipped)
    assert all(isinstance(note, list) for note in agg.values("lensd.skipped"))


def test_without_astropy_the_error_names_the_extra(db: Path) -> None:
    """A real interpreter in which astropy cannot be imported (its module entry is None)."""
    import subprocess
    import sys

    script = ("import sys; sys.modules['astropy'] = None\n"
              "import lensd\n"
              "agg = lensd.Aggregator.from_database(sys.argv[1])\n"
              "try:\n"
              "    next(agg.values('dataset'))\n"
              "except lensd.errors.MissingExtra as exc:\n"
              "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reading FITS files needs astropy: pip install 'lensd[astro]'"


# ------------------------------------------------------------------------------------------------
# The default API never imports a class path read from the data


PLANT = "lensd_planted_marker"


def test_opening_a_database_imports_nothing(tmp_path: Path) -> None:
    """A fit whose model, samples_info and cosmology name a module that leaves a marker file when
    imported: ingest, queries, values and printing all run in a real interpreter that could import
    it (it is on PYTHONPATH), and the marker never appears; importing it at the end does make it."""
    import shutil
    import subprocess
    import sys

    source = OUTPUT / "lenses" / "lens_a" / "nautilus" / RECORDS["fits"]["nautilus"]["identifier"]
    fit = shutil.copytree(source, tmp_path / "output" / "planted" / source.name, copy_function=shutil.copyfile)
    for name in ("model.json", "samples_info.json", "cosmology.json", "search.json", "samples_summary.json"):
        path = fit / "files" / name
        text = path.read_text()
        for real in ("autogalaxy.profiles.mass.total.isothermal", "autofit.non_linear.samples.nest",
                     "autogalaxy.cosmology.model", "autofit.non_linear.search.nest.nautilus.search",
                     "autogalaxy.galaxy.galaxy"):
            text = text.replace(f'"{real}.', f'"{PLANT}.')
        path.write_text(text)
    assert PLANT in (fit / "files" / "model.json").read_text()
    packages, marker = tmp_path / "packages", tmp_path / "imported"
    packages.mkdir()
    (packages / f"{PLANT}.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                          "class Isothermal: pass\nclass Galaxy: pass\n")
    script = f"""
import sys, lensd
db = sys.argv[1]
agg = lensd.Aggregator.from_database(db)
lens = agg.model.galaxies.lens
for query in (lens.mass == "{PLANT}.Isothermal", lens.mass == "Isothermal", lens.mass.einstein_radius > 1.0,
              agg.model.galaxies.source.disk == None):
    assert len(agg.query(query)) == 1, query
for name in ("model", "search", "info", "summary", "samples_summary", "instance", "samples", "samples_info",
             "cosmology", "dataset", "lensd.skipped"):
    for value in agg.values(name):
        repr(value)
for fit in agg.fits():
    repr(fit.instance), repr(fit.samples.max_log_likelihood()), repr(fit.samples.median_pdf()), fit.to_dict()
rows = list(agg.to_rows())
import os
print("imported" if os.path.exists(sys.argv[2]) else "clean")
import {PLANT}
print("imported" if os.path.exists(sys.argv[2]) else "clean")
"""
    env = {**os.environ, "PYTHONPATH": str(packages)}
    db = tmp_path / "planted.sqlite"
    ingest = subprocess.run([sys.executable, "-m", "lensd", "ingest", str(tmp_path / "output"), "--db", str(db)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stderr
    assert not marker.exists()
    run = subprocess.run([sys.executable, "-c", script, str(db), str(marker)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["clean", "imported"]


def test_over_the_socket_samples_and_fits_read_the_same(db: Path, make_daemon: Any, short_tmp: Path) -> None:
    """A real daemon on a copy of the database: values("samples") carries samples_info (the 4th
    column of a samples row) and FITS payloads come back as HDULists, as from the file."""
    import shutil

    import anyio

    copy = shutil.copyfile(db, short_tmp / "copy.sqlite")
    daemon = make_daemon(db=Path(copy))

    async def ask() -> tuple[list[Any], list[Any]]:
        async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as agg:
            samples = [s async for s in agg.values("samples")]
            datasets = [d async for d in agg.values("dataset")]
            return samples, datasets

    over_socket, datasets = anyio.run(ask)
    from_file = lensd.Aggregator.from_database(copy)
    expected = list(from_file.values("samples"))
    assert [s.samples_info for s in over_socket] == [s.samples_info for s in expected]
    assert [s.log_evidence for s in over_socket] == [s.log_evidence for s in expected]
    assert [s.median_pdf(as_instance=False) for s in over_socket] == [s.median_pdf(as_instance=False) for s in expected]
    assert [[h.name for h in d] for d in datasets] == [[h.name for h in d] for d in from_file.values("dataset")]
    from_file.close()
