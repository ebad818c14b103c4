"""A streamed fit without a ``samples_summary.json`` gets its median-PDF values and 1σ/3σ bounds
from its samples (weighted quantiles, as PyAutoFit computes them), so ``agg.median.<path>``,
``lensd export --median`` and ``fit.summary`` work for it as for a folder fit. Real daemon."""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
import numpy as np
from conftest import lensd_cli
from records_factory import PATHS, record

import lensd


def weighted_quantile(x: np.ndarray, q: float, w: np.ndarray) -> float:
    """The reference: the weighted CDF, starting at 0, interpolated (corner.py's definition)."""
    order = np.argsort(x)
    cdf = np.concatenate([[0.0], np.cumsum(w[order])[:-1]])
    return float(np.interp(q, cdf / cdf[-1], x[order]))


def streamed(i: int) -> dict[str, Any]:
    data = record(i, n_samples=400)
    rng = np.random.default_rng(100 + i)
    weight = rng.uniform(0.1, 1.0, 400)
    data["samples"]["weight"] = weight / weight.sum()  # normalised, as a nested sampler's
    return data


def test_medians_and_sigma_bounds_come_from_the_samples(daemon) -> None:  # type: ignore[no-untyped-def]
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(streamed(1)) == "applied"
        data = streamed(2)
        fit = client.start(id="fit-2", name="live", model=data["model"])
        fit.progress(samples=data["samples"])
        assert fit.complete() == "applied"  # the samples progress sent are the final ones
        assert client.submit({**record(3), "status": "running"}) == "applied"  # running: no summary yet

    agg = lensd.Aggregator.from_database(daemon.db)
    try:
        fits = {f.id: f for f in agg.fits()}
        for fit_id, data in (("fit-1", streamed(1)), ("fit-2", streamed(2))):
            samples = data["samples"]
            summary = fits[fit_id].summary
            assert summary["derived_from"] == "samples"
            for j, path in enumerate(PATHS):
                column, weight = samples["parameters"][:, j], samples["weight"]
                median = weighted_quantile(column, 0.5, weight)
                assert math.isclose(summary["median_pdf"][path], median, rel_tol=1e-12)
                for sigma in (1, 3):
                    low = (1 - math.erf(sigma / math.sqrt(2))) / 2
                    bounds = [weighted_quantile(column, low, weight), weighted_quantile(column, 1 - low, weight)]
                    assert np.allclose(summary[f"values_at_sigma_{sigma}"][path], bounds, rtol=1e-12)
            radius = summary["median_pdf"]["galaxies.lens.mass.einstein_radius"]
            median_instance = fits[fit_id].median
            assert median_instance is not None
            assert median_instance.galaxies.lens.mass.einstein_radius == radius
            found = agg.query((agg.median.galaxies.lens.mass.einstein_radius > radius - 1e-9)
                              & (agg.median.galaxies.lens.mass.einstein_radius < radius + 1e-9))
            assert [f.id for f in found.fits()] == [fit_id]
        assert fits["fit-3"].summary is None
    finally:
        agg.close()

    exported = lensd_cli("export", "--median", "--format", "json", "--db", str(daemon.db))
    assert exported.returncode == 0, exported.stderr
    rows = {row["id"]: row for row in json.loads(exported.stdout)}
    assert math.isclose(rows["fit-1"]["galaxies.lens.mass.einstein_radius"],
                        fits["fit-1"].summary["median_pdf"]["galaxies.lens.mass.einstein_radius"])
    assert rows["fit-3"]["galaxies.lens.mass.einstein_radius"] is None


def pyautofit_summary(medians: dict[str, float]) -> dict[str, Any]:
    """A samples_summary.json as PyAutoFit writes it: the median PDF sample of the free parameters."""
    sample = {"type": "instance", "class_path": "autofit.non_linear.samples.sample.Sample",
              "arguments": {"kwargs": {"type": "dict", "arguments": medians}}}
    return {"type": "instance", "class_path": "autofit.non_linear.samples.summary.SamplesSummary",
            "arguments": {"median_pdf_sample": sample, "log_evidence": None}}


def test_median_queries_see_the_constants_for_either_summary(daemon) -> None:  # type: ignore[no-untyped-def]
    """``agg.median.<fixed parameter>`` matches what ``fit.median`` shows, whether the medians came
    from the samples (a streamed fit) or from PyAutoFit's samples_summary.json (a folder fit)."""
    folder_fit = {**record(5), "id": "from-folder", "summary": pyautofit_summary({path: 1.0 for path in PATHS})}
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(streamed(4)) == "applied"
        assert client.submit(folder_fit) == "applied"

    agg = lensd.Aggregator.from_database(daemon.db)
    redshift = agg.median.galaxies.lens.redshift  # a Constant of the model, 0.5
    try:
        medians = {f.id: f.median for f in agg.fits()}
        assert {i: m.galaxies.lens.redshift for i, m in medians.items() if m} == {"fit-4": 0.5, "from-folder": 0.5}
        assert sorted(f.id for f in agg.query(redshift == 0.5).fits()) == ["fit-4", "from-folder"]
        assert len(agg.query(agg.median.galaxies.lens.mass.einstein_radius == 1.0)) == 1
        assert "galaxies.lens.redshift" in agg.columns(median=True)
    finally:
        agg.close()

    async def ask() -> list[str]:
        async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as over_socket:
            return sorted([f.id async for f in over_socket.query(redshift == 0.5).fits()])

    assert anyio.run(ask) == ["fit-4", "from-folder"]
