"""The daemon's group committer: many senders, one batch per commit.

Submissions wait in a bounded memory stream, and the committer drains whatever is waiting (up to
``batch_max``; with ``batch_ms`` > 0 it also waits that long after the first for more), has the
writer (``BatchWriter``, or ``PgBatchWriter`` on PostgreSQL) commit them, then answers every
waiter. A flood makes senders wait instead of growing memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from lensd.errors import LensdError, StorageError
from lensd.store.batchplan import Prepared, prepare
from lensd.store.writeops import AdminOp, Delete, Op, Tag
from lensd.store.writer import Writer

log = logging.getLogger("lensd.writer")


Outcomes = list[str | LensdError]


@dataclass
class _Submission:
    ops: list[Op | AdminOp]
    prepared: list[Prepared | None]
    answer: Callable[[Outcomes], None] | None = None  # called with the outcomes (``queue``)
    done: anyio.Event | None = None  # set once they are in (``submit``)
    outcomes: Outcomes = field(default_factory=list)


def _prepare(op: Op | AdminOp) -> Prepared | None:
    if isinstance(op, (Delete, Tag)):
        return None
    try:
        return prepare(op)
    except Exception:  # planned again in the batch, which reports the failure as it always did
        return None


class GroupCommitter:
    """The queue in front of the writer: many senders, one batch per commit."""

    def __init__(self, writer: Writer, batch_max: int = 512, batch_ms: float = 0.0,
                 queue_max: int = 4096) -> None:
        self.writer = writer
        self.batch_max = batch_max
        self.batch_ms = batch_ms
        send, receive = anyio.create_memory_object_stream[_Submission](queue_max)
        self._send: MemoryObjectSendStream[_Submission] = send
        self._receive: MemoryObjectReceiveStream[_Submission] = receive
        self.batch_sizes: list[int] = []
        self.committed_at: list[tuple[float, int]] = []

    @property
    def queue_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    async def submit(self, ops: Sequence[Op | AdminOp]) -> Outcomes:
        """Queue ``ops`` and wait until they are committed (or failed).

        Their record-only rows are worked out here (``rows.prepare``), on the event loop, while
        the writer thread commits the batch before.
        """
        item = _Submission(list(ops), [_prepare(op) for op in ops], done=anyio.Event())
        await self._put(item)
        assert item.done is not None
        await item.done.wait()
        return item.outcomes

    async def queue(self, ops: Sequence[Op | AdminOp], answer: Callable[[Outcomes], None]) -> None:
        """Queue ``ops``; once they are committed (or failed), ``answer`` is called with their
        outcomes, on the event loop, by the committer.

        What a connection uses for its requests: no task waits for each write (docs/performance.md,
        "Daemon ingest at K = 64, third pass"). Returns once queued; waits only while the queue is
        full.
        """
        await self._put(_Submission(list(ops), [_prepare(op) for op in ops], answer=answer))

    async def _put(self, item: _Submission) -> None:
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            await self._send.send(item)

    def close(self) -> None:
        """Stop taking submissions; ``run`` commits what is queued, then returns."""
        self._send.close()

    async def run(self) -> None:
        """Commit batches until ``close`` is called and the queue is empty.

        A batch is what waits when the writer is free (natural group commit): under load, what
        queued while the previous batch committed; alone, one request at once. ``batch_ms`` > 0
        also lingers that long after the first for more (a lone write then pays that wait).
        """
        async with self._receive:
            async for first in self._receive:
                batch = [first]
                size = len(first.ops)
                deadline = anyio.current_time() + self.batch_ms / 1000 if self.batch_ms > 0 else None
                while size < self.batch_max:
                    item = self._waiting()
                    if item is None and deadline is not None:
                        item = await self._next_before(deadline)
                    if item is None:
                        break
                    batch.append(item)
                    size += len(item.ops)
                await self._commit(batch)

    def _waiting(self) -> _Submission | None:
        """The next submission already queued, if any."""
        try:
            return self._receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return None

    async def _next_before(self, deadline: float) -> _Submission | None:
        """The next submission, if one arrives before ``deadline``."""
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            try:
                return await self._receive.receive()
            except anyio.EndOfStream:
                return None
        return None

    async def _commit(self, batch: list[_Submission]) -> None:
        ops = [op for item in batch for op in item.ops]
        prepared = [ready for item in batch for ready in item.prepared]
        with anyio.CancelScope(shield=True):
            try:
                outcomes = await self.writer.apply(ops, prepared)
            except Exception as exc:  # never leave a waiter hanging
                log.exception("batch of %d failed", len(ops))
                error = exc if isinstance(exc, LensdError) else StorageError(str(exc))
                outcomes = [error] * len(ops)
        position = 0
        for item in batch:
            item.outcomes = outcomes[position:position + len(item.ops)]
            position += len(item.ops)
            if item.done is not None:
                item.done.set()
            if item.answer is not None:
                try:
                    item.answer(item.outcomes)
                except Exception:  # one sender's failure must not leave the others unanswered
                    log.exception("answering a write failed")
        self.batch_sizes.append(len(ops))
        del self.batch_sizes[:-1000]
        self.committed_at.append((time.monotonic(), len(ops)))
        cutoff = time.monotonic() - 60
        while self.committed_at and self.committed_at[0][0] < cutoff:
            self.committed_at.pop(0)

    def stats(self) -> dict[str, Any]:
        sizes = self.batch_sizes
        recent = sum(n for _, n in self.committed_at)
        return {"queue_depth": self.queue_depth,
                "mean_batch": (sum(sizes) / len(sizes)) if sizes else 0.0,
                "records_per_s": recent / 60.0,
                "batches": self.writer.batches, "records": self.writer.records}
