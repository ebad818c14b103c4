"""Where the daemon is: from what the caller said, the environment, the contact file, or defaults.

The order (SPEC §3, §6a), first that applies:

1. ``address=`` / ``--address``: ``tcp://host:port``, ``tls://host:port`` or a socket path;
   ``socket=`` / ``--socket``: a socket path;
2. ``$LENSD_ADDRESS``, then ``$LENSD_SOCKET`` (a variable the user set is as explicit as an option);
3. the contact file (``$LENSD_CONTACT``, else ``~/.lensd/contact.json``): its Unix socket when this
   is the daemon's host and the socket answers, else its TCP addresses in order. A stale contact
   file (dead pid on this host) is skipped and named in the error if nothing else answers;
4. the default socket (``$XDG_RUNTIME_DIR/lensd.sock``, else ``~/.lensd/lensd.sock``).

TLS is used for ``tls://`` addresses, for every TCP address when ``tls_ca`` (``--tls-ca``,
``$LENSD_TLS_CA``) is given, and for a contact file's TCP addresses when it names a certificate
fingerprint; without a CA the certificate is pinned to that fingerprint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from lensd import settings
from lensd.client import contact as contacts
from lensd.errors import DaemonUnavailable, LensdError


@dataclass(frozen=True)
class Target:
    """What a caller said about where the daemon is (any field may be left to the defaults)."""

    address: str | None = None
    socket: Path | None = None
    contact: Path | None = None
    secret_file: Path | None = None
    tls_ca: Path | None = None

    def __str__(self) -> str:
        named = self.address or (os.fspath(self.socket) if self.socket is not None else None)
        return named or os.environ.get("LENSD_ADDRESS") or "the daemon found by its contact file"

    @property
    def explicit(self) -> bool:
        """Whether the caller (or ``$LENSD_ADDRESS``) named the daemon, rather than leaving it to be found."""
        return bool(self.address or self.socket is not None or os.environ.get("LENSD_ADDRESS"))


TargetLike = Target | str | os.PathLike[str] | None


@dataclass(frozen=True)
class Endpoint:
    """One way to reach a daemon: a Unix socket, or TCP (optionally TLS) with the secret."""

    unix: Path | None = None
    host: str = ""
    port: int = 0
    tls: bool = False
    fingerprint: str | None = None
    tls_ca: Path | None = None
    secret_file: Path | None = None

    def __str__(self) -> str:
        if self.unix is not None:
            return str(self.unix)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls' if self.tls else 'tcp'}://{host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """The endpoints to try in order, and the contact file they came from, if any."""

    endpoints: tuple[Endpoint, ...]
    contact: contacts.Contact | None = None
    contact_path: Path | None = None
    note: str = ""  # what a failure message should add (a stale contact file)


def as_target(target: TargetLike) -> Target:
    if target is None or isinstance(target, Target):
        return target or Target()
    return Target(address=os.fspath(target))


def _host_port(text: str, original: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LensdError(f"cannot read the address {original!r}: expected tcp://HOST:PORT with a port "
                         "from 1 to 65535, or a socket path")
    return host, int(port)


def parse_address(text: str, target: Target | None = None) -> Endpoint:
    """``tcp://host:port``, ``tls://host:port``, ``unix:///path`` or a plain socket path."""
    target = target or Target()
    ca = target.tls_ca or _env_path("LENSD_TLS_CA")
    for scheme in ("tcp://", "tls://"):
        if text.startswith(scheme):
            host, port = _host_port(text[len(scheme):], text)
            return Endpoint(host=host, port=port, tls=scheme == "tls://" or ca is not None, tls_ca=ca,
                            secret_file=target.secret_file)
    if text.startswith("unix://"):
        text = text[len("unix://"):]
    if "://" in text:
        raise LensdError(f"cannot read the address {text!r}: the schemes are tcp://, tls:// and unix://")
    return Endpoint(unix=Path(text))


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def from_contact(found: contacts.Contact, target: Target) -> list[Endpoint]:
    """The endpoints a contact file names, best first: its socket on its own host, then TCP."""
    ends: list[Endpoint] = []
    if found.socket and found.on_this_host and Path(found.socket).exists():
        ends.append(Endpoint(unix=Path(found.socket)))
    ca = target.tls_ca or _env_path("LENSD_TLS_CA")
    for host, port in found.tcp:
        tls = found.tls_fingerprint is not None or ca is not None
        ends.append(Endpoint(host=host, port=port, tls=tls, fingerprint=found.tls_fingerprint, tls_ca=ca,
                             secret_file=target.secret_file))
    return ends


def _read_contact(path: Path) -> tuple[contacts.Contact | None, str]:
    try:
        found = contacts.read(path)
    except LensdError as exc:
        return None, str(exc)
    if found is None:
        return None, ""
    stale = found.stale_reason()
    if stale:
        return None, f"the contact file {path} is stale ({stale})"
    return found, ""


def resolve(target: TargetLike = None) -> Route:
    """The ways to try, in order (see the module docstring)."""
    wanted = as_target(target)
    explicit = wanted.address or (os.fspath(wanted.socket) if wanted.socket is not None else None)
    explicit = explicit or os.environ.get("LENSD_ADDRESS") or os.environ.get("LENSD_SOCKET") or None
    contact_path = contacts.resolve_contact_file(wanted.contact)
    if explicit:
        end = parse_address(explicit, wanted)
        found = None
        if end.tls and end.tls_ca is None:  # pin to the contact file's fingerprint
            found, _ = _read_contact(contact_path)
            end = replace(end, fingerprint=found.tls_fingerprint if found else None)
        return Route((end,), found, contact_path if found else None)
    found, note = _read_contact(contact_path)
    ends = from_contact(found, wanted) if found else []
    if found and not ends:
        note = f"the contact file {contact_path} names no address this host can use"
    default = Endpoint(unix=settings.default_socket())
    if default not in ends:
        ends.append(default)
    return Route(tuple(ends), found, contact_path if found else None, note)


def connectable(endpoint: Endpoint) -> str | None:
    """Why ``endpoint`` cannot even be tried (a socket path too long for sun_path), or None."""
    return settings.socket_path_problem(endpoint.unix) if endpoint.unix is not None else None


def candidates(route: Route, failures: list[tuple[Endpoint, BaseException | None]]) -> Iterator[Endpoint]:
    """The endpoints of ``route`` worth trying, in order; each one that cannot be tried is noted in
    ``failures`` (for ``unreachable``). Both clients connect through this."""
    for endpoint in route.endpoints:
        if connectable(endpoint) is not None:
            failures.append((endpoint, None))
            continue
        yield endpoint


def unreachable(route: Route, failures: list[tuple[Endpoint, BaseException | None]]) -> DaemonUnavailable:
    """The one error both clients raise when no endpoint of ``route`` answered (exit 3)."""
    if len(failures) == 1 and failures[0][0].unix is not None and not route.note:
        endpoint, exc = failures[0]
        assert endpoint.unix is not None
        return settings.unreachable(endpoint.unix, exc)
    tried = []
    for endpoint, exc in failures:
        problem = connectable(endpoint)
        reason = problem or (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc or "") or
                             "timed out")
        tried.append(f"{endpoint} ({reason})")
    note = route.note
    if not note and route.contact is not None:  # a live-looking contact file, but no answer: stale
        note = f"the contact file {route.contact_path} is stale: nothing answers where it says"
    note = f"; {note}" if note else ""
    return DaemonUnavailable(f"no daemon at {', '.join(tried)}{note}; is `lensd start` running?")


def not_lensd(where: str, exc: BaseException) -> DaemonUnavailable:
    """What answered at ``where`` does not speak the protocol (often: plain TCP to a TLS port)."""
    return DaemonUnavailable(f"{where} does not answer in the lensd protocol ({exc}); "
                             "a TLS port needs tls:// or the contact file's fingerprint")
