"""Reader processes for ``lensd ingest``: forked workers that read folders, in folder order.

Reading a folder (parsing samples.csv above all) is most of an ingest's CPU, so from
``PARALLEL_FROM`` folders on, one process per CPU reads them. Each worker is forked with the whole
list of folders (and the stored signatures) in its memory, takes every ``count``-th one, and
writes each result to its own pipe as one frame: a 4-byte length, then the msgpack
(``lensd.wire.codec``) of ``[kind, value]``. The parent reads the pipes in turn, so results come
in folder order with no task messages at all. Nothing is pickled either way (a
``ProcessPoolExecutor`` pickled a call per folder and its answer: ~0.16 ms of CPU a folder,
docs/performance.md "Folder ingest, third pass"). A full pipe holds a worker back, so memory
stays flat however many folders there are.

Forking copies whatever locks other threads hold: ``start_readers`` refuses (returns None) when this
process runs any thread but the main one, and the caller reads in-process instead.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

from lensd.errors import LensdError
from lensd.ingest.pyautofit import FolderFailure
from lensd.wire import codec

PARALLEL_FROM: Final = 200  # folders; fewer are read in-process, faster than forking readers
_LENGTH = struct.Struct("<I")
_PIPE_SIZE: Final = 1 << 20  # what a pipe may buffer (Linux's default cap): a few folders ahead
Job = tuple[Path, Path]  # (the folder, the root it was found under)
Load = Callable[[Path, Path, dict[Path, Path | None]], tuple[str, Any]]


class Readers:
    """``count`` forked workers running ``load`` over ``jobs``; ``results()`` in job order."""

    def __init__(self, jobs: Sequence[Job], load: Load, count: int) -> None:
        self._jobs, self._count = jobs, count
        self._pids: list[int] = []
        self._streams: list[BinaryIO] = []
        try:
            for index in range(count):
                read_end, write_end = os.pipe()
                _grow(write_end)
                pid = os.fork()
                if pid == 0:  # the worker: never returns
                    os.close(read_end)
                    for stream in self._streams:
                        stream.close()
                    _work(jobs[index::count], load, write_end)
                os.close(write_end)
                self._pids.append(pid)
                self._streams.append(open(read_end, "rb", buffering=_PIPE_SIZE))  # noqa: SIM115 - closed by close()
        except BaseException:
            self.close()
            raise

    def results(self) -> Iterator[tuple[str, Any]]:
        """``load``'s answer for each job, in order; a job whose worker died is reported failed."""
        for index, (folder, _) in enumerate(self._jobs):
            stream = self._streams[index % self._count]
            head = stream.read(_LENGTH.size)
            body = stream.read(_LENGTH.unpack(head)[0]) if len(head) == _LENGTH.size else b""
            try:
                kind, *value = codec.unpack(body) if body else ["died"]
            except LensdError:
                kind = "died"
            if kind == "died":
                yield "failed", FolderFailure(str(folder), "the reader process ended before reading it "
                                              f"({self._ended(index)})")
            elif kind == "failed":
                yield kind, FolderFailure(*value)
            else:
                yield kind, value[0]

    def _ended(self, index: int) -> str:
        pid = self._pids[index % self._count]
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return "already reaped"
        if done == 0:
            return "it closed its pipe"
        self._pids[index % self._count] = -1
        return f"exit status {os.waitstatus_to_exitcode(status)}"

    def close(self) -> None:
        """Stop every worker (finished or not) and reap it."""
        for stream in self._streams:
            stream.close()  # a worker still writing gets EPIPE and exits
        for pid in self._pids:
            if pid > 0:
                try:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        self._pids, self._streams = [], []


def start_readers(jobs: Sequence[Job], load: Load, readers: int | None = None) -> Readers | None:
    """Workers reading ``jobs``, when there are enough of them and of CPUs to pay for forking;
    None (read in-process) when fewer, when fork is not available, or when threads run here."""
    count = readers if readers is not None else (os.cpu_count() or 1)
    if (count < 2 or len(jobs) < PARALLEL_FROM or threading.active_count() > 1
            or "fork" not in multiprocessing.get_all_start_methods()):
        return None
    return Readers(jobs, load, count)


def _grow(fd: int) -> None:
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if setsize is not None:
        try:
            fcntl.fcntl(fd, setsize, _PIPE_SIZE)
        except OSError:
            pass  # the system's cap is lower: the default pipe works, with more wake-ups


def _work(jobs: Sequence[Job], load: Load, fd: int) -> None:
    """The worker's whole life: each job's frame to ``fd``, then ``_exit`` (no cleanup of the
    parent's that it inherited runs here: atexit handlers, open connections, finally blocks)."""
    code = 1
    try:
        cache: dict[Path, Path | None] = {}  # the nearest fit above each folder, for all jobs
        with open(fd, "wb", buffering=_PIPE_SIZE) as out:
            for folder, root in jobs:
                kind, value = load(folder, root, cache)
                try:
                    body = codec.pack([kind, value.path, value.reason] if kind == "failed" else [kind, value])
                except LensdError as exc:  # a value msgpack cannot carry
                    body = codec.pack(["failed", str(folder), str(exc)])
                out.write(_LENGTH.pack(len(body)))
                out.write(body)
                out.flush()
        code = 0
    except BaseException:  # the parent reports the folders this worker left
        pass
    finally:
        os._exit(code)
