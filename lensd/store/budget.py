"""Rows fetched a batch at a time within a byte budget: the sync ``Aggregator``'s PostgreSQL reads
(``PgSource.stream``) and the daemon's pages (``daemon.reads.Pager``).

A batch of ``page`` rows is cheap when rows are small and ruinous when they are samples: 32 rows of
20 MB are 640 MB held at once. So the first batch is one row, and each next holds as many rows as
``budget`` has room for at the size of the largest row of the batch before (``next_batch``), never
more than ``page``: a reader holds about the budget and one row, whatever the rows hold. (A
sqlite file needs no batches: ``reader.stream`` steps its cursor a row at a time, as sqlite3 does
whatever it is asked.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TypeVar

R = TypeVar("R", bound=Sequence[object])
PAGE_BYTES: Final = 8 * 2**20  # a batch's (and a daemon page's) byte budget


def wire_size(item: object) -> int:
    """An upper bound on the msgpack size of one row or page item (a row's values, a fit or job
    map): strings and blobs by their length plus a header, anything else 9 bytes. Iterative: a
    stored job map nests as deep as it likes."""
    total, pending = 0, [item]
    while pending:
        value = pending.pop()
        if isinstance(value, (bytes, bytearray, memoryview)):
            total += len(value) + 5
        elif isinstance(value, str):
            total += (len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))) + 5
        elif isinstance(value, dict):
            total += 5
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            total += 5
            pending.extend(value)
        else:
            total += 9
    return total


def flat_size(row: Sequence[object]) -> int:
    """``wire_size`` of a database row, a flat tuple of scalars, at a quarter of its cost (a str
    counted by its characters): what ``paced`` measures each row of a driver's batch with."""
    return sum(len(value) + 5 if isinstance(value, (str, bytes, bytearray, memoryview)) else 9 for value in row)


def next_batch(rows_left: int, bytes_left: int, largest: int) -> int:
    """How many rows to fetch next: one while no row was seen (``largest`` 0), else as many as
    ``bytes_left`` holds at ``largest`` bytes a row, one at least, ``rows_left`` at most."""
    return min(rows_left, max(1, bytes_left // largest)) if largest else 1


def paced(fetch: Callable[[int], Sequence[R]], page: int, budget: int = PAGE_BYTES) -> Iterator[R]:
    """The rows ``fetch(n)`` gives, ``n`` by ``next_batch`` (each row measured by ``flat_size``): the
    batch's rows are let go of as they are handed on, and the next batch is fetched only when the
    last is consumed."""
    largest = 0
    while True:
        want = next_batch(page, budget, largest)
        batch = deque(fetch(want))
        got = len(batch)
        if got:
            largest = max(1, max(map(flat_size, batch)))
        while batch:
            yield batch.popleft()
        if got < want:
            return
