"""Samples of a non-linear search: the arrays, and the instances read off them.

Stored and sent as plain arrays (never pickled), so a samples payload is exactly what
``to_wire`` returns. Samples that arrived in that form keep the bytes they came as (``packed``),
which are then stored as they are instead of being packed again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensd.domain import modeltree
from lensd.domain.instance import Instance
from lensd.errors import InvalidRecord
from lensd.wire import codec

_COLUMNS = ("log_likelihood", "log_prior", "weight")
_ARRAYS = ("parameters", *_COLUMNS)


@dataclass(frozen=True)
class Sample:
    """One sample: its parameter values by path, and its likelihood, prior and weight."""

    kwargs: dict[str, float]
    log_likelihood: float
    log_prior: float
    weight: float


class Samples:
    """Parameter paths, an (n, k) float array, and per-sample log likelihood, log prior and weight."""

    __slots__ = ("log_likelihood", "log_prior", "model", "packed", "parameters", "paths", "weight")

    def __init__(
        self,
        paths: Sequence[str],
        parameters: Any,
        log_likelihood: Any,
        log_prior: Any = None,
        weight: Any = None,
        model: Mapping[str, Any] | None = None,
    ) -> None:
        self.paths: list[str] = list(paths)
        self.parameters: np.ndarray = np.asarray(parameters, dtype=np.float64)
        n = self.parameters.shape[0] if self.parameters.ndim else 0
        if self.parameters.ndim == 1 and n == 0:
            self.parameters = self.parameters.reshape(0, len(self.paths))
        self.log_likelihood: np.ndarray = np.asarray(log_likelihood, dtype=np.float64)
        self.log_prior: np.ndarray = (np.zeros(n) if log_prior is None
                                      else np.asarray(log_prior, dtype=np.float64))
        self.weight: np.ndarray = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
        self.model = model
        self.packed: bytes | None = None  # ``codec.pack(self.to_wire())``, when it arrived so
        self._check()

    def _check(self) -> None:
        if not all(isinstance(p, str) and p for p in self.paths):
            raise InvalidRecord("samples.paths must be non-empty strings")
        if len(set(self.paths)) != len(self.paths):
            raise InvalidRecord("samples.paths has duplicates")
        if self.parameters.ndim != 2 or self.parameters.shape[1] != len(self.paths):
            raise InvalidRecord(
                f"samples.parameters must be (n, {len(self.paths)}), got shape {self.parameters.shape}"
            )
        n = self.parameters.shape[0]
        for name in _COLUMNS:
            column = getattr(self, name)
            if column.shape != (n,):
                raise InvalidRecord(f"samples.{name} must have shape ({n},), got {column.shape}")

    @classmethod
    def from_wire(cls, data: Any, model: Mapping[str, Any] | None = None) -> Samples:
        """Validate an untrusted ``{"paths", "parameters", "log_likelihood", ...}`` mapping."""
        if isinstance(data, Samples):
            copy = cls(data.paths, data.parameters, data.log_likelihood, data.log_prior, data.weight,
                       model if model is not None else data.model)
            copy.packed = data.packed
            return copy
        if not isinstance(data, Mapping):
            raise InvalidRecord("samples must be a mapping with paths, parameters and log_likelihood")
        unknown = set(data) - {"paths", "parameters", *_COLUMNS}
        if unknown:
            raise InvalidRecord(f"samples has unknown keys: {sorted(map(str, unknown))}")
        if "paths" not in data or "parameters" not in data or "log_likelihood" not in data:
            raise InvalidRecord("samples needs paths, parameters and log_likelihood")
        paths = data["paths"]
        if not isinstance(paths, (list, tuple)):
            raise InvalidRecord("samples.paths must be a list of strings")
        try:
            samples = cls(paths, data["parameters"], data["log_likelihood"], data.get("log_prior"),
                          data.get("weight"), model)
        except (TypeError, ValueError) as exc:
            raise InvalidRecord(f"samples arrays are not numeric: {exc}") from None
        if (isinstance(data, codec.Received) and len(data) == len(_ARRAYS) + 1 and isinstance(paths, list)
                and all(getattr(samples, name) is data.get(name) for name in _ARRAYS)):
            samples.packed = data.packed  # every array kept as it came (float64): the bytes are to_wire's
        return samples

    def to_wire(self) -> dict[str, Any]:
        return {"paths": self.paths, "parameters": self.parameters,
                "log_likelihood": self.log_likelihood, "log_prior": self.log_prior, "weight": self.weight}

    def __len__(self) -> int:
        return int(self.parameters.shape[0])

    def __repr__(self) -> str:
        return f"Samples({len(self)} samples × {len(self.paths)} parameters)"

    def _repr_html_(self) -> str:
        """For Jupyter: one column per parameter, the max-likelihood and median-PDF values."""
        from html import escape

        def cells(values: Mapping[str, Any]) -> str:
            return "".join(f"<td>{escape(format(values[p], '.6g') if p in values else '')}</td>"
                           for p in self.paths)

        best = self.max_log_likelihood_sample
        head = "".join(f"<th>{escape(p)}</th>" for p in self.paths)
        rows = [f"<tr><th>max likelihood</th>{cells(best.kwargs)}</tr>"] if best is not None else []
        rows += [f"<tr><th>median</th>{cells(self.median_pdf_values())}</tr>"] if len(self) else []
        return (f"<p>{len(self)} samples × {len(self.paths)} parameters; "
                f"max log likelihood {escape(str(self.max_log_likelihood))}</p>"
                f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    @property
    def max_log_likelihood(self) -> float | None:
        i = self._best_index()
        return None if i is None else float(self.log_likelihood[i])

    def _best_index(self) -> int | None:
        if not len(self):
            return None
        best = int(np.argmax(self.log_likelihood))  # one pass; it stops at the first NaN, if any
        if not np.isnan(self.log_likelihood[best]):
            return best
        if np.all(np.isnan(self.log_likelihood)):
            return None
        return int(np.nanargmax(self.log_likelihood))

    @property
    def max_log_likelihood_sample(self) -> Sample | None:
        i = self._best_index()
        if i is None:
            return None
        return Sample(dict(zip(self.paths, map(float, self.parameters[i]), strict=True)),
                      float(self.log_likelihood[i]), float(self.log_prior[i]), float(self.weight[i]))

    def max_log_likelihood_values(self) -> dict[str, Any]:
        """Path → value of the best sample, with the model's constants filled in."""
        sample = self.max_log_likelihood_sample
        if sample is None:
            return {}
        return {**modeltree.constants(self.model or {}), **sample.kwargs}

    def median_pdf_values(self) -> dict[str, Any]:
        """Path → weighted median of each parameter, with the model's constants filled in."""
        if not len(self):
            return {}
        weight = np.clip(np.nan_to_num(self.weight), 0.0, None)
        if weight.sum() <= 0:
            weight = np.ones_like(weight)
        medians = {}
        for j, path in enumerate(self.paths):
            column = self.parameters[:, j]
            order = np.argsort(column, kind="stable")
            cumulative = np.cumsum(weight[order])
            k = int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))
            medians[path] = float(column[order[min(k, len(order) - 1)]])
        return {**modeltree.constants(self.model or {}), **medians}

    def _instance(self, values: dict[str, Any]) -> Instance | None:
        """``values`` as an instance of the model; None when there are none (no samples)."""
        return Instance.from_flat(values, modeltree.class_nodes(self.model or {})) if values else None

    @property
    def max_log_likelihood_instance(self) -> Instance | None:
        return self._instance(self.max_log_likelihood_values())

    @property
    def median_pdf_instance(self) -> Instance | None:
        return self._instance(self.median_pdf_values())
