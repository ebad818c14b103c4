"""The errors lensd raises, one tree so callers can catch ``LensdError`` and nothing else.

    LensdError                      code "error",        exit 1
    ├── InvalidRecord               code "invalid",      exit 1   a record or event failed validation
    ├── QueryError                  code "query",        exit 1   a predicate cannot be built or compiled
    │   └── QuerySyntaxError        code "syntax",       exit 2   text of `lensd query` does not parse
    ├── ProtocolError               code "protocol",     exit 1   bad frame, bad hello, unknown op
    │   └── FrameTooLarge           code "too_large",    exit 1
    ├── StorageError                code "storage",      exit 1   sqlite or the file system failed
    │   ├── StorageFull             code "full",         exit 1   disk full, or past --max-db-mb
    │   ├── DatabaseLocked          code "locked",       exit 1   another process holds sqlite's lock
    │   └── UnsupportedDatabase     code "schema",       exit 1   not a lensd database, or a newer schema
    ├── IngestError                 code "ingest",       exit 1   a PyAutoFit folder cannot be read
    ├── DaemonError                 code "daemon",       exit 1   the daemon answered with an error
    ├── AlreadyRunning              code "running",      exit 1   another daemon holds the database
    ├── Busy                        code "busy",         exit 1   the daemon refused a connection (cap)
    ├── MissingExtra                code "extra",        exit 1   an optional dependency is not installed
    ├── AuthenticationFailed        code "auth",         exit 1   a TCP handshake failed (secret, TLS)
    ├── ClientClosed                code "closed",       exit 1   a job client used after it was closed
    ├── ConnectionBusy              code "conn_busy",    exit 1   another request held the connection too long
    └── DaemonUnavailable           code "unavailable",  exit 3   nothing answers on the socket

    LensdWarning (a UserWarning, not an error)                       something is likely a mistake
    └── NoSuchName                                                   a query name no fit has

Each class carries the wire ``code`` used in error replies (SPEC §6) and the CLI ``exit_code``
(SPEC §5), so the boundaries convert errors without a lookup table of their own. sqlite3 and
OSError exceptions become these in one place, ``lensd.store.sqlite_errors`` (by sqlite's error
code, never by the text of its message). Warnings are not errors: the Python API warns
(``warnings.warn``, once per name) where the CLI prints a note on stderr; neither raises.
"""

from __future__ import annotations

from typing import ClassVar


class LensdError(Exception):
    """Base of every error lensd raises on purpose."""

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1


class InvalidRecord(LensdError):
    code = "invalid"


class QueryError(LensdError):
    code = "query"


class QuerySyntaxError(QueryError):
    """A text expression does not parse; ``text`` and ``position`` let the CLI draw a caret."""

    code = "syntax"
    exit_code = 2

    def __init__(self, message: str, text: str = "", position: int = 0) -> None:
        super().__init__(message)
        self.text = text
        self.position = position

    def pointed(self) -> str:
        """The message, the expression and a caret under the problem, for a terminal."""
        return f"{self.args[0]}\n  {self.text}\n  {' ' * self.position}^"


class ProtocolError(LensdError):
    code = "protocol"


class FrameTooLarge(ProtocolError):
    code = "too_large"


class StorageError(LensdError):
    code = "storage"


class StorageFull(StorageError):
    """Nothing was written: the disk is full, or the database reached its --max-db-mb quota."""

    code = "full"


class DatabaseLocked(StorageError):
    """sqlite's lock is held by another process (a second writer, a long read transaction)."""

    code = "locked"


class UnsupportedDatabase(StorageError):
    code = "schema"


class IngestError(LensdError):
    code = "ingest"


class DaemonError(LensdError):
    """An error reply from the daemon; ``remote_code`` is the code it sent."""

    code = "daemon"

    def __init__(self, message: str, remote_code: str = "error") -> None:
        super().__init__(message)
        self.remote_code = remote_code


class AlreadyRunning(LensdError):
    code = "running"


class Busy(LensdError):
    code = "busy"


class MissingExtra(LensdError):
    """A feature needs an optional dependency; the message names the extra that installs it."""

    code = "extra"


class AuthenticationFailed(LensdError):
    """A TCP handshake failed: wrong or missing secret, a replay, a certificate that does not match."""

    code = "auth"


class ClientClosed(LensdError):
    """A job client (``connect``, ``connect_sync``) was used after it closed. It refuses rather than
    reconnect: a closed client sends no heartbeats, so a fit it went on reporting to would become
    ``lost`` though its job still ran. Open a new client instead."""

    code = "closed"


class ConnectionBusy(LensdError, TimeoutError):
    """A request's ``give_up_after`` passed while another request on the same connection still held
    it (a long upload, a paged read). Nothing was sent and the connection stays open for the request
    holding it: unlike DaemonUnavailable, the daemon is not known to be away, so do not reconnect.
    Also a ``TimeoutError``, so code that caught the built-in one still catches it."""

    code = "conn_busy"


class DaemonUnavailable(LensdError):
    code = "unavailable"
    exit_code = 3


class LensdWarning(UserWarning):
    """Base of the warnings lensd gives: something is likely a mistake, but not an error."""


class NoSuchName(LensdWarning):
    """A query or ``values()`` names something no fit in the database has (a typo, an import
    alias such as ``al.mp.Isothermal``); the message names the closest names that exist."""


_BY_CODE: dict[str, type[LensdError]] = {
    cls.code: cls
    for cls in (
        LensdError, InvalidRecord, QueryError, QuerySyntaxError, ProtocolError, FrameTooLarge,
        StorageError, StorageFull, DatabaseLocked, UnsupportedDatabase, IngestError, AlreadyRunning, Busy,
        MissingExtra, AuthenticationFailed, DaemonUnavailable,
    )
}


def innermost(group: BaseExceptionGroup[LensdError]) -> LensdError:
    """The first LensdError of a group, however deeply task groups nested it: what a caller of
    ``anyio.run`` raises so that the CLI prints one line and exits with that error's code."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, LensdError)
    return first


def from_wire(code: str, message: str) -> LensdError:
    """The local error for an error reply, so a client raises what the daemon raised."""
    cls = _BY_CODE.get(code)
    if cls is None or cls is QuerySyntaxError:
        return DaemonError(message, code)
    return cls(message)


__all__ = [
    "AlreadyRunning", "AuthenticationFailed", "Busy", "ClientClosed", "ConnectionBusy", "DaemonError",
    "DaemonUnavailable", "DatabaseLocked", "FrameTooLarge", "IngestError", "InvalidRecord", "LensdError",
    "LensdWarning", "MissingExtra", "NoSuchName", "ProtocolError", "QueryError", "QuerySyntaxError", "StorageError",
    "StorageFull", "UnsupportedDatabase", "from_wire",
]
