"""The paged-stream rules (wire/paging.py), without sockets: one credit per request and per
``next``, cancel answered at once, and what a client does with each frame; then the same rules
kept by a real daemon whose rows are large: pages stop at a byte budget (always one row at
least)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import numpy as np
import pytest
from conftest import DaemonProcess

import lensd
from lensd.domain.samples import Samples
from lensd.errors import LensdError, ProtocolError
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
