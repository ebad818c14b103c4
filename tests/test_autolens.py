"""Real PyAutoLens output (tests/fixtures/autolens): lensd's answers against PyAutoFit's own.

``records.json`` holds what PyAutoFit's aggregators answered on these folders (see its README);
every expected value below comes from it, never from lensd.
"""

from __future__ import annotations

import json
import math
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
