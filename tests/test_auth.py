"""The TCP handshake as pure functions (lensd.wire.auth): both sides agree only with one secret,
nothing recorded can be replayed, and every refusal is an AuthenticationFailed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lensd.errors import AuthenticationFailed
from lensd.wire import auth, protocol

secrets_ = st.binary(min_size=16, max_size=64)
nonces = st.binary(min_size=auth.NONCE_BYTES, max_size=auth.NONCE_BYTES)


def run(client_secret: bytes, daemon_secret: bytes, client_nonce: bytes, server_nonce: bytes) -> dict[str, object]:
    """One full handshake through the frame codec, as the bytes would travel; the daemon's final reply."""
    client = auth.ClientSide(client_secret, client_nonce)
    daemon = auth.DaemonSide(daemon_secret, server_nonce)
    hello = protocol.FrameDecoder().feed(protocol.encode_frame(client.hello(0)))[0]
    protocol.check_hello(hello)
    daemon, challenge = daemon.challenge(hello)
    client, answer = client.answer(challenge, 1)
    rid = daemon.verify(answer)
    accepted = daemon.accepted(rid, server="lensd test")
    client.check_accepted(accepted)
    return accepted


@given(secrets_, nonces, nonces)
def test_one_secret_authenticates_both_ways(secret: bytes, cn: bytes, sn: bytes) -> None:
    if cn == sn:
        return
    reply = run(secret, secret, cn, sn)
    assert reply["ok"] is True and reply["rid"] == 1
    assert secret not in repr(reply).encode()


@given(secrets_, secrets_, nonces, nonces)
def test_a_different_secret_is_refused(mine: bytes, theirs: bytes, cn: bytes, sn: bytes) -> None:
    if mine == theirs or cn == sn:
        return
    with pytest.raises(AuthenticationFailed, match="wrong secret"):
        run(mine, theirs, cn, sn)


@given(secrets_, nonces, nonces, nonces)
def test_a_recorded_auth_frame_fails_against_a_new_daemon_nonce(secret: bytes, cn: bytes, sn1: bytes,
                                                                sn2: bytes) -> None:
    if sn1 == sn2 or cn in (sn1, sn2):
        return
    client = auth.ClientSide(secret, cn)
    first, challenge = auth.DaemonSide(secret, sn1).challenge(client.hello())
    _, recorded = client.answer(challenge)
    first.verify(recorded)  # good the first time
    second, _ = auth.DaemonSide(secret, sn2).challenge(client.hello())  # the attacker replays hello too
    with pytest.raises(AuthenticationFailed):
        second.verify(recorded)


@given(secrets_, nonces, nonces, st.integers(min_value=0, max_value=255), st.integers(min_value=0, max_value=31))
def test_any_flipped_bit_of_a_proof_is_refused(secret: bytes, cn: bytes, sn: bytes, bit: int, at: int) -> None:
    if cn == sn:
        return
    client = auth.ClientSide(secret, cn)
    daemon, challenge = auth.DaemonSide(secret, sn).challenge(client.hello())
    _, answer = client.answer(challenge)
    proof = bytearray(answer["proof"])
    proof[at] ^= 1 << (bit % 8)
    with pytest.raises(AuthenticationFailed):
        daemon.verify({**answer, "proof": bytes(proof)})


@given(secrets_, nonces, nonces)
def test_the_daemon_proof_never_passes_as_the_client_proof(secret: bytes, cn: bytes, sn: bytes) -> None:
    """No reflection: what the daemon sends back is labelled for its role."""
    daemon, _ = auth.DaemonSide(secret, sn).challenge(auth.ClientSide(secret, cn).hello())
    reflected = daemon.accepted(1)["proof"]
    with pytest.raises(AuthenticationFailed):
        daemon.verify({"op": "auth", "rid": 1, "proof": reflected})


def test_the_version_is_bound_into_the_proof() -> None:
    secret, cn, sn = b"s" * 32, b"c" * 32, b"d" * 32
    assert auth.proof(secret, "client", cn, sn, 1) != auth.proof(secret, "client", cn, sn, 2)


@pytest.mark.parametrize("frame", [
    {"op": "submit", "rid": 1, "record": {"status": "completed"}},
    {"op": "status", "rid": 1},
    {"op": "auth", "rid": 1},
    {"op": "auth", "rid": 1, "proof": "not bytes"},
    {"op": "auth", "rid": "x", "proof": b"x" * 32},
])
def test_any_other_frame_in_place_of_auth_is_refused(frame: dict[str, object]) -> None:
    client = auth.ClientSide(b"k" * 32, auth.new_nonce())
    daemon, _ = auth.DaemonSide(b"k" * 32, auth.new_nonce()).challenge(client.hello())
    with pytest.raises(AuthenticationFailed):
        daemon.verify(frame)


def test_a_long_op_in_place_of_auth_is_quoted_short() -> None:
    client = auth.ClientSide(b"k" * 32, auth.new_nonce())
    daemon, _ = auth.DaemonSide(b"k" * 32, auth.new_nonce()).challenge(client.hello())
    with pytest.raises(AuthenticationFailed) as raised:
        daemon.verify({"op": "A" * (1 << 20) + "\n", "rid": 1})
    assert len(str(raised.value)) < 200 and "\n" not in str(raised.value)


@pytest.mark.parametrize("hello", [
    {"op": "hello", "v": 1, "rid": 0},  # a plain (Unix socket) hello on TCP
    {"op": "hello", "v": 1, "rid": 0, "auth": "hmac-sha256"},
    {"op": "hello", "v": 1, "rid": 0, "auth": "hmac-sha256", "nonce": b"short"},
    {"op": "hello", "v": 1, "rid": 0, "auth": "none", "nonce": b"n" * 32},
])
def test_a_hello_without_a_usable_nonce_is_refused(hello: dict[str, object]) -> None:
    with pytest.raises(AuthenticationFailed):
        auth.DaemonSide(b"k" * 32, auth.new_nonce()).challenge(hello)


def test_a_daemon_that_cannot_prove_the_secret_is_refused_by_the_client() -> None:
    client = auth.ClientSide(b"k" * 32, auth.new_nonce())
    impostor, challenge = auth.DaemonSide(b"other secret 123", auth.new_nonce()).challenge(client.hello())
    client, _ = client.answer(challenge)
    with pytest.raises(AuthenticationFailed, match="did not prove"):
        client.check_accepted(impostor.accepted(1))
    with pytest.raises(AuthenticationFailed, match="echoed"):
        auth.ClientSide(b"k" * 32, b"n" * 32).answer({"auth": "hmac-sha256", "nonce": b"n" * 32})


@given(secrets_, secrets_)
def test_the_client_greeting_completes_only_with_the_daemons_secret(mine: bytes, theirs: bytes) -> None:
    """ClientGreeting (what both bundled clients run) against the daemon's side, frame by frame."""
    greeting = auth.ClientGreeting(mine)
    daemon, challenge = auth.DaemonSide(theirs, auth.new_nonce()).challenge(greeting.first())
    answer = greeting.feed(challenge)
    assert answer is not None and answer["op"] == "auth"
    if mine != theirs:
        with pytest.raises(AuthenticationFailed):
            daemon.verify(answer)
        return
    assert greeting.feed(daemon.accepted(daemon.verify(answer), server="lensd test")) is None
    assert greeting.server["server"] == "lensd test" and "proof" not in greeting.server


def test_the_unix_greeting_is_the_plain_hello() -> None:
    greeting = auth.ClientGreeting(None)
    assert greeting.first() == protocol.hello(0)
    assert greeting.feed(protocol.hello_reply(0, "x")) is None and greeting.server["ok"] is True
