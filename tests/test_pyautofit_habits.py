"""PyAutoFit's Aggregator habits, asked of lensd on real PyAutoFit output, from the database file
(``Aggregator``) and over the daemon's socket (``AsyncAggregator``) alike:

- a boolean column alone is a predicate (``agg.query(agg.is_complete)``, ``~agg.is_grid_search``);
- ``agg(predicate)`` is ``agg.query(predicate)``; every fit column is ``agg.search.<column>``;
- ``agg[0]``, ``agg[-1]`` are fits, ``agg[:-1]``, ``agg[-2:]`` aggregators with list semantics
  (PyAutoFit's own negative-stop arithmetic is wrong; lensd uses Python's), ``len`` is a COUNT;
- ``values("info")`` yields ``{}`` for a fit run without info, so it zips with ``fits()``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import DIR_OUTPUT, DaemonProcess, lensd_cli
from records_factory import record

import lensd
from lensd.errors import QueryError
from lensd.query.fields import FIT_COLUMNS

Build = Callable[[Any], Any]


def _ordered_query(text: str) -> Build:
    """The aggregator ordered by id, then queried with ``text``."""
    return lambda agg: agg.order_by(agg.id).query(_parse(text))


@pytest.fixture(scope="module")
def filled() -> Iterator[DaemonProcess]:
    folder = Path(tempfile.mkdtemp(prefix="ldh", dir="/tmp"))
    daemon = DaemonProcess(folder / "h.sqlite", folder / "s", [])
    daemon.start()
    try:
        with lensd.connect_sync(socket=daemon.socket) as client:
            for i in range(6):
                client.submit(record(i, status="completed" if i % 3 else "running",
                                     info=None if i % 2 else {"index": i}))
        ingest = lensd_cli("ingest", str(DIR_OUTPUT), "--socket", str(daemon.socket), "--db", str(daemon.db))
        assert ingest.returncode == 0, ingest.stderr
        yield daemon
    finally:
        daemon.stop()
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


class Side:
    """One way in: ``ask(build, what)`` applies ``build`` to a fresh aggregator and answers ``what``
    (``"ids"``, ``"count"``, ``"info"``, ``"fit"`` for ``agg[i]``'s id), the same words for both."""

    def __init__(self, kind: str, daemon: DaemonProcess) -> None:
        self.kind, self.daemon = kind, daemon

    def ask(self, build: Build, what: str = "ids", index: int = 0) -> Any:
        if self.kind == "file":
            agg = lensd.Aggregator.from_database(self.daemon.db)
            try:
                chosen = build(agg)
                if what == "fit":
                    return chosen[index].id
                if what == "count":
                    return len(chosen)
                if what == "info":
                    return list(chosen.values("info"))
                return [fit.id for fit in chosen.fits()]
            finally:
                agg.close()

        async def remote() -> Any:
            async with await lensd.AsyncAggregator.connect(socket=self.daemon.socket) as agg:
                chosen = build(agg)
                if what == "fit":
                    return (await chosen[index]).id
                if what == "count":
                    return await chosen.count()
                if what == "info":
                    return [info async for info in chosen.values("info")]
                return [fit.id async for fit in chosen.fits()]

        return anyio.run(remote)


@pytest.fixture(params=["file", "socket"])
def side(request: pytest.FixtureRequest, filled: DaemonProcess) -> Side:
    return Side(request.param, filled)


def every_fit(side: Side) -> list[Any]:
    """(id, status, is_grid_search, name) of every top-level fit, by id: the reference answers."""
    agg = lensd.Aggregator.from_database(side.daemon.db)
    try:
        return [(f.id, f.status, bool(f.is_grid_search), f.name) for f in agg.order_by(agg.id).fits()]
    finally:
        agg.close()


def test_a_boolean_column_alone_is_a_predicate(side: Side) -> None:
    fits = every_fit(side)
    complete = [i for i, status, _, _ in fits if status == "completed"]
    not_grid = [i for i, _, grid, _ in fits if not grid]
    assert len(complete) not in (0, len(fits)) and len(not_grid) not in (0, len(fits))
    by_id: Build = lambda agg: agg.order_by(agg.id)  # noqa: E731
    assert side.ask(lambda agg: by_id(agg).query(agg.is_complete)) == complete
    assert side.ask(lambda agg: by_id(agg)(agg.search.is_complete)) == complete  # agg(p) is agg.query(p)
    assert side.ask(lambda agg: by_id(agg).query(~agg.search.is_grid_search)) == not_grid
    emcee = [i for i, status, _, name in fits if status == "completed" and name == "emcee"]
    assert emcee
    assert side.ask(lambda agg: by_id(agg)(agg.is_complete & (agg.name == "emcee"))) == emcee
    assert side.ask(lambda agg: by_id(agg)((agg.name == "emcee") & agg.is_complete)) == emcee
    either = [i for i, status, grid, _ in fits if status != "completed" or grid]
    assert side.ask(lambda agg: by_id(agg)(~agg.is_complete | agg.is_grid_search)) == either
    assert side.ask(lambda agg: agg(agg.is_complete), "count") == len(complete)


def test_every_fit_column_is_reachable_under_search(side: Side) -> None:
    fits = every_fit(side)
    probes = {"id": "== 'fit-1'", "name": "== 'emcee'", "path_prefix": "== 'survey'",
              "unique_tag": "== 'lens_1'", "status": "== 'running'", "parent_id": ".is_none()",
              "max_log_likelihood": "> -1e9", "log_evidence": ".is_none()", "is_complete": "== True",
              "is_grid_search": "== False"}
    assert set(probes) == FIT_COLUMNS
    for column, test in probes.items():
        text = f"search.{column} {test}".replace(" .", ".")
        by_search = side.ask(_ordered_query(text))
        plain = text.removeprefix("search.")
        by_column = side.ask(_ordered_query(plain))
        assert by_search == by_column, column
        assert by_search, f"{column}: the probe should find fits"
        assert len(by_search) <= len(fits)
    with pytest.raises(QueryError, match="did you mean is_complete"):
        lensd.Aggregator.from_database(side.daemon.db).search.is_completed  # noqa: B018


def _parse(text: str) -> Any:
    from lensd.query.text import parse

    return parse(text)


def test_indexing_and_slicing_as_pyautofit(side: Side) -> None:
    ids = [fit[0] for fit in every_fit(side)]
    by_id: Build = lambda agg: agg.order_by(agg.id)  # noqa: E731
    assert side.ask(by_id, "fit", 0) == ids[0]
    assert side.ask(by_id, "fit", -1) == ids[-1]
    assert side.ask(by_id, "fit", -len(ids)) == ids[0]
    assert side.ask(lambda agg: by_id(agg)[:-1]) == ids[:-1]
    assert side.ask(lambda agg: by_id(agg)[-2:]) == ids[-2:]
    assert side.ask(lambda agg: by_id(agg)[-2:], "count") == 2  # len stays a COUNT, slices included
    assert side.ask(lambda agg: by_id(agg)[:-1], "count") == len(ids) - 1
    assert side.ask(lambda agg: by_id(agg)[2:][-3:-1]) == ids[2:][-3:-1]
    assert side.ask(lambda agg: by_id(agg)[-5:][1:3]) == ids[-5:][1:3]
    assert side.ask(lambda agg: by_id(agg)[-4:].limit(2)) == ids[-4:][:2]
    assert side.ask(lambda agg: by_id(agg)[1:-1][-1:], "fit", 0) == ids[1:-1][-1]
    assert side.ask(lambda agg: by_id(agg)[-100:]) == ids
    assert side.ask(lambda agg: by_id(agg)[:-100]) == []
    for index in (len(ids), -len(ids) - 1):
        with pytest.raises(IndexError, match="out of range"):
            side.ask(by_id, "fit", index)


def test_values_info_yields_an_empty_dict_for_a_fit_without_info(side: Side) -> None:
    by_id: Build = lambda agg: agg.order_by(agg.id).query(agg.id.in_([f"fit-{i}" for i in range(6)]))  # noqa: E731
    assert side.ask(by_id) == [f"fit-{i}" for i in range(6)]
    infos = side.ask(by_id, "info")
    assert infos == [{"index": 0}, {}, {"index": 2}, {}, {"index": 4}, {}]
    assert len(side.ask(lambda agg: agg, "info")) == len(side.ask(lambda agg: agg))  # zips with fits()


def test_the_command_line_takes_the_same_habits(filled: DaemonProcess) -> None:
    result = lensd_cli("query", "is_complete & ~search.is_grid_search & search.unique_tag == 'lens_1'",
                       "--db", str(filled.db), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [row["id"] for row in json.loads(result.stdout)] == ["fit-1"]


RECORD_FIELDS = ("model", "search", "instance", "summary", "job", "info")


def test_values_of_a_record_field_line_up_with_the_fits(daemon: DaemonProcess) -> None:
    """One item per selected fit, in order, for every record field, from the file and over the
    socket: None where a fit lacks the field (``{}`` for info), so each zips with ``fits()``."""
    with lensd.connect_sync(socket=daemon.socket) as client:
        client.submit(record(0, job={"SLURM_JOB_ID": "7"}))  # has every field
        client.submit({"id": "fit-bare", "status": "running"})  # none of them
        client.submit(record(2, status="running", search=None, info=None, samples=None))
        client.submit(record(3, status="failed", model=None, search=None, job={"host": "n1"}))
    ids = ["fit-0", "fit-2", "fit-3", "fit-bare"]
    agg = lensd.Aggregator.from_database(daemon.db)
    try:
        chosen = agg.order_by(agg.id)
        assert [fit.id for fit in chosen.fits()] == ids
        expected = {name: [fit.value(name) for fit in chosen.fits()] for name in RECORD_FIELDS}
        expected["info"] = [info or {} for info in expected["info"]]  # values("info") says {}, fit.info None
        local = {name: list(chosen.values(name)) for name in RECORD_FIELDS}
        samples = [fit_samples.paths for fit_samples in chosen.values("samples")]
    finally:
        agg.close()

    async def remote() -> dict[str, list[Any]]:
        async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as far:
            ordered = far.order_by(far.id)
            return {name: [value async for value in ordered.values(name)] for name in RECORD_FIELDS}

    over_socket = anyio.run(remote)
    assert [value is None for value in expected["search"]] == [False, True, True, True]
    assert [value is None for value in expected["job"]] == [False, True, False, True]
    assert [value is None for value in expected["model"]] == [False, False, True, True]
    assert [value is None for value in expected["instance"]] == [False, False, False, True]
    assert [value is None for value in expected["summary"]] == [False, True, True, True]
    assert [info == {} for info in expected["info"]] == [False, True, False, True]
    for name in RECORD_FIELDS:
        assert len(local[name]) == len(ids), name
        assert [repr(v) for v in local[name]] == [repr(v) for v in expected[name]], name
        assert [repr(v) for v in over_socket[name]] == [repr(v) for v in expected[name]], name
    assert len(samples) == 2  # samples are a payload: only fit-0 and fit-3 have them (docs/query.md)


def test_a_fit_by_index_leaves_the_connection_to_the_next_request(filled: DaemonProcess) -> None:
    """``await agg[0]`` returned from inside its ``async for`` and left the stream's generator to the
    garbage collector: its cleanup ran in another task, whose release of the connection's lock
    failed ("The current task is not holding this lock"), so every later request of that
    AsyncAggregator raised "Attempted to acquire an already held Lock"."""
    ids = [fit[0] for fit in every_fit(Side("file", filled))]

    async def remote() -> tuple[str, str, int, list[str]]:
        async with await lensd.AsyncAggregator.connect(socket=filled.socket) as agg:
            by_id = agg.order_by(agg.id)
            first, last = (await by_id[0]).id, (await by_id[-1]).id
            return first, last, await by_id.count(), [fit.id async for fit in by_id.fits()]

    assert anyio.run(remote) == (ids[0], ids[-1], len(ids), ids)


def test_reads_of_one_async_aggregator_may_nest_and_stop_early(filled: DaemonProcess) -> None:
    """The connection's lock was held by a stream from its first page to its end, across every
    ``yield``: ``await agg.count()`` inside ``async for fit in agg.fits()`` raised "Attempted to
    acquire an already held Lock", and a loop left with ``break`` (its generator closed later, from
    asyncio's finaliser task, which cannot release another task's lock) left the aggregator
    unusable for good. The lock is held only while frames move, so both work."""
    ids = [fit[0] for fit in every_fit(Side("file", filled))]

    async def remote() -> tuple[list[tuple[str, int]], list[tuple[str, Any]], str, int, list[str]]:
        async with await lensd.AsyncAggregator.connect(socket=filled.socket) as agg:
            by_id = agg.order_by(agg.id)
            counted = [(fit.id, await by_id.count()) async for fit in by_id.fits()]
            paired: list[tuple[str, Any]] = []
            async for fit in by_id.fits():
                async for info in by_id[:1].values("info"):
                    paired.append((fit.id, info))
            async for fit in by_id.fits():
                first = fit.id
                break
            return counted, paired, first, await by_id.count(), [fit.id async for fit in by_id.fits()]

    counted, paired, first, count, again = anyio.run(remote)
    assert counted == [(fit_id, len(ids)) for fit_id in ids]
    assert [fit_id for fit_id, _ in paired] == ids and len({repr(info) for _, info in paired}) == 1
    assert (first, count, again) == (ids[0], len(ids), ids)
