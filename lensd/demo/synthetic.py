"""Synthetic fits in PyAutoFit's output-folder format, for the demo and the benchmarks.

The layout and file formats follow real PyAutoFit output (tests/fixtures/autofit): ``metadata``,
``.completed``, ``files/{model,search,info,samples_info,samples_summary}.json`` and a space-padded
``files/samples.csv``. The model is a lens-like collection, so the seed queries of SPEC §4
(``galaxies.lens.mass == Isothermal``, ``einstein_radius > 1.0``) have answers. PyAutoFit itself can
read the folders (bench/ compares with it): samples_info.json names its samples class, and each
fit's search settings differ (``n_live``), because PyAutoFit recomputes a fit's identity from its
search and model and would take fits that share both for one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

MASS_CLASSES = ("lensmodels.Isothermal", "lensmodels.PowerLaw")
FREE_PATHS = ("galaxies.lens.mass.centre.centre_0", "galaxies.lens.mass.centre.centre_1",
              "galaxies.lens.mass.einstein_radius", "galaxies.source.bulge.intensity")


def _uniform(lo: float, hi: float, prior_id: int) -> dict[str, Any]:
    return {"type": "Uniform", "id": prior_id, "lower_limit": lo, "upper_limit": hi}


def lens_model(mass_class: str) -> dict[str, Any]:
    """A model.json tree: lens galaxy (mass profile, fixed redshift) and a source bulge."""
    return {"type": "collection", "arguments": {"galaxies": {"type": "collection", "arguments": {
        "lens": {"class_path": "lensmodels.Galaxy", "type": "model", "arguments": {
            "redshift": {"type": "Constant", "value": 0.5},
            "mass": {"class_path": mass_class, "type": "model", "arguments": {
                "centre": {"type": "tuple_prior", "arguments": {
                    "centre_0": _uniform(-0.5, 0.5, 0), "centre_1": _uniform(-0.5, 0.5, 1)}},
                "einstein_radius": _uniform(0.2, 2.5, 2)}}}},
        "source": {"class_path": "lensmodels.Galaxy", "type": "model", "arguments": {
            "redshift": {"type": "Constant", "value": 1.0},
            "bulge": {"class_path": "lensmodels.Sersic", "type": "model", "arguments": {
                "intensity": _uniform(0.0, 5.0, 3)}}}}}}}}


def _csv(columns: list[str], rows: np.ndarray) -> str:
    """samples.csv as PyAutoFit writes it: comma separated, values right-aligned with spaces."""
    width = [max(len(c), 22) for c in columns]
    lines = [",".join(c.rjust(w) for c, w in zip(columns, width, strict=True))]
    lines += [",".join(repr(float(v)).rjust(w) for v, w in zip(row, width, strict=True)) for row in rows]
    return "\n".join(lines) + "\n"


def write_fit(root: Path, index: int, n_samples: int = 200, seed: int = 0, completed: bool = True) -> Path:
    """Write fit number ``index`` under ``root``; returns its folder."""
    rng = np.random.default_rng([seed, index])
    unique_tag = f"lens_{index % 10}"
    mass_class = MASS_CLASSES[index % 2]
    identifier = hashlib.md5(f"{seed}-{index}".encode()).hexdigest()
    folder = root / "survey" / unique_tag / "nautilus" / identifier
    (folder / "files").mkdir(parents=True, exist_ok=True)
    truth = np.array([rng.normal(0, 0.1), rng.normal(0, 0.1), rng.uniform(0.4, 2.0), rng.uniform(0.5, 3)])
    parameters = truth + rng.normal(0, 0.05, (n_samples, len(FREE_PATHS)))
    log_likelihood = -0.5 * np.sum(((parameters - truth) / 0.05) ** 2, axis=1) + 100.0
    log_prior = np.full(n_samples, -1.5)
    weight = np.full(n_samples, 1.0 / n_samples)
    table = np.column_stack([parameters, log_likelihood, log_prior, log_likelihood + log_prior, weight])
    columns = [*FREE_PATHS, "log_likelihood", "log_prior", "log_posterior", "weight"]
    best = int(np.argmax(log_likelihood))
    median = {p: float(np.median(parameters[:, j])) for j, p in enumerate(FREE_PATHS)}
    log_evidence = float(np.max(log_likelihood) - 5.0)
    summary = {"type": "instance", "class_path": "autofit.non_linear.samples.summary.SamplesSummary",
               "arguments": {
                   "log_evidence": log_evidence,
                   "max_log_likelihood_sample": _sample(parameters[best], log_likelihood[best]),
                   "median_pdf_sample": _sample(np.array(list(median.values())), float("nan")),
               }}
    search = {"type": "instance", "class_path": "autofit.non_linear.search.nest.nautilus.search.Nautilus",
              "arguments": {"name": "nautilus", "unique_tag": unique_tag, "n_live": 100 + index,
                            "path_prefix": {"type": "path", "path": "survey"}}}
    info = {"survey": "SLACS" if index % 3 == 0 else "BELLS", "redshift_lens": round(0.2 + 0.01 * index, 3),
            "index": index}
    files = {"model.json": lens_model(mass_class), "search.json": search, "info.json": info,
             "samples_summary.json": summary, "samples_info.json": {
                 "log_evidence": log_evidence, "total_samples": n_samples,
                 "number_live_points": 100 + index, "total_iterations": n_samples,
                 "class_path": "autofit.non_linear.samples.nest.SamplesNest"}}
    for name, content in files.items():
        (folder / "files" / name).write_text(json.dumps(content, indent=4))
    (folder / "files" / "samples.csv").write_text(_csv(columns, table))
    (folder / "metadata").write_text("name=nautilus\nnon_linear_search=nautilus\n")
    if completed:
        (folder / ".completed").write_text("")
    return folder


def _sample(values: np.ndarray, log_likelihood: float) -> dict[str, Any]:
    kwargs = {p: float(v) for p, v in zip(FREE_PATHS, values, strict=True)}
    return {"type": "instance", "class_path": "autofit.non_linear.samples.sample.Sample",
            "arguments": {"log_likelihood": log_likelihood, "log_prior": -1.5, "weight": 1.0,
                          "kwargs": {"type": "dict", "arguments": kwargs}}}


def write_fits(root: Path, count: int, n_samples: int = 200, seed: int = 0, start: int = 0) -> list[Path]:
    return [write_fit(root, i, n_samples, seed) for i in range(start, start + count)]


def record(index: int, n_samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The same fit as a streamed record (for clients and benchmarks)."""
    rng = np.random.default_rng([seed, index, 1])
    parameters = rng.normal(1.0, 0.1, (n_samples, len(FREE_PATHS)))
    return {"id": f"stream-{seed}-{index}", "name": "nautilus", "path_prefix": "survey",
            "unique_tag": f"lens_{index % 10}", "model": lens_model(MASS_CLASSES[index % 2]),
            "search": {"type": "instance", "class_path": "autofit.Nautilus", "arguments": {}},
            "info": {"survey": "SLACS" if index % 3 == 0 else "BELLS", "index": index},
            "status": "completed",
            "samples": {"paths": list(FREE_PATHS), "parameters": parameters,
                        "log_likelihood": rng.normal(-50, 3, n_samples), "log_prior": np.zeros(n_samples),
                        "weight": np.full(n_samples, 1.0 / n_samples)}}
