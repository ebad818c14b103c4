"""A model that arrives as bytes sent before is neither checked nor walked again (its walk is
remembered by those bytes), and the record stored is the one the model's first arrival gave."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from records_factory import lens_model, record

from lensd.domain import modeltree
from lensd.domain.records import validate_record
from lensd.errors import InvalidRecord
from lensd.store.batchplan import prepare
from lensd.store.writeops import Upsert
from lensd.wire import codec, protocol


def _received(message: dict[str, Any]) -> dict[str, Any]:
    (decoded,) = protocol.FrameDecoder().feed(protocol.encode_frame(message))
    return decoded


def _submitted(data: dict[str, Any]) -> dict[str, Any]:
    return _received(protocol.request("submit", 1, record=data))["record"]  # type: ignore[no-any-return]


def test_a_received_model_keeps_its_bytes() -> None:
    model = lens_model()
    decoded = _submitted(record(1, model=model))
    assert isinstance(decoded["model"], codec.Received)
    assert decoded["model"].packed == codec.pack(model) and decoded["model"] == model


def test_the_same_model_again_stores_what_it_stored_the_first_time() -> None:
    """Every part of a record that depends on its model, sent twice, and as a plain dict."""
    data = record(2, n_samples=50)
    plain = prepare(Upsert(validate_record(data)))
    for _ in range(3):
        received = validate_record(_submitted(data))
        assert received.instance == validate_record(data).instance
        assert received.median == validate_record(data).median
        assert received.summary == validate_record(data).summary
        assert prepare(Upsert(received)) == plain


def test_a_bad_model_is_refused_every_time() -> None:
    bad = {"type": "collection", "arguments": {"x": {"type": "Constant", "value": b"\x00"}}}
    for _ in range(2):
        with pytest.raises(InvalidRecord, match="model holds a bytes"):
            validate_record(_submitted(record(3, model=bad)))


def test_a_model_whose_walk_is_remembered_gives_copies() -> None:
    model = _submitted(record(4))["model"]
    constants = modeltree.constants(model)
    constants["galaxies.lens.redshift"] = 99.0
    modeltree.prior_paths(model).clear()
    assert modeltree.constants(model)["galaxies.lens.redshift"] == 0.5
    assert modeltree.prior_paths(model) == modeltree.prior_paths(lens_model())


def test_spans_leave_out_a_name_sent_twice() -> None:
    model, samples = codec.pack(lens_model()), codec.pack(record(5)["samples"])
    inner = (b"\x84" + msgpack.packb("id") + msgpack.packb("f") + msgpack.packb("model") + model
             + msgpack.packb("samples") + samples + msgpack.packb("model") + model)
    body = b"\x81" + msgpack.packb("record") + inner
    found = codec.spans(body, ("record",), ("model", "samples"))
    assert set(found) == {"samples"}
    start, end = found["samples"]
    assert body[start:end] == samples
    assert codec.span(body, ("record", "model")) is None
