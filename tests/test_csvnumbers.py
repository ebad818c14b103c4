"""The fast samples.csv parser (``lensd.ingest.csvnumbers``, orjson) gives ``float``'s bits, or
declines (None) so that ``np.loadtxt`` parses as before: never a different number."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensd.ingest import csvnumbers
from lensd.ingest.csvnumbers import read_samples

# The ``fast`` extra is part of ``.[test]``; a venv made before it was added skips, saying why.
pytest.importorskip("orjson", reason="orjson (lensd[fast], part of .[test]) is not installed: pip install -e '.[test]'")

FIXTURES = Path(__file__).parent / "fixtures" / "autofit"
FINITE = st.floats(allow_nan=False, allow_infinity=False)  # subnormals, -0.0 and extremes included
AWKWARD = st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                           1e-5, 9.999999999999999e-5, 1e16, 1e22, 1e23, 0.1, 0.30000000000000004])


def pyautofit_csv(rows: list[list[float]], widths: list[int], newline: str = "\n") -> bytes:
    """Rows as PyAutoFit writes them: ``repr`` of each value right-aligned to its column's width."""
    return "".join(",".join(repr(v).rjust(w) for v, w in zip(row, widths, strict=True)) + newline
                   for row in rows).encode()


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.lists(st.lists(FINITE | AWKWARD, min_size=k, max_size=k),
                                                     min_size=1, max_size=40)),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_random_doubles_parse_to_float_s_bits(rows: list[list[float]], newline: str, padded: bool) -> None:
    """Fixed-width (padded, as PyAutoFit writes) and ragged (unpadded) rows alike."""
    width = max(len(repr(v)) for row in rows for v in row)
    body = pyautofit_csv(rows, [width if padded else 0] * len(rows[0]), newline)
    table = csvnumbers.parse(body, len(rows[0]))
    assert table is not None
    expected = np.array([[float(repr(v)) for v in row] for row in rows], dtype=np.float64)
    assert table.shape == expected.shape
    assert (bits(table) == bits(expected)).all()


@pytest.mark.parametrize("body", [
    b"nan,1.0\n", b"inf,1.0\n", b"-inf,1.0\n",  # numpy's words, not JSON: loadtxt reads them
    b"1.0,2.0\n\n3.0,4.0\n", b"1.0,2.0 # note\n", b"1.,2.0\n", b".5,2.0\n", b"+1.0,2.0\n",
    b"1e400,2.0\n",  # orjson refuses an overflow; loadtxt makes it inf
    b"-0,1.0\n", b"1.0,-00\n",  # an integer -0: JSON's int 0 would drop the sign
    b"1.0,2.0\n3.0\n", b"1.0,2.0,3.0\n4.0,5.0\n", b"1.0\n2.0,3.0,4.0\n",  # ragged
    b"1.0,2.0", b"", b'"1.0",2.0\n', b"true,2.0\n", b"[1.0],2.0\n", b"1.0 2.0,3.0\n",
])
def test_anything_but_plain_numbers_is_declined(body: bytes) -> None:
    assert csvnumbers.parse(body, 2) is None


@pytest.mark.parametrize("body", [b"-0.0,0.0\n", b"-0e5,5\n", b"9007199254740993,18446744073709551616\n",
                                  b"1E5,1e+05\n", b"  -1.5e-07,   1.0\r\n   2.0,  -0.0\r\n"])
def test_integers_exponents_and_signed_zeros_keep_float_s_bits(body: bytes) -> None:
    table = csvnumbers.parse(body, 2)
    assert table is not None
    expected = np.array([[float(cell) for cell in line.split(b",")] for line in body.splitlines()])
    assert (bits(table) == bits(expected)).all()


def test_lines_that_only_add_up_to_equal_widths_are_read_line_by_line() -> None:
    """8 + 4 + 4 bytes look like two lines of 8 (hypothesis found it): the count of values says
    otherwise, and the rows are read one JSON array a line."""
    table = csvnumbers.parse(b"0.03125\n0.0\n0.0\n", 1)
    assert table is not None and table.tolist() == [[0.03125], [0.0], [0.0]]


def test_a_rejected_body_still_parses_or_fails_as_loadtxt_does() -> None:
    header = b"a,log_likelihood,log_prior,log_posterior,weight\n"
    samples = read_samples(header + b"nan,-1.0,-inf,0.5,1.0\n1.5,2.0,3.0,4.0,5.0\n")
    assert math.isnan(samples["parameters"][0, 0]) and samples["log_prior"][0] == -math.inf
    assert csvnumbers.parse(b"nan,-1.0,-inf,0.5,1.0\n", 5) is None


def test_every_fixture_samples_csv_takes_the_fast_path_with_loadtxt_s_numbers() -> None:
    """Real PyAutoFit output; files holding ``nan`` or ``inf`` (LBFGS steps, a prior's edge) take numpy's path."""
    files = sorted(FIXTURES.rglob("samples.csv"))
    assert len(files) >= 19
    for path in files:
        head, _, body = path.read_bytes().partition(b"\n")
        table = csvnumbers.parse(body, head.count(b",") + 1)
        if b"nan" in body or b"inf" in body:
            assert table is None
            continue
        assert table is not None, path
        expected = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2)
        assert table.shape == expected.shape and (bits(table) == bits(expected)).all(), path
