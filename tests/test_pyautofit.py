"""PyAutoFit folders -> records, checked against what PyAutoFit itself reported for the fixtures.

Every test reads copies in tmp dirs (the fixture tree is read-only and shared); broken inputs are
real broken files, never mocks.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lensd.domain import modeltree
from lensd.ingest import folders
from lensd.ingest.pyautofit import FolderFailure, discover, folder_signature, read_fit, scan

FIXTURES = Path(__file__).parent / "fixtures" / "autofit"
RECORDS_DIR = json.loads((FIXTURES / "records_dir.json").read_text())
RECORDS_SENS = json.loads((FIXTURES / "records_sensitivity.json").read_text())
GRID_ID = "16c3d8ea4dec9730661e67d78d550ca4"
SENS_ID = "cf1a790e4f8c55b63e9df280260273f9"
SENS_ROOT = f"howtofit/sensitivity/sens_dataset_a/subhalo__sensitivity/{SENS_ID}"
LBFGS = "howtofit/single/gaussian_a/lbfgs"
LBFGS_ID = "856b09f9a4536bb11f98393cdabe9696"
KEYS = {"id", "name", "path_prefix", "unique_tag", "search", "model", "info", "status", "samples",
        "summary", "parent_id", "is_grid_search", "files", "max_log_likelihood", "log_evidence",
        "completed_at", "source", "source_sig"}
FITS = [r for r in RECORDS_DIR if "cells" not in r]
GRID = next(r for r in RECORDS_DIR if "cells" in r)


def copy(src: Path, dst: Path, ignore: Any = None) -> Path:
    """A writable copy (the fixture files are read-only, and some tests break them)."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile, ignore=ignore)
    for folder, _, _ in os.walk(dst):
        os.chmod(folder, 0o755)
    return dst


def split(results: list[Any]) -> tuple[dict[str, dict[str, Any]], list[FolderFailure]]:
    records = {r["id"]: r for r in results if isinstance(r, dict)}
    assert len(records) == len([r for r in results if isinstance(r, dict)]), "an id came twice"
    return records, [r for r in results if isinstance(r, FolderFailure)]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("autofit")
    copy(FIXTURES / "dir_output", base / "dir_output")
    copy(FIXTURES / "sensitivity_output", base / "sensitivity_output")
    return base


@pytest.fixture(scope="module")
def records(outputs: Path) -> dict[str, dict[str, Any]]:
    found, failures = split(list(scan([outputs / "dir_output", outputs / "sensitivity_output"])))
    assert failures == []
    return found


def is_object_id(key: str) -> bool:
    return key == "id" or key.endswith(".id")


def best_sample(record: dict[str, Any]) -> dict[str, float]:
    samples = record["samples"]
    row = samples["parameters"][int(np.nanargmax(samples["log_likelihood"]))]  # LBFGS logs NaN steps
    return dict(zip(samples["paths"], map(float, row), strict=True))


def test_every_record_has_exactly_the_record_keys(records: dict[str, dict[str, Any]]) -> None:
    assert len(records) == len(FITS) + 1 + 2 + 1 + 8  # fits, grid root + cells, sensitivity root + fits
    for record in records.values():
        assert set(record) == KEYS


@pytest.mark.parametrize("expected", FITS, ids=[r["key"] for r in FITS])
def test_fit_matches_what_pyautofit_reported(records: dict[str, dict[str, Any]],
                                             expected: dict[str, Any]) -> None:
    record = records[expected["identifier"]]
    assert (record["unique_tag"], record["path_prefix"]) == (expected["unique_tag"], expected["path_prefix"])
    assert (record["name"], record["info"]) == (expected["search_name"], expected["info"])
    assert (record["status"], record["parent_id"], record["is_grid_search"]) == ("completed", None, False)
    assert math.isclose(record["max_log_likelihood"], expected["max_log_likelihood"], rel_tol=1e-9)
    values, constants = best_sample(record), modeltree.constants(record["model"])
    assert len(record["samples"]["paths"]) == expected["free_parameters"]
    for path, value in expected["max_log_likelihood_instance"].items():
        if not is_object_id(path):
            assert math.isclose(values[path] if path in values else constants[path], value, rel_tol=1e-9)
    # Nested samplers' samples.csv keeps fewer rows than PyAutoFit's in-memory samples (which it
    # reloads from search_internal pickles); samples_info.json has the count it reported.
    info = record["files"]["samples_info"]
    assert expected["n_samples"] == info.get("total_accepted_samples", len(record["samples"]["weight"]))


def test_fixed_parameter_is_a_model_constant_not_a_sample_column(records: dict[str, dict[str, Any]]) -> None:
    record = records["f0b311686c9bcdb3d1716961a4d1ac7f"]
    assert "gaussian.sigma" not in record["samples"]["paths"]
    assert modeltree.constants(record["model"]) == {"gaussian.sigma": 10.0}


def test_grid_root_and_its_cells(records: dict[str, dict[str, Any]]) -> None:
    root = records[GRID_ID]
    assert root["is_grid_search"] and root["status"] == "completed" and root["parent_id"] is None
    assert (root["name"], root["unique_tag"]) == ("grid_lbfgs", "gauss_exp_c")
    assert root["path_prefix"] == "howtofit/grid"
    assert root["info"] == GRID["info"] and root["samples"] is None and root["model"] is None
    assert root["files"]["results"]["index"] == [0.0, 1.0]
    assert root["files"]["result"]["class_path"].endswith("GridSearchResult")
    assert math.isclose(root["max_log_likelihood"], GRID["max_log_likelihood"], rel_tol=1e-9)
    for cell in GRID["cells"]:
        lower = cell["gaussian_centre_lower"]
        record = records[f"{GRID_ID}/gaussian_centre_{lower:.2f}_{lower + 50:.2f}"]
        assert record["parent_id"] == GRID_ID and record["unique_tag"] == "gauss_exp_c"
        assert math.isclose(record["max_log_likelihood"], cell["max_log_likelihood"], rel_tol=1e-9)


def test_sensitivity_identity_and_parentage_come_from_nesting(records: dict[str, dict[str, Any]]) -> None:
    root = records[SENS_ID]
    assert root["is_grid_search"] and root["status"] == "completed"  # no .completed, but result.json
    assert (root["unique_tag"], root["name"]) == ("sens_dataset_a", "subhalo__sensitivity")
    results = root["files"]["results"]
    assert list(results) == RECORDS_SENS["sensitivity"]["results_csv_header"]
    assert [list(row) for row in zip(*results.values(), strict=True)] == \
        RECORDS_SENS["sensitivity"]["results_csv_rows"]
    for cell in RECORDS_SENS["cells"]:
        for kind in ("base", "perturb"):
            record = records[f"{SENS_ID}/{cell['label']}/[{kind}]"]
            assert record["parent_id"] == SENS_ID  # not .parent_identifier (md5 of "")
            assert record["unique_tag"] == "sens_dataset_a" and record["status"] == "completed"
            expected = cell[f"{kind}_max_log_likelihood"]
            assert math.isclose(record["max_log_likelihood"], expected, rel_tol=1e-9)


def test_a_cell_read_alone_keeps_the_id_it_has_in_a_scan(outputs: Path,
                                                          records: dict[str, dict[str, Any]]) -> None:
    cell = outputs / "sensitivity_output" / SENS_ROOT / "centre_0_1.0_einstein_radius_0.3" / "[base]"
    record = read_fit(cell)
    assert record["id"] == f"{SENS_ID}/centre_0_1.0_einstein_radius_0.3/[base]"
    assert record["source_sig"] == records[record["id"]]["source_sig"] == folder_signature(cell)


def test_discover_skips_output_subfolders_and_zips_beside_their_folders(outputs: Path) -> None:
    found = list(discover(outputs / "dir_output"))
    assert len(found) == len(FITS) + 3
    assert not any(p.suffix == ".zip" or {"image", "files"} & set(p.parts) for p in found)
    grid = next(p for p in found if p.name == GRID_ID)
    assert found.index(grid) < min(found.index(p) for p in found if p.parent == grid)


def same_record(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in KEYS - {"source", "source_sig", "completed_at", "samples", "files"}:
        assert a[key] == b[key], key
    for key in a["samples"]:
        np.testing.assert_array_equal(a["samples"][key], b["samples"][key])
    assert a["files"].keys() == b["files"].keys()


def test_zip_only_fit_reads_like_its_folder(tmp_path: Path) -> None:
    fit = copy(FIXTURES / "dir_output" / LBFGS, tmp_path / LBFGS)
    from_folder = split(list(scan([tmp_path])))[0][LBFGS_ID]
    shutil.rmtree(fit / LBFGS_ID)
    records, failures = split(list(scan([tmp_path])))
    assert failures == [] and list(records) == [LBFGS_ID]
    from_zip = records[LBFGS_ID]
    same_record(from_folder, from_zip)
    assert from_zip["source"] == str(fit / f"{LBFGS_ID}.zip") and from_zip["status"] == "completed"


def test_zip_only_sensitivity_fit_keeps_its_nested_id(tmp_path: Path) -> None:
    def one_cell(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n.startswith("centre_0_") and n != "centre_0_1.0_einstein_radius_0.1"]

    root = copy(FIXTURES / "sensitivity_output" / SENS_ROOT, tmp_path / SENS_ID, ignore=one_cell)
    shutil.rmtree(root / "centre_0_1.0_einstein_radius_0.1" / "[base]")
    records, failures = split(list(scan([tmp_path])))
    assert failures == []
    base = records[f"{SENS_ID}/centre_0_1.0_einstein_radius_0.1/[base]"]
    assert base["parent_id"] == SENS_ID and base["source"].endswith("[base].zip")
    assert math.isclose(base["max_log_likelihood"], RECORDS_SENS["cells"][2]["base_max_log_likelihood"])
    assert len(records) == 3


def test_fit_without_completed_is_running(tmp_path: Path) -> None:
    fit = copy(FIXTURES / "dir_output" / LBFGS / LBFGS_ID, tmp_path / LBFGS_ID)
    (fit / ".completed").unlink()
    record = read_fit(fit)
    assert (record["status"], record["completed_at"]) == ("running", None)


def break_file(fit: Path, name: str, content: bytes | None) -> None:
    target = fit / name
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)


BROKEN = {
    "bad_json": ("files/model.json", b'{\n  "type": "collection",\n  "arguments": {,\n}',
                 "files/model.json: invalid JSON at line 3"),
    "no_model": ("files/model.json", None, "files/model.json: missing"),
    "ragged_csv": ("files/samples.csv", b"a,log_likelihood,log_prior,log_posterior,weight\n1,2,3,4,5\n1,2\n",
                   "files/samples.csv: the number of columns changed"),
    "cut_csv": ("files/samples.csv", b"a,log_likelihood,log_prior,log_posterior,weight\n1,2,3,4,5\n1,2,3,4,5",
                "files/samples.csv: truncated"),
    "text_csv": ("files/samples.csv", b"a,log_likelihood,log_prior,log_posterior,weight\n1,2,x,4,5\n",
                 "files/samples.csv: could not convert string 'x'"),
    "bad_info": ("files/info.json", b"\xff\xfe\x00garbage", "files/info.json"),
}


def test_broken_folders_fail_alone_with_a_reason(tmp_path: Path) -> None:
    good = copy(FIXTURES / "dir_output" / LBFGS / LBFGS_ID, tmp_path / "good" / LBFGS_ID)
    for case, (name, content, _) in BROKEN.items():
        break_file(copy(good, tmp_path / case / LBFGS_ID), name, content)
    unreadable = copy(good, tmp_path / "unreadable" / LBFGS_ID)
    (unreadable / "files" / "search.json").unlink()
    (unreadable / "files" / "search.json").mkdir()  # unreadable even for root
    (tmp_path / "not_a_zip").mkdir()
    (tmp_path / "not_a_zip" / f"{'0' * 32}.zip").write_bytes(b"PK but not really")
    records, failures = split(list(scan([tmp_path])))
    assert list(records) == [LBFGS_ID]
    reasons = {Path(f.path).relative_to(tmp_path).parts[0]: f.reason for f in failures}
    for case, (_, _, reason) in BROKEN.items():
        assert reasons[case].startswith(reason), (case, reasons[case])
    assert reasons["unreadable"].startswith("files/search.json: cannot read")
    assert reasons["not_a_zip"] == f"{'0' * 32}.zip: not a zip file"
    assert all("\n" not in reason for reason in reasons.values())


def test_pickles_are_never_opened(tmp_path: Path) -> None:
    fit = copy(FIXTURES / "dir_output" / LBFGS / LBFGS_ID, tmp_path / LBFGS_ID)
    garbage = b"\x80\x04not a pickle at all"
    (fit / "files" / "search_internal").mkdir()
    (fit / "files" / "search_internal" / "search_internal.dill").write_bytes(garbage)
    (fit / "files" / "search_internal.dill").write_bytes(garbage)
    (fit / "files" / "dataset.pickle").write_bytes(garbage)
    (fit / "files" / "search_internal" / "state.json").write_bytes(b"{not json")
    record = read_fit(fit)
    assert set(record["files"]) == {"samples_info", "lensd.skipped"}
    assert record["files"]["lensd.skipped"] == [  # a note of each pickle, none opened
        f"files/{name}: a pickle, never opened (opening one runs code)"
        for name in ("dataset.pickle", "search_internal.dill", "search_internal/search_internal.dill")]


def test_other_csv_files_become_arrays_or_columns(tmp_path: Path) -> None:
    fit = copy(FIXTURES / "dir_output" / LBFGS / LBFGS_ID, tmp_path / LBFGS_ID)
    (fit / "files" / "covariance.csv").write_text("1.0,0.5\n0.5,2.0\n")
    (fit / "files" / "latent").mkdir()
    (fit / "files" / "latent" / "summary.csv").write_text("name,value\nflux,1.5\nnote,\n")
    files = read_fit(fit)["files"]
    np.testing.assert_array_equal(files["covariance"], [[1.0, 0.5], [0.5, 2.0]])
    assert files["latent.summary"] == {"name": ["flux", "note"], "value": [1.5, None]}


def add_analyses(fit: Path) -> None:
    for i, telescope in enumerate(("A", "B")):
        files = fit / "analyses" / f"analysis_{i}" / "files"
        files.mkdir(parents=True)
        (files / "info.json").write_text(json.dumps({"telescope": telescope}))
        (files / "dataset.json").write_text(json.dumps({"pixels": 100 + i}))


def test_analyses_are_child_records_of_their_fit(tmp_path: Path) -> None:
    fit = copy(FIXTURES / "dir_output" / LBFGS / LBFGS_ID, tmp_path / LBFGS_ID)
    add_analyses(fit)
    records, failures = split(list(scan([tmp_path])))
    assert failures == [] and list(records) == [LBFGS_ID, f"{LBFGS_ID}_0", f"{LBFGS_ID}_1"]
    child = records[f"{LBFGS_ID}_1"]
    assert (child["parent_id"], child["name"], child["unique_tag"], child["status"]) == \
        (LBFGS_ID, "lbfgs", "gaussian_a", "completed")
    assert (child["info"], child["model"]) == ({"telescope": "B"}, None)
    assert child["files"] == {"dataset": {"pixels": 101}}
    before = folder_signature(child["source"])
    (fit / ".completed").unlink()  # the child's status comes from its fit, so its signature moves
    assert folder_signature(child["source"]) != before

    with zipfile.ZipFile(tmp_path / f"{LBFGS_ID}.zip", "w") as archive:
        for path in sorted(fit.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(fit).as_posix())
    shutil.rmtree(fit)
    names = [p.name for p in discover(tmp_path / f"{LBFGS_ID}.zip")]
    assert names == [f"{LBFGS_ID}.zip", "analysis_0", "analysis_1"]
    zipped, failures = split(list(scan([tmp_path])))
    assert failures == [] and list(zipped) == list(records)
    assert zipped[f"{LBFGS_ID}_1"]["files"] == child["files"]


def test_hostile_zips_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FIXTURES / "dir_output" / LBFGS / f"{LBFGS_ID}.zip"
    escaping = tmp_path / "escape" / f"{'1' * 32}.zip"
    escaping.parent.mkdir()
    shutil.copyfile(source, escaping)
    with zipfile.ZipFile(escaping, "a") as archive:
        archive.writestr("../../outside.json", "{}")
    big = tmp_path / "big" / f"{'2' * 32}.zip"
    big.parent.mkdir()
    shutil.copyfile(source, big)
    monkeypatch.setattr(folders, "MAX_FILE", 5000)  # samples.csv unzips to 9900 bytes
    _, failures = split(list(scan([tmp_path])))
    reasons = {Path(f.path).parent.name: f.reason for f in failures}
    assert "points outside the fit" in reasons["escape"]
    assert reasons["big"].startswith("files/samples.csv: 9900 bytes unzipped, over the 5000 limit")


def test_signature_follows_the_files_a_read_uses(tmp_path: Path) -> None:
    fit = copy(FIXTURES / "dir_output" / LBFGS / LBFGS_ID, tmp_path / LBFGS_ID)
    first = folder_signature(fit)
    assert folder_signature(fit) == first
    (fit / "image").mkdir(exist_ok=True)  # git keeps no empty folder: a fresh clone may lack it
    (fit / "image" / "new.png").write_bytes(b"not read")
    assert folder_signature(fit) == first
    (fit / "files" / "info.json").write_text('{"telescope": "Z"}')
    assert folder_signature(fit) != first
    assert read_fit(fit)["source_sig"] == folder_signature(fit)


def test_non_hex_fit_outside_any_grid_is_named_by_its_path_under_the_root(tmp_path: Path) -> None:
    copy(FIXTURES / "dir_output" / LBFGS / LBFGS_ID, tmp_path / "runs" / "my_fit")
    assert read_fit(tmp_path / "runs" / "my_fit", root=tmp_path)["id"] == "runs/my_fit"
    assert read_fit(tmp_path / "runs" / "my_fit")["id"] == "my_fit"


def test_missing_root_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    (failure,) = scan([tmp_path / "nowhere"])
    assert failure == FolderFailure(str(tmp_path / "nowhere"), "no such folder")


# -- lensd submit's parse: the stdlib's float, no numpy --------------------------------------------

def test_plain_arrays_travel_as_the_numpy_ones_do(outputs: Path) -> None:
    """``scan(plain=True)`` (``lensd submit``) gives records whose wire bytes are the numpy scan's."""
    from lensd.wire import codec

    roots = [outputs / "dir_output", outputs / "sensitivity_output"]
    plain, parsed = split(list(scan(roots, plain=True))), split(list(scan(roots)))
    assert plain[1] == parsed[1] == [] and plain[0].keys() == parsed[0].keys()
    for fit_id, record in parsed[0].items():
        assert codec.pack(plain[0][fit_id]) == codec.pack(record), fit_id
        assert (record["max_log_likelihood"] is None) == (plain[0][fit_id]["max_log_likelihood"] is None)


@pytest.mark.parametrize("text", ["1.5,2,3\n4,5,6\n", "1,2,3\n", "1\n2\n3\n", "7.25\n",
                                  "1, 2 # a comment\n\n3 ,nan\n-inf,1e-300\n"])
def test_plain_csv_arrays_have_loadtxt_s_values_and_shape(text: str) -> None:
    from lensd.ingest.pyautofit import _csv
    from lensd.wire import codec

    expected = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float64)
    got = codec.unpack(codec.pack(_csv("files/x.csv", text.encode(), plain=True)))
    assert got.shape == expected.shape
    assert np.array_equal(got, expected, equal_nan=True)


def test_plain_samples_refuse_what_numpy_refuses(tmp_path: Path) -> None:
    from lensd.errors import IngestError
    from lensd.ingest.csvnumbers import plain_samples, read_samples

    header = b"a,log_likelihood,log_prior,log_posterior,weight\n"
    for body in (b"1,2,3,4\n", b"1,2,3,4,x\n", b"1,2,3,4,5\n1,2,3,4\n", b"1,2,3,4,5"):
        for parse in (read_samples, plain_samples):
            with pytest.raises(IngestError, match="samples.csv"):
                parse(header + body)
