"""Challenge-response authentication for TCP connections, as pure functions (sans-IO).

A TCP client proves it knows the daemon's secret without sending it, and the daemon proves the
same back, over fresh nonces from both sides and the protocol version:

    client -> {"op": "hello", "v": 1, "rid": 0, "auth": "hmac-sha256", "nonce": Nc}
    daemon -> {"rid": 0, "ok": true, "v": 1, "auth": "hmac-sha256", "nonce": Ns}
    client -> {"op": "auth", "rid": 1, "proof": Pc}
    daemon -> {"rid": 1, "ok": true, "proof": Pd, "server": ..., "lost_after": ...}
              or an error reply with code "auth", then it closes

    Pc = HMAC-SHA256(secret, "lensd-auth client" 0x00 || v as 4 bytes || Nc || Ns)
    Pd = HMAC-SHA256(secret, "lensd-auth daemon" 0x00 || v as 4 bytes || Nc || Ns)

Nonces are 32 random bytes (msgpack ``bin``). A proof binds both nonces, so a recorded ``auth``
frame is worthless against a new connection (its daemon nonce differs), and the two role labels
keep a daemon's proof from ever passing as a client's (no reflection). Proofs are compared with
``hmac.compare_digest``. Every failure raises ``AuthenticationFailed`` with a reason that never
contains the secret or a proof.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from lensd.errors import AuthenticationFailed
from lensd.wire.protocol import PROTOCOL_VERSION, hello, raise_for_reply, reply_rid, shown

SCHEME: Final = "hmac-sha256"
NONCE_BYTES: Final = 32
SECRET_MIN_BYTES: Final = 16
_LABELS: Final = {"client": b"lensd-auth client\x00", "daemon": b"lensd-auth daemon\x00"}


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def proof(secret: bytes, role: str, client_nonce: bytes, server_nonce: bytes,
          version: int = PROTOCOL_VERSION) -> bytes:
    """The MAC one side sends: over its role, the version and both nonces, never the secret itself."""
    message = _LABELS[role] + version.to_bytes(4, "big") + client_nonce + server_nonce
    return hmac.new(secret, message, hashlib.sha256).digest()


def _nonce(message: Mapping[str, Any], who: str) -> bytes:
    value = message.get("nonce")
    if not isinstance(value, bytes) or len(value) != NONCE_BYTES:
        raise AuthenticationFailed(f"{who} sent no {NONCE_BYTES}-byte nonce")
    return value


def _check_scheme(message: Mapping[str, Any]) -> None:
    if message.get("auth") != SCHEME:
        raise AuthenticationFailed(f"this TCP listener needs authentication ({SCHEME}): the client "
                                   "must know the daemon's secret (--secret-file)")


def client_hello(nonce: bytes, rid: int = 0) -> dict[str, Any]:
    """The first frame of a TCP client: the plain hello plus its nonce."""
    return {"op": "hello", "v": PROTOCOL_VERSION, "rid": rid, "auth": SCHEME, "nonce": nonce}


@dataclass(frozen=True)
class DaemonSide:
    """The daemon's half of one handshake: its secret and the nonces of this connection."""

    secret: bytes
    server_nonce: bytes
    client_nonce: bytes = b""

    def challenge(self, hello: Mapping[str, Any]) -> tuple[DaemonSide, dict[str, Any]]:
        """After a valid hello (``check_hello`` passed): remember the client's nonce, answer ours."""
        _check_scheme(hello)
        client_nonce = _nonce(hello, "the client")
        rid = reply_rid(hello) or 0
        reply = {"rid": rid, "ok": True, "v": PROTOCOL_VERSION, "auth": SCHEME, "nonce": self.server_nonce}
        return DaemonSide(self.secret, self.server_nonce, client_nonce), reply

    def verify(self, message: Mapping[str, Any]) -> int:
        """Check the client's ``auth`` frame; its rid, or AuthenticationFailed (then close)."""
        op = message.get("op")
        if op != "auth":
            raise AuthenticationFailed(f"not authenticated: {shown(op)} refused before the auth frame")
        rid = reply_rid(message)
        if rid is None:
            raise AuthenticationFailed("the auth frame needs an integer rid")
        sent = message.get("proof")
        if not isinstance(sent, bytes):
            raise AuthenticationFailed("the auth frame carries no proof")
        expected = proof(self.secret, "client", self.client_nonce, self.server_nonce)
        if not hmac.compare_digest(sent, expected):
            raise AuthenticationFailed("authentication failed: wrong secret (or a replayed handshake)")
        return rid

    def accepted(self, rid: int, **fields: Any) -> dict[str, Any]:
        """The reply that ends a good handshake, carrying the daemon's own proof."""
        return {"rid": rid, "ok": True, **fields,
                "proof": proof(self.secret, "daemon", self.client_nonce, self.server_nonce)}


@dataclass(frozen=True)
class ClientSide:
    """The client's half: its secret and nonce, then the daemon's nonce once challenged."""

    secret: bytes
    client_nonce: bytes
    server_nonce: bytes = b""

    def hello(self, rid: int = 0) -> dict[str, Any]:
        return client_hello(self.client_nonce, rid)

    def answer(self, challenge: Mapping[str, Any], rid: int = 1) -> tuple[ClientSide, dict[str, Any]]:
        """From the daemon's challenge, the ``auth`` frame proving we know the secret."""
        _check_scheme(challenge)
        server_nonce = _nonce(challenge, "the daemon")
        if server_nonce == self.client_nonce:
            raise AuthenticationFailed("the daemon echoed our nonce: not a lensd daemon")
        side = ClientSide(self.secret, self.client_nonce, server_nonce)
        return side, {"op": "auth", "rid": rid,
                      "proof": proof(self.secret, "client", self.client_nonce, server_nonce)}

    def check_accepted(self, reply: Mapping[str, Any]) -> None:
        """The daemon must prove the secret too: else it is not the daemon we meant to reach."""
        sent = reply.get("proof")
        expected = proof(self.secret, "daemon", self.client_nonce, self.server_nonce)
        if not isinstance(sent, bytes) or not hmac.compare_digest(sent, expected):
            raise AuthenticationFailed("the daemon did not prove it knows the secret: a different "
                                       "daemon, or another secret file, answers at that address")


class ClientGreeting:
    """The client's opening exchange, for either transport and either IO style.

    ``secret=None`` (the Unix socket): a plain hello and its reply. With a secret (TCP): the hello
    with a nonce, the ``auth`` frame answering the challenge, then the daemon's proof checked.
    Send ``first()``, then feed each reply to ``feed``, sending what it returns, until it returns
    None; ``server`` is then the daemon's welcome.
    """

    def __init__(self, secret: bytes | None) -> None:
        self._side = ClientSide(secret, new_nonce()) if secret is not None else None
        self._answered = False
        self.server: dict[str, Any] = {}

    def first(self) -> dict[str, Any]:
        return self._side.hello(0) if self._side is not None else hello(0)

    def feed(self, reply: dict[str, Any]) -> dict[str, Any] | None:
        """The next frame to send, or None when the connection is open for requests."""
        reply = raise_for_reply(reply)
        if self._side is not None and not self._answered:
            self._side, answer = self._side.answer(reply, 1)
            self._answered = True
            return answer
        if self._side is not None:
            self._side.check_accepted(reply)
        self.server = {key: value for key, value in reply.items() if key != "proof"}
        return None
