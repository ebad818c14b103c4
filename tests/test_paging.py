"""The paged-stream rules (wire/paging.py), without sockets: one credit per request and per
``next``, cancel answered at once, and what a client does with each frame; then the same rules
kept by a real daemon whose rows are large: pages stop at a byte budget (always one row at
least), a row over the frame limit is one error naming its fit, and that error is the stream's
only terminal frame."""

from __future__ import annotations

import hashlib
import json
import socket as socketlib
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from conftest import DaemonProcess
from wire import frame, hello, raw_connection, read_frame

import lensd
from lensd.domain.samples import Samples
from lensd.errors import FrameTooLarge, LensdError, ProtocolError
from lensd.query.state import QueryState
from lensd.store.writeops import op_from_request
from lensd.store.writer import BatchWriter
from lensd.wire import protocol
from lensd.wire.paging import Credit, PageReader


def test_a_stream_starts_with_one_credit_and_each_next_adds_one() -> None:
    credit = Credit()
    assert not credit.waiting
    credit.spend()
    assert credit.waiting
    credit.control("next")
    credit.control("next")
    credit.spend()
    assert not credit.waiting and credit.pages == 1


def test_a_cancel_ends_the_wait_whatever_the_credit() -> None:
    credit = Credit()
    credit.spend()
    credit.control("cancel")
    assert credit.cancelled and not credit.waiting


def test_a_reader_takes_pages_until_done_and_answers_each_with_next() -> None:
    reader = PageReader(7)
    assert reader.read(protocol.page(7, [1, 2])) == [1, 2] and not reader.ended
    assert reader.next_request() == protocol.request("next", 7)
    assert reader.read(protocol.done(7)) is None and reader.ended


def test_an_error_or_a_bad_page_ends_the_stream() -> None:
    reader = PageReader(3)
    with pytest.raises(LensdError, match="boom"):
        reader.read(protocol.error(3, "storage", "boom"))
    assert reader.ended
    reader = PageReader(4)
    with pytest.raises(ProtocolError, match="page list"):
        reader.read({"rid": 4, "page": "not a list"})
    assert reader.ended


def test_a_cancelled_stream_ends_at_done_or_an_error_and_drops_pages() -> None:
    reader = PageReader(5)
    assert reader.cancel_request() == protocol.request("cancel", 5)
    assert not reader.ends_cancelled(protocol.page(5, [1]))
    assert reader.ends_cancelled(protocol.done(5, cancelled=True))
    assert reader.ends_cancelled(protocol.error(5, "storage", "gone"))


def big_record(fit_id: str, n_samples: int, n_parameters: int) -> dict[str, Any]:
    """A completed fit whose samples are ``n_samples`` x ``n_parameters`` floats (8 bytes each)."""
    rng = np.random.default_rng(len(fit_id) * n_parameters)
    return {"id": fit_id, "status": "completed", "samples": {
        "paths": [f"galaxies.lens.p{j}" for j in range(n_parameters)],
        "parameters": rng.normal(size=(n_samples, n_parameters)), "log_likelihood": rng.normal(size=n_samples),
        "log_prior": np.zeros(n_samples), "weight": np.ones(n_samples)}}


def digest(samples: Samples) -> str:
    """The whole of a Samples, as a short string that two paths must agree on."""
    hashed = hashlib.sha256(json.dumps(list(samples.paths)).encode())
    for array in (samples.parameters, samples.log_likelihood, samples.log_prior, samples.weight):
        hashed.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    return f"{samples.parameters.shape}:{hashed.hexdigest()}"


def test_big_samples_come_back_whole_over_the_daemon(daemon: DaemonProcess) -> None:
    """Four fits of 50,000 samples x 48 parameters (~20 MB each, ~80 MB together, past the 64 MiB
    frame limit) used to go out as one page of 16 rows: the client got ``too_large``."""
    ids = [f"big-{i}" for i in range(4)]
    with lensd.connect_sync(socket=daemon.socket) as client:
        for fit_id in ids:
            client.submit(big_record(fit_id, 50_000, 48))
    agg = lensd.Aggregator.from_database(daemon.db)
    try:
        local = [digest(samples) for samples in agg.order_by(agg.id).values("samples")]
    finally:
        agg.close()

    async def remote() -> list[str]:
        async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as far:
            return [digest(samples) async for samples in far.order_by(far.id).values("samples")]

    assert len(local) == len(ids) and all(item.startswith("(50000, 48):") for item in local)
    assert anyio.run(remote) == local


@pytest.fixture(scope="module")
def huge_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fits a-small, b-huge (samples of ~74 MB, written here directly: no frame could carry them
    to a daemon, a folder ingest could) and c-small, in that order."""
    db = tmp_path_factory.mktemp("huge") / "huge.sqlite"
    records = [big_record("a-small", 100, 4), big_record("b-huge", 50_000, 184), big_record("c-small", 100, 4)]

    async def write() -> list[Any]:
        writer = await BatchWriter.open(db)
        try:
            return await writer.apply([op_from_request("submit", {"record": item}) for item in records])
        finally:
            await writer.close()

    assert anyio.run(write) == ["applied"] * 3
    return db


def test_a_value_over_the_frame_limit_is_one_line_naming_its_fit(make_daemon: Any, huge_db: Path) -> None:
    daemon = make_daemon(db=huge_db)

    async def remote() -> tuple[list[tuple[int, ...]], str, int, list[str]]:
        async with await lensd.AsyncAggregator.connect(socket=daemon.socket) as agg:
            shapes: list[tuple[int, ...]] = []
            with pytest.raises(FrameTooLarge) as caught:
                async for samples in agg.values("samples"):
                    shapes.append(samples.parameters.shape)
            others = agg.query(agg.id != "b-huge")  # the same connection still answers
            return (shapes, str(caught.value), await agg.count(),
                    [digest(samples) async for samples in others.values("samples")])

    shapes, message, count, others = anyio.run(remote)
    assert shapes == [(100, 4)]  # the page before it came whole
    assert "\n" not in message and "'b-huge'" in message and "samples" in message, message
    assert "from_database" in message, message
    assert count == 3 and len(others) == 2
    daemon.stop()


def test_a_failing_stream_sends_exactly_one_terminal_frame(make_daemon: Any, huge_db: Path) -> None:
    """Raw frames: the stream of values("samples") fails at b-huge; nothing more for its rid
    follows the error, not even once the client has said all it will (EOF ends open streams,
    and the daemon sends what they still say before it closes)."""
    daemon = make_daemon(db=huge_db)
    sock = raw_connection(daemon.socket, timeout=120)
    try:
        hello(sock)
        sock.sendall(frame({"op": "values", "rid": 1, "name": "samples", "query": QueryState().to_wire()}))
        frames: list[dict[str, Any]] = []
        while not frames or "page" in frames[-1]:
            reply = read_frame(sock)
            assert reply is not None, "the daemon closed the connection mid-stream"
            frames.append(reply)
            if "page" in reply:
                sock.sendall(frame({"op": "next", "rid": 1}))
        sock.sendall(frame({"op": "next", "rid": 1}))  # as a client that missed the error would
        sock.shutdown(socketlib.SHUT_WR)
        while (reply := read_frame(sock)) is not None:
            frames.append(reply)
    finally:
        sock.close()
    assert all(item.get("rid") == 1 for item in frames), frames
    ends = [item for item in frames if "page" not in item]
    assert len(ends) == 1, ends
    assert ends[0]["ok"] is False and ends[0]["error"]["code"] == "too_large"
    assert "'b-huge'" in ends[0]["error"]["message"]
    assert [len(item["page"]) for item in frames if "page" in item] == [1]  # a-small, then the error
    daemon.stop()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_values_from_the_file_hold_a_page_budget_of_rows_not_32(engine: str, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    """``Aggregator.values`` read its rows 32 at a time whatever their size: with samples of 20 MB a
    fit that held 640 MB. It reads them within the daemon's page budget (8 MiB), one at least, so
    here, 40 fits of 1 MB samples, it holds a few MB however many fits there are (tracemalloc sees
    every row's bytes, from sqlite3 and from psycopg alike)."""
    import tracemalloc

    from lensd.store.pgwriter import PgBatchWriter

    target: Any = request.getfixturevalue("pg_url") if engine == "postgresql" else tmp_path / "big.sqlite"
    records = [big_record(f"fit-{i:02d}", 8_000, 16) for i in range(40)]  # 1 MB of parameters each

    async def write() -> list[Any]:
        writer: Any = await (PgBatchWriter.open(target) if engine == "postgresql" else BatchWriter.open(target))
        try:
            return [outcome for chunk in range(0, 40, 8) for outcome in
                    await writer.apply([op_from_request("submit", {"record": item})
                                        for item in records[chunk:chunk + 8]])]
        finally:
            await writer.close()

    assert anyio.run(write) == ["applied"] * 40
    agg = lensd.Aggregator.from_database(target if engine == "postgresql" else str(target))
    try:
        tracemalloc.start()
        try:
            shapes = [samples.parameters.shape for samples in agg.values("samples")]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        agg.close()
    assert shapes == [(8_000, 16)] * 40
    assert peak < 24 * 2**20, f"values('samples') held {peak / 2**20:.0f} MB at once"


def test_a_daemon_page_fetches_by_its_largest_row_not_the_mean() -> None:
    """The Pager sized its next fetch by the mean row of the last: 14 small rows and one of 8 MiB
    made room for 16 more rows, which, all of 8 MiB, were 128 MiB fetched (and held) at once."""
    from lensd.daemon.reads import Pager

    big = 8 * 2**20
    rows = [(i, b"x" * (big if i >= 15 else 10)) for i in range(56)]
    fetched: list[int] = []  # the bytes of each fetch
    taken = 0

    async def fetch(n: int) -> list[Any]:
        nonlocal taken
        batch = rows[taken:taken + n]
        taken += len(batch)
        fetched.append(sum(len(blob) for _, blob in batch))
        return batch

    async def read() -> list[int]:
        pager, seen = Pager(fetch, 16, "row", big), list[int]()
        while not pager.exhausted:
            seen.extend(item[0] for item in await pager.next_page())
        return seen

    assert anyio.run(read) == list(range(56))
    assert max(fetched) <= 2 * big, f"fetches of {[n // 2**20 for n in fetched]} MiB"
