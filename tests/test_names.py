"""Names that match nothing: a query naming a path, status, class or value name no fit has says so
(the CLI on stderr, the Python API with one ``NoSuchName`` warning), with the closest names the
database does have; an absent name is never an error. Real PyAutoFit output, a real file and a
real daemon."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import DIR_OUTPUT, DaemonProcess, lensd_cli

import lensd
from lensd.errors import LensdWarning, NoSuchName
from lensd.store import names


@pytest.fixture(scope="module")
def db() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ldn", dir="/tmp"))
    path = folder / "n.sqlite"
    ingested = lensd_cli("ingest", str(DIR_OUTPUT), "--db", str(path), "--quiet")
    assert ingested.returncode == 0, ingested.stderr
    yield path
    for item in folder.iterdir():
        item.unlink()
    folder.rmdir()


CASES = [  # (text query, words the note must hold)
    ("model.gaussian.centr > 40", ["parameter path 'gaussian.centr'", "gaussian.centre"]),
    ('status == "faild"', ["status 'faild'", "failed"]),
    ("model.gaussian == tm.Gaussian", ["class 'tm.Gaussian'", "toy_models.Gaussian", "just Gaussian"]),
    ('info["datset"] == "x"', ["info key 'datset'"]),
    ("model.gausian == Gaussian", ["model node at 'gausian'", "gaussian"]),
]


@pytest.mark.parametrize(("text", "words"), CASES)
def test_the_cli_says_which_name_no_fit_has(db: Path, text: str, words: list[str]) -> None:
    result = lensd_cli("query", text, "--db", str(db), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    notes = [line for line in result.stderr.splitlines() if line.startswith("lensd: note: ")]
    assert len(notes) == 1, result.stderr
    for word in words:
        assert word in notes[0], (word, notes[0])


def test_a_name_that_exists_says_nothing(db: Path) -> None:
    result = lensd_cli("query", "model.gaussian.centre > 1e9 & status == 'failed'", "--db", str(db))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_python_api_warns_once_and_never_raises(db: Path) -> None:
    names._WARNED.clear()
    agg = lensd.Aggregator.from_database(db)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            query = agg.query(agg.model.gaussian.centr > 40)
            assert list(query.fits()) == [] and len(query) == 0  # asked twice, told once
            assert list(agg.values("bogus")) == []
            assert list(agg.values("samples"))  # a name that exists: nothing said
        said = [str(w.message) for w in caught if issubclass(w.category, LensdWarning)]
        assert all(issubclass(w.category, NoSuchName) for w in caught if issubclass(w.category, LensdWarning))
        assert len(said) == 2, said
        assert "gaussian.centre" in said[0]
        assert "'bogus'" in said[1] and "samples" in said[1]
    finally:
        agg.close()


def test_the_async_aggregator_warns_too(make_daemon, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    daemon: DaemonProcess = make_daemon()
    assert lensd_cli("ingest", str(DIR_OUTPUT), "--socket", str(daemon.socket), "--db", str(daemon.db),
                     "--quiet").returncode == 0
    names._WARNED.clear()

    async def ask() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as agg:
                assert [f async for f in agg.query(agg.status == "faild").fits()] == []
        return [str(w.message) for w in caught if issubclass(w.category, NoSuchName)]

    said = anyio.run(ask)
    assert len(said) == 1 and "failed" in said[0]
