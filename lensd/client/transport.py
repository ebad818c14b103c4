"""Opening the byte stream to one endpoint: a Unix socket, TCP, or TCP with TLS.

With ``tls_ca`` the daemon's certificate is verified against that CA, host name included. Without
one, the certificate is pinned: its SHA-256 fingerprint must equal the contact file's, compared in
constant time; any other certificate is refused before a byte of the protocol is sent.

``open_stream`` gives an anyio stream (the async client); ``open_socket`` a blocking socket (the
one-shot CLI commands, which import no event loop: anyio is imported only by ``open_stream``).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import ssl
from typing import TYPE_CHECKING

from lensd.client.address import Endpoint
from lensd.errors import AuthenticationFailed

if TYPE_CHECKING:
    from anyio.abc import ByteStream


def fingerprint(der: bytes) -> str:
    """How a certificate is named in the contact file: ``sha256:`` and the hex digest of its DER."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def client_context(endpoint: Endpoint) -> ssl.SSLContext:
    if endpoint.tls_ca is not None:
        try:
            return ssl.create_default_context(cafile=str(endpoint.tls_ca))
        except (OSError, ssl.SSLError) as exc:
            raise AuthenticationFailed(f"cannot load the TLS CA {endpoint.tls_ca}: {exc}") from None
    if endpoint.fingerprint is None:
        raise AuthenticationFailed(f"{endpoint} is TLS, but there is neither a --tls-ca nor a contact "
                                   "file fingerprint to check its certificate against")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pinned fingerprint is the check (below)
    return context


def check_pin(endpoint: Endpoint, der: bytes | None) -> None:
    """Refuse a certificate other than the pinned one (nothing to check when a CA verified it)."""
    if endpoint.tls_ca is not None:
        return
    seen = fingerprint(der or b"")
    assert endpoint.fingerprint is not None
    if not hmac.compare_digest(seen.encode(), endpoint.fingerprint.encode()):
        raise AuthenticationFailed(f"the certificate at {endpoint} is {seen}, not the contact file's "
                                   f"{endpoint.fingerprint}: refusing to talk to it")


def open_socket(endpoint: Endpoint, timeout: float) -> socket.socket:
    """A blocking socket to ``endpoint`` (TLS wrapped and checked); OSError when nothing answers."""
    if endpoint.unix is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(endpoint.unix))
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    if not endpoint.tls:
        return sock
    try:
        context = client_context(endpoint)
        wrapped = context.wrap_socket(sock, server_hostname=endpoint.host if endpoint.tls_ca else None)
    except ssl.SSLError as exc:
        sock.close()
        raise AuthenticationFailed(f"the TLS handshake with {endpoint} failed: {exc.reason or exc}") from None
    except BaseException:
        sock.close()
        raise
    try:
        check_pin(endpoint, wrapped.getpeercert(binary_form=True))
    except AuthenticationFailed:
        wrapped.close()
        raise
    return wrapped


async def open_stream(endpoint: Endpoint) -> ByteStream:
    """Connect; OSError/TimeoutError when nothing answers, AuthenticationFailed for a wrong cert."""
    import anyio
    from anyio.streams.tls import TLSAttribute

    if endpoint.unix is not None:
        return await anyio.connect_unix(str(endpoint.unix))
    if not endpoint.tls:
        return await anyio.connect_tcp(endpoint.host, endpoint.port)
    context = client_context(endpoint)
    try:
        stream = await anyio.connect_tcp(endpoint.host, endpoint.port, ssl_context=context,
                                         tls_standard_compatible=False,
                                         tls_hostname=endpoint.host if endpoint.tls_ca else None)
    except ssl.SSLError as exc:
        raise AuthenticationFailed(f"the TLS handshake with {endpoint} failed: {exc.reason or exc}") from None
    try:
        check_pin(endpoint, stream.extra(TLSAttribute.peer_certificate_binary))
    except AuthenticationFailed:
        await stream.aclose()
        raise
    return stream
