"""The contact file: where a running daemon can be reached, for clients on any node.

The daemon writes it at start (``--contact``, default ``$LENSD_CONTACT``, else
``~/.lensd/contact.json``), atomically (a temporary file in the same folder, fsynced, renamed), and
removes it at a clean stop if it still names this daemon. It holds the host, the TCP addresses, the
Unix socket, the pid, the start time, the spool folder, ``--lost-after`` (so a job that reaches only
the spool knows its heartbeat period) and the TLS certificate's fingerprint; never the secret.

A contact file outlives a daemon killed with SIGKILL or a lost node. It is *stale* when it names a
pid that is not running on this host, or when nothing answers at any address it names; clients
report that rather than a bare "connection refused".
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from lensd.errors import LensdError

CONTACT_VERSION: Final = 1
MAX_CONTACT_BYTES: Final = 64 * 1024


def default_contact_file() -> Path:
    explicit = os.environ.get("LENSD_CONTACT")
    return Path(explicit) if explicit else Path.home() / ".lensd" / "contact.json"


def resolve_contact_file(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else default_contact_file()


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Contact:
    """What one contact file says."""

    host: str
    pid: int
    started_at: float
    socket: str | None = None
    tcp: tuple[tuple[str, int], ...] = ()
    spool: str | None = None
    lost_after: float | None = None
    tls_fingerprint: str | None = None
    database: str | None = None
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["tcp"] = [{"host": host, "port": port} for host, port in self.tcp]
        return {"contact_version": CONTACT_VERSION, **data}

    @property
    def on_this_host(self) -> bool:
        return self.host == this_host()

    def stale_reason(self) -> str | None:
        """Why this contact cannot be a live daemon, when that is known without connecting."""
        if not self.on_this_host:
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return f"pid {self.pid} on {self.host} is not running"
        except PermissionError:
            return None  # alive, another user's
        return None


def _parse(data: Any, path: Path) -> Contact:
    def bad(why: str) -> LensdError:
        return LensdError(f"the contact file {path} is not usable ({why}); remove it or restart the daemon")

    if not isinstance(data, dict) or data.get("contact_version") != CONTACT_VERSION:
        raise bad("not a lensd contact file of version 1")
    host, pid, started = data.get("host"), data.get("pid"), data.get("started_at")
    if not isinstance(host, str) or not isinstance(pid, int) or not isinstance(started, int | float):
        raise bad("host, pid or started_at missing")
    tcp = []
    for entry in data.get("tcp") or []:
        if not (isinstance(entry, dict) and isinstance(entry.get("host"), str)
                and isinstance(entry.get("port"), int) and 0 < entry["port"] < 65536):
            raise bad(f"a tcp entry is not {{host, port}}: {entry!r}")
        tcp.append((entry["host"], entry["port"]))

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value else None

    lost_after = data.get("lost_after")
    return Contact(host=host, pid=pid, started_at=float(started), socket=text("socket"), tcp=tuple(tcp),
                   spool=text("spool"), tls_fingerprint=text("tls_fingerprint"), database=text("database"),
                   lost_after=float(lost_after) if isinstance(lost_after, int | float) else None,
                   version=text("version") or "")


def read(path: Path) -> Contact | None:
    """The contact file's content; None when there is none; LensdError when it is malformed."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONTACT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LensdError(f"cannot read the contact file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    return _parse(data, path)


def write(path: Path, contact: Contact) -> None:
    """Replace the contact file atomically, mode 0600 (its folder made 0700 when new)."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
    temporary = folder / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(contact.to_json(), indent=2).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def remove(path: Path, pid: int) -> None:
    """Remove the contact file if it still names ``pid`` (a newer daemon's file is left alone)."""
    try:
        current = read(path)
    except LensdError:
        return
    if current is not None and current.pid == pid and current.on_this_host:
        try:
            path.unlink()
        except OSError:
            pass
