"""The sync Aggregator (file) and the AsyncAggregator (daemon socket) give the same answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
import pytest
from conftest import DIR_OUTPUT, lensd_cli
from records_factory import record

import lensd

Query = Callable[[Any], Any]

QUERIES: dict[str, Query] = {
    "everything": lambda agg: agg,
    "class": lambda agg: agg.query(agg.model.galaxies.lens.mass == "Isothermal"),
    "class and value": lambda agg: agg.query((agg.model.galaxies.lens.mass == "lensmodels.Isothermal")
                                             & (agg.model.galaxies.lens.mass.einstein_radius > 1.0)),
    "or with tag": lambda agg: agg.query((agg.model.galaxies.lens.mass.einstein_radius > 1.0)
                                         | (agg.unique_tag == "lens_3")),
    "negated info": lambda agg: agg.query(~(agg.info["survey"] == "SLACS")),
    "gaussian centre": lambda agg: agg.query(agg.model.gaussian.centre > 35.0),
    "ordered slice": lambda agg: agg.order_by(agg.max_log_likelihood, reverse=True)[2:9],
    "grids": lambda agg: agg.grid_searches(),
    # msgpack carries 64-bit ints only: a larger one is compared as the float it is in SQL
    "int beyond 64 bits": lambda agg: agg.query((agg.model.galaxies.lens.mass.einstein_radius < 2**70)
                                                & ~agg.max_log_likelihood.in_([2**64, -(2**80)])),
}


def sync_answers(db: Any, build: Query) -> tuple[int, list[str], list[Any], list[float]]:
    agg = build(lensd.Aggregator.from_database(db))
    return (len(agg), [f.id for f in agg.fits()], list(agg.values("info")),
            [float(max(s.log_likelihood)) for s in agg.values("samples")])


def async_answers(socket: Any, build: Query) -> tuple[int, list[str], list[Any], list[float]]:
    async def ask() -> tuple[int, list[str], list[Any], list[float]]:
        async with await lensd.AsyncAggregator.connect(socket=socket) as base:
            agg = build(base)
            return (await agg.count(), [f.id async for f in agg.fits()], [i async for i in agg.values("info")],
                    [float(max(s.log_likelihood)) async for s in agg.values("samples")])

    return anyio.run(ask)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from conftest import DaemonProcess

    folder = tmp_path_factory.mktemp("agree")
    import tempfile
    from pathlib import Path

    short = Path(tempfile.mkdtemp(prefix="lda", dir="/tmp"))
    daemon = DaemonProcess(folder / "a.sqlite", short / "s", [])
    daemon.start()
    try:
        with lensd.connect_sync(socket=daemon.socket) as client:
            for i in range(40):
                client.submit(record(i))
        assert lensd_cli("ingest", str(DIR_OUTPUT), "--db", str(daemon.db)).returncode == 0
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_sync_and_async_agree(filled, name: str) -> None:  # type: ignore[no-untyped-def]
    build = QUERIES[name]
    from_file = sync_answers(filled.db, build)
    over_socket = async_answers(filled.socket, build)
    assert from_file == over_socket
    assert from_file[0] == len(from_file[1])
    if name == "everything":
        assert from_file[0] == 40 + 10  # 9 PyAutoFit fits and one grid search at the top level



def test_numpy_scalars_select_what_plain_values_select_from_the_file_and_over_the_socket(filled) -> None:  # type: ignore[no-untyped-def]
    """What a notebook holds: ``np.bool_`` (msgpack refuses it as is), numpy ints and floats."""
    def with_numpy(agg: Any) -> Any:
        return agg.query((agg.is_complete == np.bool_(True)) & (agg.is_grid_search != np.True_)
                         & (agg.info["index"] < np.int32(20)) & agg.info["index"].in_([np.int64(4), np.float64(5)])
                         | (agg.model.galaxies.lens.mass.einstein_radius > np.float32(2.4)))

    def plain(agg: Any) -> Any:
        return agg.query((agg.is_complete == True) & (agg.is_grid_search != True)  # noqa: E712
                         & (agg.info["index"] < 20) & agg.info["index"].in_([4, 5.0])
                         | (agg.model.galaxies.lens.mass.einstein_radius > float(np.float32(2.4))))

    from_file = sync_answers(filled.db, with_numpy)
    assert from_file == sync_answers(filled.db, plain) == async_answers(filled.socket, with_numpy)
    assert {"fit-4", "fit-5"} <= set(from_file[1])

def test_children_agree(filled) -> None:  # type: ignore[no-untyped-def]
    cells = sorted(f.id for f in lensd.Aggregator.from_database(filled.db).grid_searches().children().fits())

    async def ask() -> list[str]:
        async with await lensd.AsyncAggregator.connect(socket=filled.socket) as agg:
            children = await agg.grid_searches().children()
            return sorted([f.id async for f in children.fits()])

    assert cells == anyio.run(ask) and len(cells) == 2


PARENTS = 33_000  # past sqlite's 32,766 bound values and the wire's 10,000 nodes


def _grid(i: int) -> dict[str, Any]:
    return {"id": f"grid-{i:05d}", "name": "grid", "status": "completed", "is_grid_search": True,
            "info": {"i": i}}


def _cell(i: int, parent: int) -> dict[str, Any]:
    return {"id": f"cell-{i:03d}", "name": "cell", "status": "completed", "parent_id": f"grid-{parent:05d}"}


@pytest.fixture(scope="module")
def many_parents(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """33,000 grid searches, every 1,000th with a cell, served by a daemon."""
    import tempfile
    from pathlib import Path

    from conftest import DaemonProcess

    from lensd.domain.records import validate_record
    from lensd.store.writeops import Upsert
    from lensd.store.writer import BatchWriter

    db = tmp_path_factory.mktemp("parents") / "p.sqlite"

    async def fill() -> None:
        writer = await BatchWriter.open(db, "normal")
        try:
            for start in range(0, PARENTS, 1000):
                await writer.apply([Upsert(validate_record(_grid(i))) for i in range(start, start + 1000)])
            await writer.apply([Upsert(validate_record(_cell(i, i * 1000))) for i in range(PARENTS // 1000)])
        finally:
            await writer.close()

    anyio.run(fill)
    daemon = DaemonProcess(db, Path(tempfile.mkdtemp(prefix="ldp", dir="/tmp")) / "s", [])
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


CHILDREN_OF: dict[str, tuple[Query, list[int]]] = {  # parents chosen -> the parent numbers of their cells
    "all": (lambda agg: agg, list(range(0, PARENTS, 1000))),
    "grid searches": (lambda agg: agg.grid_searches(), list(range(0, PARENTS, 1000))),
    "queried": (lambda agg: agg.query(agg.info["i"] >= 20_000), list(range(20_000, PARENTS, 1000))),
    "ordered slice": (lambda agg: agg.order_by(agg.info["i"], reverse=True)[1:12_001],
                      list(range(21_000, PARENTS, 1000))),  # i from 32,998 down to 20,999
    "negative slice": (lambda agg: agg[-5001:], list(range(28_000, PARENTS, 1000))),
}


@pytest.mark.parametrize("name", sorted(CHILDREN_OF))
def test_children_of_any_number_of_parents(many_parents, name: str) -> None:  # type: ignore[no-untyped-def]
    """children() keeps the parents' selection in the query: no id list to outgrow sqlite or the wire."""
    build, parents = CHILDREN_OF[name]
    want = [f"cell-{p // 1000:03d}" for p in parents]
    cells = build(lensd.Aggregator.from_database(many_parents.db)).children()
    assert [f.id for f in cells.fits()] == want and len(cells) == len(want)

    async def ask() -> tuple[int, list[str]]:
        async with await lensd.AsyncAggregator.connect(socket=many_parents.socket) as agg:
            children = await build(agg).children()
            return await children.count(), [f.id async for f in children.fits()]

    assert anyio.run(ask) == (len(want), want)
