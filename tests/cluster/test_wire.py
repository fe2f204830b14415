from __future__ import annotations

import ast
import dataclasses
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.cluster.samples import SAMPLES, golden_path

from dynamail.cluster import limits, wire

SECRET = b"s" * 32


def test_every_message_type_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} == set(wire.REGISTRY.values())


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_golden_frames(version: int, msg: wire.Message) -> None:
    golden = golden_path(version, msg).read_bytes()
    assert wire.encode(msg, version) == golden
    (n,) = struct.unpack(">I", golden[:4])
    expected = dataclasses.replace(
        msg, **{f.name: f.default for f in dataclasses.fields(msg)  # type: ignore[arg-type]
                if f.metadata.get("since", 1) > version}
    )
    assert wire.decode_payload(golden[4 : 4 + n], version) == expected


def test_every_released_version_is_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYNAMAIL_CLUSTER_PROTOCOL_MAX", raising=False)
    assert wire.supported_versions() == wire.RELEASED_VERSIONS == (1, 3, 4, 5, 6)
    d, l_ = pair(dv=wire.supported_versions(), lv=wire.supported_versions())
    assert d.version == l_.version == 6
    monkeypatch.setenv("DYNAMAIL_CLUSTER_PROTOCOL_MAX", "3")
    assert wire.supported_versions() == (1, 3)
    monkeypatch.setenv("DYNAMAIL_CLUSTER_PROTOCOL_MAX", "2")
    assert wire.supported_versions() == (1, 2)


def test_version2_field_is_absent_in_version1() -> None:
    hb = wire.Heartbeat(1, "b1", True, 1, 2, 3, 4, rss=99)
    v1 = wire.encode(hb, 1)
    back = wire.decode_payload(v1[4:], 1)
    assert isinstance(back, wire.Heartbeat) and back.rss == 0
    assert wire.decode_payload(wire.encode(hb, 2)[4:], 2) == hb
    # a version-2 frame decoded by version 1 ignores the extra trailing field
    assert wire.decode_payload(wire.encode(hb, 2)[4:], 1) == back


def pair(dv: tuple[int, ...] = (1,), lv: tuple[int, ...] = (1,), ds: bytes = SECRET,
         ls: bytes = SECRET) -> tuple[wire.Connection, wire.Connection]:
    d = wire.Connection("dialer", "b1", ds, versions=dv)
    l_ = wire.Connection("listener", "b2", ls, versions=lv)
    d.start()
    for _ in range(4):
        l_.receive(d.outgoing())
        d.receive(l_.outgoing())
    return d, l_


def test_handshake_and_messages() -> None:
    d, l_ = pair()
    assert d.is_open and l_.is_open and d.peer == "b2" and l_.peer == "b1"
    d.send(wire.Whois(5))
    d.send(wire.Ok(6))
    data = d.outgoing()
    got: list[wire.Message] = []
    for i in range(len(data)):  # byte by byte
        got += l_.receive(data[i : i + 1])
    assert got == [wire.Whois(5), wire.Ok(6)]


@pytest.mark.parametrize(("dv", "lv", "want"), [((1, 2), (1, 2), 2), ((1,), (1, 2), 1), ((1, 2), (1,), 1)])
def test_version_negotiation(dv: tuple[int, ...], lv: tuple[int, ...], want: int) -> None:
    d, l_ = pair(dv, lv)
    assert d.version == l_.version == want
    d.send(wire.Heartbeat(1, "b1", True, 0, 0, 0, 0, rss=5))
    (hb,) = l_.receive(d.outgoing())
    assert isinstance(hb, wire.Heartbeat) and hb.rss == (5 if want == 2 else 0)


def test_no_common_version() -> None:
    d = wire.Connection("dialer", "b1", SECRET, versions=(2,))
    l_ = wire.Connection("listener", "b2", SECRET, versions=(1,))
    d.start()
    with pytest.raises(wire.ProtocolError):
        l_.receive(d.outgoing())


def test_wrong_secret_listener_is_refused_by_dialer() -> None:
    d = wire.Connection("dialer", "b1", SECRET)
    l_ = wire.Connection("listener", "evil", b"x" * 32)
    d.start()
    l_.receive(d.outgoing())
    with pytest.raises(wire.AuthenticationFailed):
        d.receive(l_.outgoing())
    assert not d.is_open


def test_wrong_secret_dialer_is_refused_by_listener() -> None:
    d = wire.Connection("dialer", "evil", b"x" * 32)
    l_ = wire.Connection("listener", "b2", SECRET)
    d.start()
    l_.receive(d.outgoing())
    # the dialer cannot verify the listener, but suppose it forged an Auth anyway
    forged = wire.encode(wire.Auth(b"\0" * 32), 1)
    with pytest.raises(wire.AuthenticationFailed):
        l_.receive(forged)
    assert not l_.is_open


def test_nothing_accepted_before_authentication() -> None:
    l_ = wire.Connection("listener", "b2", SECRET)
    with pytest.raises(wire.ProtocolError):
        l_.receive(wire.encode(wire.Open(1, "a/b", 0, "x", False), 1))
    l2 = wire.Connection("listener", "b2", SECRET)
    d = wire.Connection("dialer", "b1", SECRET)
    d.start()
    l2.receive(d.outgoing())
    with pytest.raises(wire.ProtocolError):  # skipping Auth
        l2.receive(wire.encode(wire.Whois(1), 1))


def test_oversize_frames_refused() -> None:
    l_ = wire.Connection("listener", "b2", SECRET)
    with pytest.raises(wire.ProtocolError):
        l_.receive(struct.pack(">I", limits.MAX_HANDSHAKE_FRAME + 1))
    _d, l2 = pair()
    with pytest.raises(wire.ProtocolError):
        l2.receive(struct.pack(">I", limits.MAX_FRAME + 1))


def test_replayed_handshake_refused() -> None:
    d = wire.Connection("dialer", "b1", SECRET)
    l_ = wire.Connection("listener", "b2", SECRET)
    d.start()
    hello = d.outgoing()
    l_.receive(hello)
    d.receive(l_.outgoing())
    auth = d.outgoing()
    # replay the same Hello + Auth to a fresh listener: its nonce differs
    l2 = wire.Connection("listener", "b2", SECRET)
    l2.receive(hello)
    with pytest.raises(wire.AuthenticationFailed):
        l2.receive(auth)


@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    l_ = wire.Connection("listener", "b2", SECRET)
    try:
        l_.receive(data)
    except wire.ProtocolError:
        pass
    assert not l_.is_open


def test_sans_io() -> None:
    for name in ("wire.py", "controller.py", "limits.py", "election.py", "image.py"):
        path = Path(wire.__file__).with_name(name)
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not mods & {"asyncio", "socket", "ssl"}, name


def test_proofs_are_bound_to_the_tls_channel() -> None:
    # both ends of one TLS channel see the same tls-unique value: the handshake completes
    d = wire.Connection("dialer", "b1", SECRET, binding=b"channel-A")
    l_ = wire.Connection("listener", "b2", SECRET, binding=b"channel-A")
    d.start()
    for _ in range(4):
        l_.receive(d.outgoing())
        d.receive(l_.outgoing())
    assert d.is_open and l_.is_open
    # a man in the middle terminating two TLS channels relays proofs made for
    # the other channel: the dialer refuses the listener's proof
    d = wire.Connection("dialer", "b1", SECRET, binding=b"channel-A")
    l_ = wire.Connection("listener", "b2", SECRET, binding=b"channel-B")
    d.start()
    l_.receive(d.outgoing())
    with pytest.raises(wire.AuthenticationFailed):
        d.receive(l_.outgoing())
    # without a binding the proof is the plaintext protocol's (golden-compatible)
    assert wire.proof(SECRET, "dialer", 1, b"n" * 16, b"m" * 16, "b1", "b2") == wire.proof(
        SECRET, "dialer", 1, b"n" * 16, b"m" * 16, "b1", "b2", b"")
    assert wire.proof(SECRET, "dialer", 1, b"n" * 16, b"m" * 16, "b1", "b2") != wire.proof(
        SECRET, "dialer", 1, b"n" * 16, b"m" * 16, "b1", "b2", b"channel-A")
