"""PyAutoFit's marginal statistics of samples, computed as PyAutoFit 2026.7.29.1 computes them.

PyAutoFit picks the estimate by the class of its samples, which ``samples_info.json`` names
(``class_path``); lensd reads that name as text and never imports it:

- ``SamplesMCMC`` (Emcee, Zeus): unweighted percentiles of every sample; the interval at sigma is
  the ``1 - erf(sigma/sqrt 2)`` and ``erf(sigma/sqrt 2)`` percentiles (PyAutoFit's choice:
  at 1 sigma, 31.7% and 68.3%).
- every other class (``SamplesNest``, ``SamplesPDF``, the optimisers' ``Samples``, or none): the
  weighted quantile of corner.py (linear interpolation of the weight CDF), at
  ``(1 - erf(sigma/sqrt 2)) / 2`` and its complement; when one sample holds more than 99% of the
  weight (PyAutoFit's "PDF not converged"), the median is the max-likelihood sample and the
  interval spans the last ``UNCONVERGED_SAMPLES`` samples.

PyAutoFit's optimiser ``Samples`` have no ``median_pdf`` at all; lensd gives the weighted form
for them too rather than raise (docs/pyautolens.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

UNCONVERGED_SAMPLES = 100  # PyAutoFit's general.yaml output.unconverged_sample_size


def kind_of(samples_info: Any) -> str:
    """"mcmc" or "pdf", from the class name in ``samples_info["class_path"]``."""
    class_path = samples_info.get("class_path") if isinstance(samples_info, dict) else None
    name = class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) else ""
    return "mcmc" if name == "SamplesMCMC" else "pdf"


def weighted_quantile(x: np.ndarray, q: float, weights: np.ndarray) -> float:
    """corner.py's ``quantile`` with weights, as PyAutoFit's ``pdf.quantile``."""
    return _WeightedColumns(x[:, None], weights).quantiles((q,))[0][0]


class _WeightedColumns:
    """Every column sorted once with its weight CDF, for any number of quantiles.

    A record without a summary needs five quantiles a parameter (the median and the 1σ and 3σ
    bounds). The columns are sorted in one ``argsort`` of the transposed array, their CDFs made in
    one ``cumsum``, and each column's quantiles read in one ``interp``: the same sort, sums and
    interpolation as one column at a time (the same numbers), a third of the numpy calls
    (docs/performance.md, "Daemon ingest at K = 64, third pass").
    """

    def __init__(self, parameters: np.ndarray, weights: np.ndarray) -> None:
        columns = np.ascontiguousarray(parameters.T)
        self.single = columns[:, 0] if columns.shape[1] == 1 else None
        if self.single is None:
            order = np.argsort(columns, axis=1)
            cdf = np.cumsum(weights[order], axis=1)[:, :-1]
            cdf /= cdf[:, -1:]
            self.cdf = np.concatenate((np.zeros((len(columns), 1)), cdf), axis=1)
            rows = np.arange(0, columns.size, columns.shape[1])[:, None]  # the flat index of each row
            self.sorted = np.take(columns, order + rows)  # take_along_axis, in one call

    def quantiles(self, qs: tuple[float, ...]) -> list[list[float]]:
        """For each column, its value at each of ``qs``."""
        if self.single is not None:
            return [[float(value)] * len(qs) for value in self.single]
        return [np.interp(qs, cdf, values).tolist() for cdf, values in zip(self.cdf, self.sorted, strict=True)]


class Marginals:
    """Medians and sigma intervals of ``parameters`` (n samples × k columns)."""

    def __init__(self, parameters: np.ndarray, weight: np.ndarray, kind: str, best: int | None) -> None:
        usable = np.all(np.isfinite(weight)) and np.all(weight >= 0) and weight.sum() > 0
        self.parameters, self.kind, self.best = parameters, kind, best
        self.weight = weight if usable else np.ones_like(weight)  # a stream may carry no weights
        self._sorted: _WeightedColumns | None = None

    def _converged(self) -> bool:
        if self.kind == "mcmc":
            return len(self.parameters) > 0
        return bool(len(self.weight)) and not float(np.max(self.weight)) > 0.99

    def _columns(self) -> list[np.ndarray]:
        return [self.parameters[:, j] for j in range(self.parameters.shape[1])]

    def _weighted(self) -> _WeightedColumns:
        if self._sorted is None:
            self._sorted = _WeightedColumns(self.parameters, self.weight)
        return self._sorted

    @staticmethod
    def _bounds(sigma: float) -> tuple[float, float]:
        low = (1 - math.erf(sigma / math.sqrt(2))) / 2
        return low, 1 - low

    def summary(self, sigmas: list[float]) -> tuple[list[float], dict[float, list[tuple[float, float]]]]:
        """``median()`` and ``at_sigma(sigma)`` for each of ``sigmas``: one ``interp`` a column
        for all of them when the weighted estimate applies."""
        if not len(self.parameters) or self.kind == "mcmc" or not self._converged():
            return self.median(), {sigma: self.at_sigma(sigma) for sigma in sigmas}
        qs = (0.5, *(q for sigma in sigmas for q in self._bounds(sigma)))
        values = self._weighted().quantiles(qs)
        return ([column[0] for column in values],
                {sigma: [(column[1 + 2 * i], column[2 + 2 * i]) for column in values]
                 for i, sigma in enumerate(sigmas)})

    def median(self) -> list[float]:
        if not len(self.parameters):
            return []
        if not self._converged():
            return [] if self.best is None else [float(v) for v in self.parameters[self.best]]
        if self.kind == "mcmc":
            return [float(np.percentile(column, 50)) for column in self._columns()]
        return [column[0] for column in self._weighted().quantiles((0.5,))]

    def at_sigma(self, sigma: float) -> list[tuple[float, float]]:
        """(lower, upper) value of every parameter at ``sigma``."""
        if not len(self.parameters):
            return []
        if not self._converged():
            recent = self.parameters[-UNCONVERGED_SAMPLES:]
            return [(float(lo), float(hi)) for lo, hi in zip(recent.min(axis=0), recent.max(axis=0), strict=True)]
        if self.kind == "mcmc":
            limit = math.erf(0.5 * sigma * math.sqrt(2))
            return [(float(lo), float(hi)) for lo, hi in
                    (np.percentile(column, [100.0 * (1.0 - limit), 100.0 * limit]) for column in self._columns())]
        return [(lo, hi) for lo, hi in self._weighted().quantiles(self._bounds(sigma))]
