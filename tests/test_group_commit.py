"""The group committer's batches, on a real writer and sqlite file: a small batch after a big one
waits for the senders just answered (the 1, 63, 1, 63 lockstep at K = 64, docs/performance.md
"ninth pass"), a lone sender's writes never wait, and closing ends a wait at once.

Arrivals are ordered by ``wait_all_tasks_blocked`` (the committer is parked in its wait), and the
wait is given a bound (``max_linger``) no test reaches, so no clock decides a batch.
"""

from __future__ import annotations

from pathlib import Path

import anyio
from records_factory import record

from lensd.daemon.committer import GroupCommitter, Outcomes
from lensd.domain.records import validate_record
from lensd.store.writeops import Upsert
from lensd.store.writer import BatchWriter

NEVER = 600.0  # seconds: a wait that ends only by its batch filling, or by close


def _op(i: int) -> Upsert:
    return Upsert(validate_record(record(i, n_samples=10)))


class _Answers:
    """Outcomes as the committer hands them out, and an event per expected count."""

    def __init__(self) -> None:
        self.got: list[Outcomes] = []
        self._wanted = 0
        self._reached = anyio.Event()

    def __call__(self, outcomes: Outcomes) -> None:
        self.got.append(outcomes)
        if len(self.got) >= self._wanted:
            self._reached.set()

    async def until(self, count: int) -> None:
        self._wanted = count
        if len(self.got) < count:
            self._reached = anyio.Event()
            await self._reached.wait()


async def _queue(committer: GroupCommitter, answers: _Answers, keys: range) -> None:
    for i in keys:
        await committer.queue([_op(i)], answers)


def test_a_small_batch_after_a_big_one_waits_for_half_of_it(tmp_path: Path) -> None:
    anyio.run(_a_small_batch_after_a_big_one_waits_for_half_of_it, tmp_path, backend="asyncio")


async def _a_small_batch_after_a_big_one_waits_for_half_of_it(tmp_path: Path) -> None:
    writer = await BatchWriter.open(tmp_path / "db.sqlite")
    committer = GroupCommitter(writer, max_linger=NEVER)
    answers = _Answers()
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(committer.run)
            await _queue(committer, answers, range(8))  # queued before the committer runs: one batch
            await answers.until(8)
            await _queue(committer, answers, range(8, 9))  # the first sender answered writes again
            await anyio.wait_all_tasks_blocked()  # the committer now holds it, waiting for more
            await _queue(committer, answers, range(9, 12))
            await answers.until(12)
            committer.close()
        assert committer.batch_sizes == [8, 4]  # without the wait: [8, 1, 3]
        assert all(outcome == ["applied"] for outcome in answers.got)
        assert writer.records == 12
    finally:
        await writer.close()


def test_a_lone_sender_never_waits(tmp_path: Path) -> None:
    anyio.run(_a_lone_sender_never_waits, tmp_path, backend="asyncio")


async def _a_lone_sender_never_waits(tmp_path: Path) -> None:
    writer = await BatchWriter.open(tmp_path / "db.sqlite")
    committer = GroupCommitter(writer, max_linger=NEVER)  # a wait would never end: the test would hang
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(committer.run)
            for i in range(5):
                assert await committer.submit([_op(i)]) == ["applied"]
            committer.close()
        assert committer.batch_sizes == [1, 1, 1, 1, 1]
    finally:
        await writer.close()


def test_closing_ends_the_wait_and_commits_what_waited(tmp_path: Path) -> None:
    anyio.run(_closing_ends_the_wait_and_commits_what_waited, tmp_path, backend="asyncio")


async def _closing_ends_the_wait_and_commits_what_waited(tmp_path: Path) -> None:
    writer = await BatchWriter.open(tmp_path / "db.sqlite")
    committer = GroupCommitter(writer, max_linger=NEVER)
    answers = _Answers()
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(committer.run)
            await _queue(committer, answers, range(6))
            await answers.until(6)
            await _queue(committer, answers, range(6, 7))
            await anyio.wait_all_tasks_blocked()
            committer.close()  # shutting down: what waits is committed now, not after the bound
            await answers.until(7)
        assert committer.batch_sizes == [6, 1]
        assert answers.got[-1] == ["applied"]
    finally:
        await writer.close()
