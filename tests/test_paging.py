"""The paged-stream rules (wire/paging.py), without sockets: one credit per request and per
``next``, cancel answered at once, and what a client does with each frame."""

from __future__ import annotations

import pytest

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
