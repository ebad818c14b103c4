"""Serving the dashboard: ``lensd web`` on its own, or inside the daemon (``lensd start --web``).

The listening socket is bound and listening before the URL is printed, so the URL works the
moment it appears. uvicorn serves on the running event loop (anyio on asyncio, as the daemon);
inside the daemon it leaves the signals to the daemon, which stops it with everything else.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from lensd.errors import LensdError
from lensd.settings import database
from lensd.web.auth import check_bind, new_token

DEFAULT_BIND = "127.0.0.1:8321"


@dataclass(frozen=True)
class WebOptions:
    bind: str = DEFAULT_BIND
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_bind: bool = False


def split_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8321`` for IPv6) as host and port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise LensdError(f"--bind takes HOST:PORT, such as 127.0.0.1:8321, not {text!r}")
    return host.strip("[]"), int(port)


def listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise LensdError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _quiet_server(config: Any) -> Any:
    """A uvicorn server that leaves signal handling to its host (the daemon or ``lensd web``)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


async def serve(db: Path | str, options: WebOptions, announce: bool = True, *,
                task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the dashboard of the database ``db`` until cancelled.

    The URL with its token is printed once (``announce``) or handed to ``task_status`` (the
    daemon prints it after its ready line). A refused bind raises before anything is served.
    """
    import uvicorn

    from lensd.web.app import make_app
    from lensd.web.data import LocalSource

    host, port = split_bind(options.bind)
    tls = options.tls_cert is not None and options.tls_key is not None
    if (options.tls_cert is None) != (options.tls_key is None):
        raise LensdError("TLS needs both a certificate and its key")
    warning = check_bind(host, tls, options.insecure_bind)
    source = LocalSource(db)
    token = new_token()
    try:
        sock = listen(host, port)
    except BaseException:
        source.close()
        raise
    try:
        config = uvicorn.Config(make_app(source, token, secure_cookie=tls), log_level="warning", access_log=False,
                                lifespan="off", ssl_certfile=options.tls_cert if tls else None,
                                ssl_keyfile=options.tls_key if tls else None)
        server = _quiet_server(config)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"{'https' if tls else 'http'}://{shown}:{bound_port}/?token={token}"
        if warning:
            print(warning, file=sys.stderr, flush=True)
        if announce:
            print(f"lensd web: {url}", flush=True)
        task_status.started(url)
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        source.close()


def database_of(address: str) -> Path | str:
    """The database of the daemon at ``address``, which the dashboard reads directly (read-only,
    never blocking the daemon's writer): a sqlite file must be on this machine, as the daemon's disk
    is; a PostgreSQL URL is read wherever the server answers (its password, masked in the daemon's
    status, comes from ``~/.pgpass`` or ``PGPASSWORD``)."""
    from lensd.client.connection import Client

    async def ask() -> str:
        client = await Client.open(address)
        try:
            return str((await client.request("status"))["status"]["database"])
        finally:
            await client.aclose()

    path = database(anyio.run(ask, backend="asyncio"))
    if isinstance(path, str):
        return path
    if not path.is_file():
        raise LensdError(f"the daemon's database {path} is not on this machine: run lensd web on the "
                         "daemon's node, or start the daemon with --web")
    return path


def run(db: Path | str, options: WebOptions) -> None:
    """``lensd web``: serve until Ctrl-C or SIGTERM."""
    import signal

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(serve, db, options)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    group.cancel_scope.cancel()
                    return

    try:
        anyio.run(main, backend="asyncio")
    except* LensdError as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
