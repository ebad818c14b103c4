"""Synthetic fit records for tests: a lens-like model with a few parameters and real samples."""

from __future__ import annotations

from typing import Any

import numpy as np

PATHS = ["galaxies.lens.mass.einstein_radius", "galaxies.lens.mass.centre.centre_0",
         "galaxies.lens.mass.centre.centre_1"]


def lens_model(mass_class: str = "lensmodels.Isothermal") -> dict[str, Any]:
    def uniform(lo: float, hi: float) -> dict[str, Any]:
        return {"type": "Uniform", "lower_limit": lo, "upper_limit": hi}

    return {"type": "collection", "arguments": {"galaxies": {"type": "collection", "arguments": {
        "lens": {"type": "model", "class_path": "lensmodels.Galaxy", "arguments": {
            "redshift": {"type": "Constant", "value": 0.5},
            "mass": {"type": "model", "class_path": mass_class, "arguments": {
                "einstein_radius": uniform(0.0, 3.0),
                "centre": {"type": "tuple_prior", "arguments": {"centre_0": uniform(-1, 1),
                                                                "centre_1": uniform(-1, 1)}}}}}}}}}}


def record(i: int, n_samples: int = 100, status: str = "completed", **overrides: Any) -> dict[str, Any]:
    rng = np.random.default_rng(i)
    parameters = rng.uniform(0, 2.5, (n_samples, len(PATHS)))
    data: dict[str, Any] = {
        "id": f"fit-{i}", "name": "emcee", "path_prefix": "survey", "unique_tag": f"lens_{i % 7}",
        "model": lens_model("lensmodels.Isothermal" if i % 2 == 0 else "lensmodels.PowerLaw"),
        "search": {"type": "instance", "class_path": "autofit.Emcee", "arguments": {"nwalkers": 10}},
        "info": {"index": i, "survey": "SLACS" if i % 3 == 0 else "BELLS"}, "status": status,
        "samples": {"paths": PATHS, "parameters": parameters,
                    "log_likelihood": rng.normal(-50, 3, n_samples), "log_prior": np.zeros(n_samples),
                    "weight": np.ones(n_samples)},
    }
    data.update(overrides)
    return data
