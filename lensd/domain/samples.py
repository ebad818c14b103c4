"""Samples of a non-linear search: the arrays, the instances read off them, PyAutoFit's API.

Stored and sent as plain arrays (never pickled), so a samples payload is exactly what
``to_wire`` returns. Samples that arrived in that form keep the bytes they came as (``packed``),
which are then stored as they are instead of being packed again.

Two column orders exist and both are explicit: ``paths``/``parameters`` follow the stored columns
(samples.csv's header, prior-id order), ``model_paths`` is PyAutoFit's ``model.paths`` order
(model.json's order, as PyAutoFit rebuilds the model). PyAutoFit's names
(``parameter_lists``, ``max_log_likelihood(as_instance=False)``, ``median_pdf``, ``values_at_sigma``,
``errors_at_*``, ``from_sample_index``) use PyAutoFit's order and its statistics (lensd.domain.pdf).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensd.domain import modeltree
from lensd.domain.instance import Instance
from lensd.domain.pdf import Marginals, kind_of
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

    __slots__ = ("_best", "_constants", "_order", "log_likelihood", "log_prior", "model", "packed", "parameters",
                 "paths", "samples_info", "weight")

    def __init__(
        self,
        paths: Sequence[str],
        parameters: Any,
        log_likelihood: Any,
        log_prior: Any = None,
        weight: Any = None,
        model: Mapping[str, Any] | None = None,
        samples_info: Mapping[str, Any] | None = None,
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
        self.samples_info: dict[str, Any] = dict(samples_info or {})
        self.packed: bytes | None = None  # ``codec.pack(self.to_wire())``, when it arrived so
        self._check()
        self._order: list[int] | None = None
        self._constants: tuple[Any, dict[str, Any]] | None = None  # (the model they are of, its constants)
        self._best: tuple[np.ndarray, int | None] | None = None  # (the log likelihoods searched, the best)

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
    def from_wire(cls, data: Any, model: Mapping[str, Any] | None = None,
                  samples_info: Mapping[str, Any] | None = None) -> Samples:
        """Validate an untrusted ``{"paths", "parameters", "log_likelihood", ...}`` mapping.

        ``samples_info`` is PyAutoFit's samples_info.json (it names the kind of samples and holds
        the evidence); it is not part of the wire form.
        """
        if samples_info is not None and not isinstance(samples_info, Mapping):
            samples_info = None
        if isinstance(data, Samples):
            copy = cls(data.paths, data.parameters, data.log_likelihood, data.log_prior, data.weight,
                       model if model is not None else data.model,
                       samples_info if samples_info is not None else data.samples_info)
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
                          data.get("weight"), model, samples_info)
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
        best_ll = None if best is None else best.log_likelihood
        return (f"<p>{len(self)} samples × {len(self.paths)} parameters; "
                f"max log likelihood {escape(str(best_ll))}</p>"
                f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    def _best_index(self) -> int | None:
        """The max-likelihood sample's index, remembered for the array it was found in: validating
        a record asks for it three times (its instance, its max log L, its marginals)."""
        if self._best is None or self._best[0] is not self.log_likelihood:
            self._best = (self.log_likelihood, self._find_best())
        return self._best[1]

    def _find_best(self) -> int | None:
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
        return {**self._model_constants(), **sample.kwargs}

    def median_pdf_values(self) -> dict[str, Any]:
        """Path → median of each parameter's marginal PDF (PyAutoFit's estimate, lensd.domain.pdf),
        with the model's constants filled in."""
        if not len(self):
            return {}
        return self._values(self._marginals().median())

    def summary_values(self, sigmas: Sequence[float]) -> tuple[dict[str, Any], dict[float, dict[str, Any]]]:
        """``median_pdf_values()``, and ``values_at_sigma(sigma, as_instance=False, as_dict=True)``
        for each sigma: one set of marginals, each column sorted once for all of them."""
        if not len(self):
            return {}, {sigma: {} for sigma in sigmas}
        median, at_sigma = self._marginals().summary(list(sigmas))
        paths = self.model_paths
        return (self._values(median),
                {sigma: dict(zip(paths, bounds, strict=True)) for sigma, bounds in at_sigma.items()})

    def _instance(self, values: dict[str, Any]) -> Instance | None:
        """``values`` as an instance of the model; None when there are none (no samples)."""
        return Instance.from_flat(values, modeltree.class_nodes(self.model or {})) if values else None

    @property
    def max_log_likelihood_instance(self) -> Instance | None:
        return self._instance(self.max_log_likelihood_values())

    @property
    def median_pdf_instance(self) -> Instance | None:
        return self._instance(self.median_pdf_values())

    # -- PyAutoFit's Samples API: the same names and arguments, PyAutoFit's column order ---------

    @property
    def model_paths(self) -> list[str]:
        """PyAutoFit's ``model.paths`` as dotted strings: the order of ``parameter_lists`` and of
        every vector below. It is model.json's order of free parameters when they are exactly the
        stored columns, else the stored order (``paths``)."""
        return [self.paths[j] for j in self._model_order()]

    def _model_order(self) -> list[int]:
        if self._order is None:
            wanted = modeltree.prior_paths(self.model or {})
            index = {path: j for j, path in enumerate(self.paths)}
            self._order = ([index[path] for path in wanted] if sorted(wanted) == sorted(self.paths)
                           else list(range(len(self.paths))))
        return self._order

    def _in_model_order(self) -> np.ndarray:
        return self.parameters[:, self._model_order()]

    def _values(self, vector: Sequence[Any]) -> dict[str, Any]:
        return {**self._model_constants(), **dict(zip(self.model_paths, vector, strict=True))}

    def _model_constants(self) -> dict[str, Any]:
        """``modeltree.constants`` of the model, walked once per model."""
        if self._constants is None or self._constants[0] is not self.model:
            self._constants = (self.model, modeltree.constants(self.model or {}))
        return self._constants[1]

    def _shaped(self, vector: list[Any], as_instance: bool, as_dict: bool) -> Any:
        """What PyAutoFit's ``to_instance`` gives: a dict by path, an instance, or the vector."""
        if as_dict:
            return dict(zip(self.model_paths, vector, strict=True))
        if as_instance:
            return self._instance(self._values(vector))
        return vector

    def _marginals(self) -> Marginals:
        return Marginals(self._in_model_order(), self.weight, kind_of(self.samples_info), self._best_index())

    @property
    def parameter_lists(self) -> list[list[float]]:
        """Every sample's free parameters, in ``model_paths`` order."""
        return self._in_model_order().tolist()  # type: ignore[no-any-return]

    @property
    def log_likelihood_list(self) -> list[float]:
        return self.log_likelihood.tolist()  # type: ignore[no-any-return]

    @property
    def log_prior_list(self) -> list[float]:
        return self.log_prior.tolist()  # type: ignore[no-any-return]

    @property
    def log_posterior_list(self) -> list[float]:
        return (self.log_likelihood + self.log_prior).tolist()  # type: ignore[no-any-return]

    @property
    def weight_list(self) -> list[float]:
        return self.weight.tolist()  # type: ignore[no-any-return]

    @property
    def total_samples(self) -> int:
        return len(self)

    @property
    def max_log_likelihood_index(self) -> int:
        """PyAutoFit's: the first sample when every likelihood is NaN."""
        best = self._best_index()
        return 0 if best is None else best

    @property
    def log_evidence(self) -> float | None:
        """The evidence nested samplers record in samples_info.json (None for MCMC, optimisers)."""
        value = self.samples_info.get("log_evidence") if kind_of(self.samples_info) == "pdf" else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def max_log_likelihood(self, as_instance: bool = True, as_dict: bool = False) -> Any:
        """The best sample: an instance (PyAutoFit's default), ``as_instance=False`` a list in
        ``model_paths`` order, ``as_dict=True`` path → value. None without samples."""
        if not len(self):
            return None
        return self._shaped(self._in_model_order()[self.max_log_likelihood_index].tolist(), as_instance, as_dict)

    def from_sample_index(self, sample_index: int, as_instance: bool = True, as_dict: bool = False) -> Any:
        return self._shaped(self._in_model_order()[sample_index].tolist(), as_instance, as_dict)

    def median_pdf(self, as_instance: bool = True, as_dict: bool = False) -> Any:
        if not len(self):
            return None
        return self._shaped(self._marginals().median(), as_instance, as_dict)

    def values_at_sigma(self, sigma: float, as_instance: bool = True, as_dict: bool = False) -> Any:
        """(lower, upper) value of every parameter at ``sigma``."""
        if not len(self):
            return None
        return self._shaped(self._marginals().at_sigma(sigma), as_instance, as_dict)

    def values_at_upper_sigma(self, sigma: float, as_instance: bool = True, as_dict: bool = False) -> Any:
        if not len(self):
            return None
        return self._shaped([hi for _, hi in self._marginals().at_sigma(sigma)], as_instance, as_dict)

    def values_at_lower_sigma(self, sigma: float, as_instance: bool = True, as_dict: bool = False) -> Any:
        if not len(self):
            return None
        return self._shaped([lo for lo, _ in self._marginals().at_sigma(sigma)], as_instance, as_dict)

    def errors_at_sigma(self, sigma: float, as_instance: bool = True, as_dict: bool = False) -> Any:
        """(lower error, upper error): the median minus the lower value, the upper value minus it."""
        if not len(self):
            return None
        marginals = self._marginals()
        errors = [(median - lo, hi - median)
                  for median, (lo, hi) in zip(marginals.median(), marginals.at_sigma(sigma), strict=True)]
        return self._shaped(errors, as_instance, as_dict)

    def errors_at_upper_sigma(self, sigma: float, as_instance: bool = True, as_dict: bool = False) -> Any:
        errors = self.errors_at_sigma(sigma, as_instance=False)
        return None if errors is None else self._shaped([hi for _, hi in errors], as_instance, as_dict)

    def errors_at_lower_sigma(self, sigma: float, as_instance: bool = True, as_dict: bool = False) -> Any:
        errors = self.errors_at_sigma(sigma, as_instance=False)
        return None if errors is None else self._shaped([lo for lo, _ in errors], as_instance, as_dict)

    def draw_randomly_via_pdf(self, as_instance: bool = True, as_dict: bool = False,
                              rng: np.random.Generator | None = None) -> Any:
        """One sample drawn with probability ``weight`` (normalised), as PyAutoFit draws it."""
        if not len(self):
            return None
        weight = np.clip(np.nan_to_num(self.weight), 0.0, None)
        p = weight / weight.sum() if weight.sum() > 0 else None
        index = int((rng or np.random.default_rng()).choice(len(self), p=p))
        return self.from_sample_index(index, as_instance, as_dict)
