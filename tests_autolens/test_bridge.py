"""``lensd.autofit``: PyAutoLens's aggregator helpers over a lensd database, against PyAutoFit's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lensd
import lensd.autofit

AUTOLENS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "autolens"
RECORDS = json.loads((AUTOLENS / "records.json").read_text())


def key(fit: Any) -> tuple[str, float]:
    """A fit's unique tag and best log likelihood: names repeat (a grid's cells share theirs)."""
    return (fit.unique_tag, round(float(fit.max_log_likelihood), 6))


def close(a: Any, b: Any) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-10, atol=1e-12))


def tracer_values(tracer: Any) -> dict[str, Any]:
    import autolens as al

    grid = al.Grid2DIrregular(values=[tuple(p) for p in RECORDS["points"]])
    return {"image": np.asarray(tracer.image_2d_from(grid=grid)),
            "deflections": np.asarray(tracer.deflections_yx_2d_from(grid=grid)),
            "convergence": np.asarray(tracer.convergence_2d_from(grid=grid)),
            "potential": np.asarray(tracer.potential_2d_from(grid=grid)),
            "redshifts": [g.redshift for g in tracer.galaxies]}


def by_key(agg: Any, make: Any) -> dict[tuple[str, float], Any]:
    """PyAutoFit's aggregator helpers yield in the aggregator's order; pair them with their fits."""
    return {key(fit): value for fit, value in zip(agg, make(agg), strict=True)}


@pytest.fixture
def bridge(db: Path) -> Any:
    """Every fit that is not a grid search's parent, cells included, as PyAutoFit's directory
    aggregator has them (a grid's parent has no model or instance of its own)."""
    agg = lensd.Aggregator.from_database(db, top_level_only=False)
    yield agg.as_autofit(trust=True).query(agg.is_grid_search == False)  # noqa: E712 - a query
    agg.close()


def test_the_bridge_needs_trust(lensd_agg: lensd.Aggregator) -> None:
    with pytest.raises(lensd.errors.LensdError, match="trust"):
        lensd_agg.as_autofit()
    with pytest.raises(lensd.errors.LensdError, match="trust"):
        lensd.autofit.Aggregator(lensd_agg, trust=False)
    assert len(lensd.autofit.Aggregator(lensd_agg)) == len(lensd_agg)


def test_tracer_agg_yields_pyautofits_tracers(bridge: Any, pyautofit_agg: Any) -> None:
    import autolens as al

    ours = by_key(bridge, lambda agg: al.agg.TracerAgg(aggregator=agg).max_log_likelihood_gen_from())
    theirs = by_key(pyautofit_agg, lambda agg: al.agg.TracerAgg(aggregator=agg).max_log_likelihood_gen_from())
    assert set(ours) == set(theirs) and len(ours) == 7  # five fits and two grid cells
    for name, tracer_list in ours.items():
        assert len(tracer_list) == len(theirs[name]) == 1
        mine, pyautofit = tracer_values(tracer_list[0]), tracer_values(theirs[name][0])
        for quantity, value in mine.items():
            assert close(value, pyautofit[quantity]), (name, quantity)
        assert type(tracer_list[0].galaxies[0].mass) is type(theirs[name][0].galaxies[0].mass)


def test_fit_imaging_agg_yields_pyautofits_log_likelihoods(bridge: Any, pyautofit_agg: Any) -> None:
    import autolens as al

    ours = by_key(bridge, lambda agg: al.agg.FitImagingAgg(aggregator=agg).max_log_likelihood_gen_from())
    theirs = by_key(pyautofit_agg, lambda agg: al.agg.FitImagingAgg(aggregator=agg).max_log_likelihood_gen_from())
    assert set(ours) == set(theirs)
    recorded = {(r["unique_tag"], round(r["max_log_likelihood"], 6)): r["fits"][0]
                for r in RECORDS["directory"].values()}
    for name, fit_list in ours.items():
        (fit,) = fit_list
        assert fit.log_likelihood == pytest.approx(theirs[name][0].log_likelihood, rel=1e-12)
        assert fit.log_likelihood == pytest.approx(recorded[name]["log_likelihood"], rel=1e-12)
        assert fit.chi_squared == pytest.approx(recorded[name]["chi_squared"], rel=1e-12)


def test_imaging_agg_yields_pyautofits_datasets(bridge: Any, pyautofit_agg: Any) -> None:
    import autolens as al

    ours = by_key(bridge, lambda agg: al.agg.ImagingAgg(aggregator=agg).dataset_gen_from())
    theirs = by_key(pyautofit_agg, lambda agg: al.agg.ImagingAgg(aggregator=agg).dataset_gen_from())
    for name, (dataset,) in ours.items():
        (pyautofit,) = theirs[name]
        assert dataset.shape_native == pyautofit.shape_native
        assert close(dataset.data, pyautofit.data) and close(dataset.noise_map, pyautofit.noise_map)
        assert close(dataset.psf.kernel, pyautofit.psf.kernel)
        assert int(np.sum(~dataset.mask)) == int(np.sum(~pyautofit.mask))


def test_random_draws_and_weights_come_through(bridge: Any) -> None:
    import autolens as al

    tracer_agg = al.agg.TracerAgg(aggregator=bridge.query(bridge.search.name == "nautilus"))
    (draws,) = list(tracer_agg.randomly_drawn_via_pdf_gen_from(total_samples=2))
    assert len(draws) == 2 and all(len(tracers) == 1 for tracers in draws)
    (weights,) = list(tracer_agg.weights_above_gen_from(minimum_weight=1e-4))
    assert weights and min(weights) > 1e-4


def test_pyautofit_style_values(bridge: Any, pyautofit_agg: Any) -> None:
    import autofit as af

    ours = {key(f): f for f in bridge}
    theirs = {key(f): f for f in pyautofit_agg}
    for name, fit in ours.items():
        pyautofit = theirs[name]
        assert fit.model.paths == pyautofit.model.paths
        assert fit.model.prior_count == pyautofit.model.prior_count
        samples = fit.value("samples")
        assert type(samples).__name__ == type(pyautofit.samples).__name__
        assert close(samples.max_log_likelihood(as_instance=False),
                     pyautofit.samples.max_log_likelihood(as_instance=False))
        assert samples.log_evidence == pyautofit.samples.log_evidence
        assert close(samples.parameter_lists, pyautofit.samples.parameter_lists)
        assert isinstance(fit.instance, af.ModelInstance)
        assert fit.value("info") == pyautofit.value("info")
        assert fit.children == []
        assert (fit.parent is None) == ("/" not in fit.id)  # a grid cell's parent is its grid
    assert [s.log_evidence for s in bridge.values("samples")] == [ours[key(f)].samples.log_evidence for f in bridge]
    assert len(list(bridge.values("dataset"))) == len(bridge)


def test_grid_searches_and_best_fits(lensd_agg: lensd.Aggregator) -> None:
    bridge = lensd_agg.as_autofit(trust=True)
    (grid,) = list(bridge.grid_searches())
    assert grid.is_grid_search and len(grid.children) == 2
    assert all(cell.parent.id == grid.id for cell in grid.children)
    (best,) = list(bridge.grid_searches().best_fits())
    recorded = RECORDS["database"]["grid_searches.best_fits"][0]
    assert recorded.endswith(best.id.rsplit("/", 1)[-1])
    assert best.max_log_likelihood == max(RECORDS["fits"]["grid"]["log_likelihoods"])


SAMPLES_API = ["parameter_lists", "log_likelihood_list", "log_prior_list", "log_posterior_list", "weight_list",
               "max_log_likelihood", "max_log_likelihood_index", "max_log_likelihood_sample", "median_pdf",
               "values_at_sigma", "values_at_upper_sigma", "values_at_lower_sigma", "errors_at_sigma",
               "errors_at_upper_sigma", "errors_at_lower_sigma", "from_sample_index", "draw_randomly_via_pdf",
               "log_evidence", "samples_info", "total_samples", "model"]


@pytest.mark.parametrize("name", SAMPLES_API)
def test_samples_api_names_and_signatures_are_pyautofits(name: str) -> None:
    """lensd's Samples has each name with PyAutoFit's kind (property or method) and arguments."""
    import inspect

    import autofit as af

    from lensd.domain.samples import Samples

    theirs = inspect.getattr_static(af.SamplesPDF, name, None)
    ours = inspect.getattr_static(Samples, name, None)
    assert ours is not None, name
    if theirs is None:  # an instance attribute in PyAutoFit (model, samples_info)
        assert name in ("model", "samples_info")
        return
    assert isinstance(theirs, property) == isinstance(ours, property), name
    if isinstance(theirs, property):
        return
    wrapped = getattr(theirs, "__wrapped__", None)  # PyAutoFit's to_instance adds as_instance, as_dict
    their_args = [p for p in inspect.signature(wrapped or theirs).parameters if p not in ("self", "kwargs", "args")]
    if wrapped is not None:
        their_args += ["as_instance", "as_dict"]
    our_args = list(inspect.signature(ours).parameters)
    assert set(their_args) <= set(our_args), (name, their_args, our_args)
    for argument in their_args:
        assert inspect.signature(ours).parameters[argument].kind is not inspect.Parameter.POSITIONAL_ONLY
