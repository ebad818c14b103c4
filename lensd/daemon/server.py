"""The daemon process: one task group that owns the database, the socket and the writer.

Start-up order matters for safety: first the exclusive lock on ``<db>.lock`` (a second daemon on
the same database is refused before it touches anything), then the writer, then the socket, and
only then "ready". Stopping runs the other way: stop accepting and reading requests, let every
write already received reach the committer, commit what is queued, answer every waiter, close.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import socket
import stat
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import ByteStream, SocketListener, TaskGroup, TaskStatus

from lensd import safefiles
from lensd._version import __version__
from lensd.client import contact
from lensd.client.connection import socket_answers
from lensd.daemon import flow, network
from lensd.daemon.committer import GroupCommitter
from lensd.daemon.connection import Connection
from lensd.daemon.network import Gate, turn_away
from lensd.daemon.reads import Reads, ReadService
from lensd.errors import AlreadyRunning, LensdError, innermost
from lensd.mounts import NETWORK_FILE_SYSTEMS, file_system_type, is_network_file_system  # noqa: F401 - re-exported
from lensd.settings import Database, Settings, shown, socket_path_problem
from lensd.store import writerlock
from lensd.store.writeops import MarkLost
from lensd.store.writers import open_writer

log = logging.getLogger("lensd.daemon")
THROUGHPUT_EVERY = 60.0  # seconds between the info-level throughput lines


def raise_open_file_limit() -> int:
    """Lift this process's soft limit on open files to its hard limit; returns the soft limit.

    Every connection holds a socket, so the default soft limit (often 1024) would cap the daemon
    below ``--max-connections`` long before memory does.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return int(soft)


def notify_systemd(message: str) -> None:
    """One sd_notify datagram (READY=1, STOPPING=1) when systemd asked for it via NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)


def _clear_socket_path(path: Path) -> None:
    """Make the socket's directory (mode 0700 when we create it) and remove a stale socket.

    Only a socket is ever removed: ``--socket notes.txt`` naming a regular file is refused.
    """
    safefiles.make_dirs(path.parent, safefiles.PRIVATE_DIR)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise LensdError(f"--socket {path} names an existing file that is not a socket; "
                         "lensd will not remove it: choose another path")
    if socket_answers(path):
        raise AlreadyRunning(f"a daemon already serves {path}")
    path.unlink()  # a stale socket left by a crash


async def bind_socket(path: Path) -> SocketListener:
    """Listen at ``path`` in a directory only its user can enter, mode 0600; never steal a live one."""
    _clear_socket_path(path)
    old_umask = os.umask(0o177)
    try:
        listener = await anyio.create_unix_listener(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return listener


class Daemon:
    """Everything one running daemon holds; connection handlers reach it for the writer and reads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.time()
        self.committer: GroupCommitter
        self.flow: flow.Shared
        self.reads: ReadService
        self._stop = anyio.Event()
        self.connections = 0
        self.database_path: Database = settings.db.resolve() if isinstance(settings.db, Path) else settings.db
        self.live: set[Connection] = set()
        self._drained = anyio.Event()
        self.extra_status: dict[str, Any] = {}
        self.web_url = ""
        self.gate: Gate | None = None
        self.contact_path = contact.resolve_contact_file(settings.contact)
        self.tcp: list[tuple[SocketListener, tuple[str, int]]] = []

    def request_stop(self) -> None:
        self._stop.set()

    async def status(self, own: int | None = None) -> dict[str, Any]:
        """``own``: the frame size of the status request asking, left out of ``in_flight_*``."""
        in_flight, mine = self.flow.in_flight, (0, 0) if own is None else (1, own)
        return {
            "pid": os.getpid(), "version": __version__, "uptime": time.time() - self.started,
            "database": shown(self.database_path), "database_bytes": await self.reads.size(),
            "socket": str(self.settings.socket),
            "connections": self.connections, "fits_by_status": await self.reads.fits_by_status(),
            "watched": [str(p) for p in self.settings.watch],
            "spool": str(self.settings.spool) if self.settings.spool else None,
            "lost_after": self.settings.lost_after, "durability": self.settings.durability,
            "tcp": [f"{h}:{p}" for _, (h, p) in self.tcp], "tls": bool(self.gate and self.gate.tls),
            "failed_handshakes": self.gate.failures if self.gate else 0, "held_back": self.flow.held_back,
            "reserved_frame_bytes": self.flow.partial.held, "in_flight_requests": in_flight.used_count - mine[0],
            "in_flight_bytes": in_flight.used_size - mine[1],
            **self.committer.stats(), **self.extra_status,
        }

    async def _handle(self, stream: ByteStream, gate: Gate | None = None) -> None:
        if self.connections >= self.settings.max_connections:
            await turn_away(stream, gate, self.settings.max_connections, self.settings.handshake_timeout)
            return
        self.connections += 1
        log.info("connection opened (%d open)", self.connections)
        try:
            if gate is None:
                await self._serve_connection(Connection(self, stream))
                return
            admitted = await gate.open(stream, seconds=self.settings.handshake_timeout)
            if admitted is not None:
                tcp_stream, peer = admitted
                await self._serve_connection(Connection(self, tcp_stream, gate, peer))
        finally:
            self.connections -= 1
            log.info("connection closed (%d open)", self.connections)

    async def _serve_connection(self, connection: Connection) -> None:
        self.live.add(connection)
        try:
            await connection.serve()
        except Exception:
            log.exception("a connection failed")
        finally:
            self.live.discard(connection)
            self._drained.set()
            self._drained = anyio.Event()

    async def _report_throughput(self) -> None:
        """Once a minute, at info, what was committed: the operator's throughput line (the daemon
        never logs a line per record)."""
        last = self.committer.writer.records if self.committer is not None else 0
        while True:
            await anyio.sleep(THROUGHPUT_EVERY)  # a period, not synchronisation
            if self.committer is None:
                continue
            records = self.committer.writer.records
            if records != last:
                stats = self.committer.stats()
                log.info("last minute: %d writes committed (%.1f/s, mean batch %.1f), %d connections, "
                         "%d queued", records - last, (records - last) / THROUGHPUT_EVERY, stats["mean_batch"],
                         self.connections, stats["queue_depth"])
            last = records

    async def _sweep_lost(self) -> None:
        """Mark running fits silent for ``lost_after`` as lost.

        The first sweep waits ``lost_after`` after start: while the daemon was down no heartbeat
        could arrive, so a fit is judged only on the silence the daemon itself has seen.
        """
        interval = max(0.2, min(30.0, self.settings.lost_after / 4))
        await anyio.sleep(self.settings.lost_after)  # a period, not synchronisation
        while True:
            await self.committer.submit([MarkLost(self.settings.lost_after)])
            await anyio.sleep(interval)  # a period between sweeps

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()  # handlers are installed: "ready" may now be said
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                self.request_stop()
                return

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        self.gate = network.make_gate(settings)  # first: a secret others can read stops us here
        problem = socket_path_problem(settings.socket)
        if problem is not None:
            raise LensdError(problem)
        # sqlite: one writer per file, the lock says who. PostgreSQL: several daemons may write one
        # database (pgwriter.py says how they agree), so there is no lock to take.
        db_file = settings.db if isinstance(settings.db, Path) else None
        lock = None if db_file is None else writerlock.acquire(db_file, settings.socket, settings.shared_group)
        try:
            self._check_spool()
            open_files = raise_open_file_limit()
            if settings.max_connections + 64 > open_files:
                log.warning("--max-connections %d is near the open-file limit %d: connections past it "
                            "wait to be accepted", settings.max_connections, open_files)
            self._check_database()
            async with AsyncExitStack() as stack:
                listener = await bind_socket(settings.socket)
                stack.push_async_callback(self._close_listener, listener)
                self.tcp = await network.bind_tcp(settings)
                for tcp_listener, _ in self.tcp:
                    stack.push_async_callback(tcp_listener.aclose)
                writer = await open_writer(settings.db, settings.durability, settings.max_db_mb)
                stack.push_async_callback(writer.close)
                self.committer = GroupCommitter(writer, settings.batch_max, settings.batch_ms)
                self.reads = await self._open_reads()
                self.flow = flow.Shared()
                stack.push_async_callback(self.reads.aclose)
                async with anyio.create_task_group() as root:
                    root.start_soon(self.committer.run)
                    await self._serve(listener, task_status)
                    self.committer.close()  # commit what is queued; run() then returns
        finally:
            if lock is not None and db_file is not None:
                writerlock.release(lock, db_file)

    def _check_database(self) -> None:
        """What a database's place makes unsafe or unavailable, said before serving."""
        where, settings = self.database_path, self.settings
        if isinstance(where, str):
            if settings.max_db_mb is not None:
                log.warning("--max-db-mb is a quota of sqlite files; PostgreSQL's are the server's to set")
            return
        if is_network_file_system(where.parent):
            log.warning("%s is on a network file system (%s): sqlite locking is not safe there; "
                        "put the database on local disk", settings.db, file_system_type(where.parent))

    async def _open_reads(self) -> ReadService:
        if isinstance(self.database_path, Path):
            return await Reads.open(self.database_path)
        from lensd.daemon.pgreads import PgReads

        return await PgReads.open(self.database_path)

    def _check_spool(self) -> None:
        """A spool any user may write to lets any user write fits: refused unless allowed."""
        spool = self.settings.spool
        if spool is None:
            return
        safefiles.make_dirs(spool, 0o770 if self.settings.shared_group else safefiles.PRIVATE_DIR)
        if safefiles.others_can_write(spool):
            if not self.settings.allow_open_spool:
                raise LensdError(f"the spool {spool} may be written by every user, who could then write "
                                 "any fit: chmod o-w it, or start with --allow-open-spool")
            log.warning("the spool %s may be written by every user (--allow-open-spool)", spool)

    async def _close_listener(self, listener: SocketListener) -> None:
        with anyio.CancelScope(shield=True):
            await listener.aclose()
        try:
            self.settings.socket.unlink()
        except OSError:
            pass

    async def _accept(self, listener: SocketListener, connections: TaskGroup, gate: Gate | None = None) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:  # out of file descriptors (EMFILE): keep serving who is here
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                                     errno.ECONNABORTED):
                    raise
                log.warning("cannot accept a connection: %s", exc)
                await anyio.sleep(0.1)  # back off until a connection closes and frees a descriptor
                continue
            connections.start_soon(self._handle, stream, gate)

    async def _start_services(self, group: TaskGroup) -> None:
        """Start the folder watchers and the spool reader that the settings ask for (without waiting
        for their catch-up scans: the daemon serves while they read). They run in the background
        group, so stopping the daemon cancels them; their watchfiles threads see that group's
        cancel scope through a ``StopFlag``."""
        from lensd.daemon.services import StopFlag  # loaded only when asked for: a lean start
        from lensd.daemon.spoolwatch import SpoolReader
        from lensd.daemon.watcher import Watcher

        settings = self.settings
        if settings.watch:
            group.start_soon(Watcher(self, group.cancel_scope).run)
        if settings.spool is not None:
            folder = settings.spool
            try:  # before "ready": clients may drop files the moment the daemon says it serves
                await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
            except OSError as exc:
                raise LensdError(f"cannot create the spool folder {folder}: {exc.strerror or exc}") from None
            group.start_soon(SpoolReader(self, folder, StopFlag(group.cancel_scope)).run)
        if settings.backup_every > 0 and isinstance(self.database_path, Path):
            from lensd.daemon.backups import Backups

            group.start_soon(Backups(self, self.database_path).run)
        else:  # off, or PostgreSQL: the server's own backups (pg_dump, base backups) apply
            self.extra_status["backup"] = {"every_minutes": 0}
        if settings.web is not None:
            self.web_url = await self._start_web(group)

    async def _start_web(self, group: TaskGroup) -> str:
        """The dashboard (``--web``) on the daemon's loop, reading the database read-only; its
        socket is bound (or refused) before the daemon says it is ready."""
        try:
            from lensd.web.serve import WebOptions, serve
        except ImportError as exc:
            raise LensdError(f"--web needs the web extra: pip install 'lensd[web]' ({exc.name} is missing)") from None
        settings = self.settings
        assert settings.web is not None
        options = WebOptions(settings.web, settings.web_tls_cert, settings.web_tls_key, settings.web_insecure_bind)
        url: str = await group.start(serve, self.database_path, options, False)
        self.extra_status["web"] = url.partition("?")[0]  # never the token
        return url

    async def _serve(self, listener: SocketListener, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as background:
            background.start_soon(self._sweep_lost)
            background.start_soon(self._report_throughput)
            await background.start(self._signals)
            await self._start_services(background)
            async with anyio.create_task_group() as connections:
                connections.start_soon(self._accept, listener, connections)
                for tcp_listener, _ in self.tcp:
                    connections.start_soon(self._accept, tcp_listener, connections, self.gate)
                network.publish_contact(self.contact_path, network.contact_of(
                    self.settings, self.started, [address for _, address in self.tcp], self.gate,
                    self.database_path))
                log.info("lensd %s serving %s on %s%s", __version__, shown(self.settings.db), self.settings.socket,
                         "".join(f" and tcp://{h}:{p}" for _, (h, p) in self.tcp))
                notify_systemd("READY=1")
                task_status.started()
                tcp = "".join(f" tcp {h}:{p}" for _, (h, p) in self.tcp)
                print(f"lensd ready: socket {self.settings.socket} database {shown(self.settings.db)}{tcp}",
                      flush=True)
                if self.web_url:
                    print(f"lensd web: {self.web_url}", flush=True)  # once, after the line launchers wait for
                await self._stop.wait()
                notify_systemd("STOPPING=1")
                await listener.aclose()  # no new connections
                for tcp_listener, _ in self.tcp:
                    await tcp_listener.aclose()
                contact.remove(self.contact_path, os.getpid())
                for connection in list(self.live):
                    connection.finish()  # stop reading; writes already received still get answers
                with anyio.move_on_after(self.settings.drain_timeout) as drain:
                    while self.live:
                        await self._drained.wait()
                if drain.cancelled_caught:
                    log.warning("%d connections did not finish in time", len(self.live))
                    connections.cancel_scope.cancel()
            background.cancel_scope.cancel()


def run_daemon(settings: Settings) -> None:
    """Run until stopped (blocking); LensdError for a refusal such as a second daemon."""
    try:
        anyio.run(Daemon(settings).run, backend="asyncio")
    except* LensdError as group:
        raise innermost(group) from None

