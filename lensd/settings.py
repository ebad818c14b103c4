"""Where things are: CLI option > environment > default, decided in one place.

``Settings`` is also the one declaration of the daemon's start options: a field with ``cli(...)``
metadata is an option of ``lensd start`` (its flag is the field's name with dashes). The click
options (``lensd.cli.commands``) and the argument list a background start hands its foreground child
(``start_arguments``) are both generated from it, so an option added here exists everywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeAlias

from lensd.errors import DaemonUnavailable

DEFAULT_LOST_AFTER = 600.0
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# A database: a sqlite file's path, or a PostgreSQL libpq URL kept as text (a Path would fold the
# URL's "//" and "?host=/..." into a file name).
Database: TypeAlias = Path | str
DEFAULT_BACKUP_MINUTES = 15.0


def database(value: str | os.PathLike[str]) -> Database:
    """``value`` as a database: the URL itself when it is a ``postgresql://`` URL, else a path."""
    text = os.fspath(value)
    return text if isinstance(text, str) and text.startswith(POSTGRES_SCHEMES) else Path(text)


def is_url(db: Database) -> bool:
    """Whether ``db`` is a PostgreSQL URL (not a sqlite file)."""
    return isinstance(db, str)


_PASSWORD = re.compile(r"(://[^:/@?#]*:)([^@/?#]*)(@)")
_PASSWORD_PARAM = re.compile(r"((?:^|[?&\s])password=)([^&\s]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with any password in it masked, for messages and logs."""
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD.sub(r"\1***\3", url))


def shown(db: Database) -> str:
    """``db`` as lensd prints and logs it: a URL's password masked."""
    return redact(db) if isinstance(db, str) else str(db)


def default_db() -> Database:
    return database(os.environ.get("LENSD_DB") or "lensd.sqlite")


def default_socket() -> Path:
    """``$LENSD_SOCKET``, else ``$XDG_RUNTIME_DIR/lensd.sock``, else ``~/.lensd/lensd.sock``."""
    explicit = os.environ.get("LENSD_SOCKET")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "lensd.sock"
    return Path.home() / ".lensd" / "lensd.sock"


SOCKET_PATH_MAX = 107  # bytes in sun_path on Linux (108 with its NUL); macOS allows 103


def socket_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a Unix socket (too long for sun_path), or None when it can be."""
    size = len(os.fsencode(path))
    if size <= SOCKET_PATH_MAX:
        return None
    return (f"the socket path {path} is {size} bytes, over the {SOCKET_PATH_MAX}-byte limit of Unix "
            "socket paths: pass a shorter --socket (e.g. $XDG_RUNTIME_DIR/lensd.sock or /tmp/lensd-$USER.sock)")


def unreachable(path: Path, exc: BaseException | None = None) -> DaemonUnavailable:
    """The error both socket clients raise when nothing answers at ``path`` (exit 3)."""
    problem = socket_path_problem(path)
    if problem is not None:
        return DaemonUnavailable(f"no daemon at {path}: {problem}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc or "") or "timed out"
    return DaemonUnavailable(f"no daemon at {path} ({reason}); is `lensd start` running?")


def resolve_db(path: str | os.PathLike[str] | None) -> Database:
    return database(path) if path is not None else default_db()


def resolve_socket(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else default_socket()


Kind: TypeAlias = Literal["database", "file", "path", "dir", "flag", "float", "int", "choice", "text", "minutes"]


@dataclass(frozen=True)
class CliOption:
    """How a ``Settings`` field is given on the command line.

    ``kind``: ``file``/``path``/``dir`` (a path; ``dir`` may be repeated when the field is a tuple),
    ``flag``, ``float``/``int`` (at least ``low``), ``choice`` (one of ``choices``), ``text`` (a
    string, repeatable when the field is a tuple), ``minutes`` (a number of minutes, ``off`` = 0).
    """

    kind: Kind
    help: str
    low: float | None = None
    choices: tuple[str, ...] = ()


def cli(kind: Kind, help: str, low: float | None = None, choices: tuple[str, ...] = ()) -> dict[str, CliOption]:
    """The field metadata that makes a ``Settings`` field an option of ``lensd start``."""
    return {"cli": CliOption(kind, help, low, choices)}


@dataclass(frozen=True)
class Settings:
    """Everything a daemon run is configured by; fields with ``cli`` metadata are start options."""

    db: Database = field(metadata=cli(
        "database", "Database: a sqlite file or a postgresql:// URL [default: $LENSD_DB, else ./lensd.sqlite]."))
    socket: Path = field(metadata=cli(
        "path", "Daemon socket [default: $LENSD_SOCKET, else $XDG_RUNTIME_DIR/lensd.sock]."))
    watch: tuple[Path, ...] = field(default=(), metadata=cli(
        "dir", "Watch this PyAutoFit output folder (repeatable)."))
    spool: Path | None = field(default=None, metadata=cli(
        "dir", "Ingest and delete record files that clients drop in this folder."))
    poll: bool = field(default=False, metadata=cli(
        "flag", "Poll watched folders (automatic on network file systems)."))
    poll_interval: float = field(default=2.0, metadata=cli("float", "Seconds between polls.", low=0.05))
    lost_after: float = field(default=DEFAULT_LOST_AFTER, metadata=cli(
        "float", "Seconds without an event before a running fit is lost.", low=0.1))
    durability: str = field(default="full", metadata=cli(
        "choice", "full: acknowledged records survive power loss; normal: they survive a crash.",
        choices=("full", "normal")))
    batch_max: int = field(default=512, metadata=cli("int", "Most writes committed in one transaction.", low=1))
    batch_ms: float = field(default=0.0, metadata=cli(
        "float", "Wait this long after a write for more before committing (0: commit what is queued).", low=0))
    max_frame: int = 64 * 1024 * 1024
    max_connections: int = field(default=512, metadata=cli(
        "int", "Most client connections at once; more are refused with a 'busy' error.", low=1))
    handshake_timeout: float = field(default=10.0, metadata=cli(
        "float", "Seconds a new connection has to say hello before it is closed.", low=0.01))
    stream_timeout: float = field(default=60.0, metadata=cli(
        "float", "Seconds a read stream may wait for the client's next page request before it is closed.",
        low=0.01))
    frame_timeout: float = field(default=30.0, metadata=cli(
        "float", "Seconds a started frame may wait for its next bytes before the connection is closed.",
        low=0.01))
    frame_deadline: float = field(default=120.0, metadata=cli(
        "float", "Seconds a started frame has to arrive whole, once the daemon has room for it, before "
                 "the connection is closed.", low=0.01))
    drain_timeout: float = field(default=30.0, metadata=cli(
        "float", "Seconds a stop waits for connections to send the replies they owe before it cuts "
                 "them off (a write is acknowledged only once committed: a cut loses none that was).",
        low=0.01))
    max_db_mb: int | None = field(default=None, metadata=cli(  # a quota: writes past it fail
        "int", "Quota guard: writes that would grow the database past this many MiB fail "
               "with a 'full' error (no limit by default).", low=1))
    foreground: bool = field(default=False, metadata=cli(
        "flag", "Stay attached, log to stderr (systemd, SLURM)."))
    web: str | None = field(default=None, metadata=cli(
        "text", "Also serve the read-only web dashboard on HOST:PORT (docs/web.md); its URL, with a "
                "token, is printed once."))
    web_tls_cert: Path | None = field(default=None, metadata=cli("file", "TLS certificate for --web."))
    web_tls_key: Path | None = field(default=None, metadata=cli("file", "TLS private key for --web."))
    web_insecure_bind: bool = field(default=False, metadata=cli(
        "flag", "Allow --web on a non-loopback address without TLS (the token travels in clear text)."))
    shared_group: bool = field(default=False, metadata=cli(
        "flag", "Create the database (and its WAL) 0640 and new folders 0750, for the group to read."))
    allow_open_spool: bool = field(default=False, metadata=cli(
        "flag", "Serve a --spool folder that every user may write to (refused by default)."))
    backup_every: float = field(default=DEFAULT_BACKUP_MINUTES, metadata=cli(
        "minutes", "Minutes between online backups of the database to --backup-to, made while it "
                   "serves (0 or off: none). What was acknowledged since the last one is what the loss "
                   "of this node loses."))
    backup_to: Path | None = field(default=None, metadata=cli(
        "dir", "Folder for the backups, on a disk that outlives this node [default: <spool>-backups "
               "beside the --spool, else <database stem>-backups beside the database]."))
    backup_keep: int = field(default=2, metadata=cli(
        "int", "Backups kept in --backup-to: the newest under the database's name, older ones by time.",
        low=1))
    listen: tuple[str, ...] = field(default=(), metadata=cli(
        "text", "Also serve authenticated TCP at HOST:PORT (repeatable; port 0 picks a free one)."))
    secret_file: Path | None = field(default=None, metadata=cli(
        "file", "The TCP secret, made on first start [default: $LENSD_SECRET_FILE, else ~/.lensd/secret]."))
    contact: Path | None = field(default=None, metadata=cli(
        "file", "Where to write the contact file [default: $LENSD_CONTACT, else ~/.lensd/contact.json]."))
    tls_cert: Path | None = field(default=None, metadata=cli("file", "Serve TCP over TLS with this certificate (PEM)."))
    tls_key: Path | None = field(default=None, metadata=cli("file", "The TLS certificate's private key (PEM)."))


@dataclass(frozen=True)
class StartOption:
    """One option of ``lensd start``: the ``Settings`` field, its flag, default and CLI form."""

    name: str
    flag: str
    default: Any
    cli: CliOption


def start_options() -> Iterator[StartOption]:
    """The start options, in declaration order (the order ``lensd start --help`` lists them)."""
    for item in fields(Settings):
        if "cli" in item.metadata:
            yield StartOption(item.name, "--" + item.name.replace("_", "-"),
                              None if item.name in ("db", "socket") else item.default, item.metadata["cli"])


def start_arguments(settings: Settings) -> list[str]:
    """The command-line form of ``settings``: what ``lensd start`` parses back into equal settings."""
    argv: list[str] = []
    for option in start_options():
        value = getattr(settings, option.name)
        if option.cli.kind == "flag":
            argv += [option.flag] if value else []
        elif isinstance(value, tuple):
            for item in value:
                argv += [option.flag, str(item)]
        elif value is not None:
            argv += [option.flag, str(value)]
    return argv
