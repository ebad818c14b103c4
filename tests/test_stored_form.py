"""Samples that arrive in their stored form are stored as the bytes that arrived (no unpack and
pack again), and only then: anything else is packed as before, and the bytes kept are always
those of the value the decoder kept."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from lensd.domain.records import validate_record
from lensd.domain.samples import Samples
from lensd.store.batchplan import samples_payload
from lensd.wire import codec, protocol


def _samples(n: int = 5, dtype: Any = np.float64) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {"paths": ["a.x", "b.y"], "parameters": rng.normal(size=(n, 2)).astype(dtype),
            "log_likelihood": rng.normal(size=n).astype(dtype), "log_prior": np.zeros(n, dtype),
            "weight": np.ones(n, dtype)}


def _received(message: dict[str, Any]) -> dict[str, Any]:
    (decoded,) = protocol.FrameDecoder().feed(protocol.encode_frame(message))
    return decoded


def test_samples_in_stored_form_keep_the_bytes_that_arrived() -> None:
    samples = _samples()
    decoded = _received(protocol.request("submit", 1, record={"id": "f", "status": "completed",
                                                              "samples": samples}))
    received = decoded["record"]["samples"]
    assert isinstance(received, codec.Received)
    assert received.packed == codec.pack(samples)
    record = validate_record(decoded["record"])
    assert record.samples is not None and record.samples.packed is received.packed
    assert samples_payload(record.samples) is received.packed
    assert samples_payload(record.samples) == codec.pack(Samples.from_wire(samples).to_wire())


def test_progress_samples_keep_their_bytes_too() -> None:
    samples = _samples()
    decoded = _received(protocol.request("progress", 2, id="f", seq=1, samples=samples))
    assert isinstance(decoded["samples"], codec.Received)
    assert Samples.from_wire(decoded["samples"]).packed == codec.pack(samples)


def test_samples_in_another_form_are_packed_in_the_stored_form() -> None:
    without_weight = {key: value for key, value in _samples().items() if key != "weight"}
    for different in (without_weight, _samples(dtype=np.float32)):
        decoded = _received(protocol.request("submit", 3, record={"id": "f", "status": "completed",
                                                                  "samples": different}))
        samples = validate_record(decoded["record"]).samples
        assert samples is not None and samples.packed is None
        stored = codec.unpack(samples_payload(samples))
        assert stored["parameters"].dtype == np.float64 and set(stored) == {
            "paths", "parameters", "log_likelihood", "log_prior", "weight"}


def test_a_key_sent_twice_keeps_no_bytes() -> None:
    """msgpack keeps the last of two equal keys; the bytes must never be the other one's."""
    first, second = codec.pack(_samples(3)), codec.pack(_samples(4))
    record = b"\x83" + msgpack.packb("id") + msgpack.packb("f") + msgpack.packb("status") + \
        msgpack.packb("completed") + msgpack.packb("samples") + first
    body = b"\x84" + msgpack.packb("op") + msgpack.packb("submit") + msgpack.packb("rid") + \
        msgpack.packb(4) + msgpack.packb("record") + record + msgpack.packb("record") + \
        record.replace(first, second)
    (decoded,) = protocol.FrameDecoder().feed(protocol.HEADER.pack(len(body)) + body)
    assert len(decoded["record"]["samples"]["log_likelihood"]) == 4
    assert not isinstance(decoded["record"]["samples"], codec.Received)
    assert codec.span(body, ("record", "samples")) is None
