"""The member-to-member cluster protocol, sans-IO.

Frames are a 4-byte big-endian length followed by one msgpack array
``[code, field, field, ...]``; ``code`` names the message type in
:data:`REGISTRY`.  Messages are small frozen dataclasses.  A request carries
an ``id`` that its response repeats; events carry none.

A connection starts with an authenticated, versioned handshake and nothing
else is accepted before it completes (states and allowed messages are the
table :data:`ALLOWED`)::

    dialer   -> Hello(versions, member, role, nonce_d)
    listener -> Challenge(version, member, nonce_l, proof_l)
    dialer   -> Auth(proof_d)
    listener -> Welcome(version)

``version`` is the highest version both sides support.  ``proof_l`` is
HMAC-SHA256(secret, "listener" | version | nonce_d | nonce_l | names) and
``proof_d`` the same with "dialer": each side proves it knows the cluster
secret over a nonce the other side chose, so neither a replayed nor a
reflected handshake is accepted.  Before authentication a frame may hold at
most :data:`limits.MAX_HANDSHAKE_FRAME` octets.

Versioning: a field added in version N carries ``since=N`` in its metadata;
it is encoded only when the negotiated version is at least N, and takes its
default when decoding an older frame.  Codes are never reused.  Version 2 is
a test-only bump (one extra heartbeat field) that exists to prove
negotiation; it is offered only when :func:`supported_versions` is told so.
Version 3 adds the delivery id of a hand-off (``Deliver.delivery_id``), which
makes a repeated hand-off store nothing twice.  Version 5 adds
``Locate.holder``: asked of any member, "do *you* hold this account now?",
which finds an account's owner while no Controller can answer (an election).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import os
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from dynamail.cluster import limits

HEADER = struct.Struct(">I")
RELEASED_VERSIONS = (1, 3, 4, 5, 6)
TEST_VERSION = 2  # one extra heartbeat field, offered only when asked for


def supported_versions() -> tuple[int, ...]:
    """Versions this build offers: the released ones, or up to
    ``DYNAMAIL_CLUSTER_PROTOCOL_MAX``; ``=2`` offers exactly versions 1 and
    the test-only 2 (rolling-upgrade tests)."""
    top = int(os.environ.get("DYNAMAIL_CLUSTER_PROTOCOL_MAX") or max(RELEASED_VERSIONS))
    if top == TEST_VERSION:
        return (1, TEST_VERSION)
    return tuple(v for v in RELEASED_VERSIONS if v <= top) or RELEASED_VERSIONS[:1]


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed."""


class AuthenticationFailed(ProtocolError):
    pass


def _since(v: int) -> Any:
    return {"since": v}


class Message:
    """Base of every cluster message.  ``CODE`` is its wire code."""

    CODE: ClassVar[int] = 0


REGISTRY: dict[int, type[Message]] = {}


def message(code: int) -> Any:
    def deco(cls: type[Message]) -> type[Message]:
        if code in REGISTRY:
            raise ValueError(f"duplicate message code {code}")
        cls.CODE = code
        REGISTRY[code] = cls
        return cls

    return deco


# -- handshake -------------------------------------------------------------
@message(1)
@dataclass(frozen=True, slots=True)
class Hello(Message):
    versions: tuple[int, ...]
    member: str
    role: str  # "backend" | "frontend" | "tool"
    nonce: bytes
    address: tuple[str, int, int]  # (host, port offset, cluster port) of the dialer's services


@message(2)
@dataclass(frozen=True, slots=True)
class Challenge(Message):
    version: int
    member: str
    nonce: bytes
    proof: bytes


@message(3)
@dataclass(frozen=True, slots=True)
class Auth(Message):
    proof: bytes


@message(4)
@dataclass(frozen=True, slots=True)
class Welcome(Message):
    version: int


# -- generic responses -----------------------------------------------------
@message(10)
@dataclass(frozen=True, slots=True)
class Ok(Message):
    id: int


@message(11)
@dataclass(frozen=True, slots=True)
class Error(Message):
    id: int
    code: str  # "not-controller", "unavailable", "fenced", "bad-request", "failed"
    text: str


# -- membership ------------------------------------------------------------
@message(20)
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Member -> Controller every ~250 ms: renews the member's lease."""

    id: int
    member: str
    ready: bool
    sessions: int
    open_accounts: int
    lag_ms: int
    cpu: int  # percent
    rss: int = field(default=0, metadata=_since(2))  # test-only version-2 field


@message(21)
@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    id: int
    controller_epoch: int
    backup: str
    lease_ms: int
    backup_address: tuple[str, int, int]  # ("", 0, 0) when there is no Backup


@message(22)
@dataclass(frozen=True, slots=True)
class Whois(Message):
    """Who is the Controller?  Answered by any backend."""

    id: int


@message(23)
@dataclass(frozen=True, slots=True)
class ControllerInfo(Message):
    id: int
    controller: str  # "" when unknown
    controller_epoch: int
    backup: str
    controller_address: tuple[str, int, int]
    # the answering member hears the Controller now (a renewal acknowledged
    # within T/4, or it is the Controller): a member that lost the Controller
    # learns from this that it is the one cut off (candidacy.py, hold rule 2)
    leased: bool = field(default=False, metadata=_since(6))


@message(24)
@dataclass(frozen=True, slots=True)
class Resync(Message):
    """Member -> new Controller: everything it holds."""

    id: int
    member: str
    role: str
    ready: bool
    version: str
    sessions: int
    accounts: tuple[tuple[str, int], ...]  # (account key, epoch)


@message(25)
@dataclass(frozen=True, slots=True)
class Roles(Message):
    """Controller -> members (event): the current Controller and Backup."""

    controller: str
    controller_epoch: int
    backup: str
    backup_address: tuple[str, int, int]


@message(26)
@dataclass(frozen=True, slots=True)
class SetReady(Message):
    id: int
    member: str
    ready: bool


@message(27)
@dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    id: int


@message(28)
@dataclass(frozen=True, slots=True)
class StatusReply(Message):
    id: int
    controller: str
    backup: str
    controller_epoch: int
    members: tuple[tuple[str, str, bool, bool, int, int, int, str, str], ...]
    # (name, role, alive, ready, load, open_accounts, sessions, version, host)


# -- accounts --------------------------------------------------------------
@message(30)
@dataclass(frozen=True, slots=True)
class Open(Message):
    """Member -> Controller: where may ``account`` be used?  ``recorded``
    is the epoch storage holds for it; a grant is always above it."""

    id: int
    account: str
    recorded: int
    requester: str
    local_only: bool


@message(31)
@dataclass(frozen=True, slots=True)
class Grant(Message):
    id: int
    account: str
    owner: str
    epoch: int
    controller_epoch: int
    owner_address: tuple[str, int, int]


@message(32)
@dataclass(frozen=True, slots=True)
class Release(Message):
    """Member -> Controller (event): the member closed ``account``."""

    account: str
    epoch: int


@message(33)
@dataclass(frozen=True, slots=True)
class Locate(Message):
    id: int
    account: str
    # asked of a member, not of the Controller: answered with this member as
    # the owner when it holds the account with a valid lease, else an Error
    holder: bool = field(default=False, metadata=_since(5))


@message(34)
@dataclass(frozen=True, slots=True)
class Location(Message):
    id: int
    account: str
    owner: str  # "" when not open anywhere
    epoch: int
    owner_address: tuple[str, int, int]


@message(35)
@dataclass(frozen=True, slots=True)
class Deliver(Message):
    """Any member -> owner: store ``data`` in the account's ``mailbox``;
    answered only once the message is durable."""

    id: int
    account: str
    mailbox: str
    flags: tuple[str, ...]
    data: bytes
    # the queue entry (or message) id and the account: an owner that already
    # stored this id answers with the first copy's UID instead of storing
    # the message again (exactly-once hand-off); "" for none
    delivery_id: str = field(default="", metadata=_since(3))
    # the SMTP envelope sender ("" for <>, None when unknown): the owner's
    # Sieve script tests it (envelope "from") and vacation answers it
    sender: str | None = field(default=None, metadata=_since(4))


@message(36)
@dataclass(frozen=True, slots=True)
class Delivered(Message):
    id: int
    uid: int


# -- single service image --------------------------------------------------
@message(40)
@dataclass(frozen=True, slots=True)
class Changed(Message):
    """A shared object changed (event).  Member -> Controller, which
    forwards it to every member; each invalidates its directory caches."""

    kind: str  # "domain", "account", "cluster-settings", "alerts"
    key: str
    origin: str


@message(41)
@dataclass(frozen=True, slots=True)
class AdminCall(Message):
    """Execute an administrative operation on the Controller (for shared
    domains) or on an account's owner.  ``args`` is msgpack-able."""

    id: int
    operation: str
    actor: str
    args: tuple[Any, ...]


@message(42)
@dataclass(frozen=True, slots=True)
class AdminResult(Message):
    id: int
    ok: bool
    value: Any
    code: str
    text: str


@message(43)
@dataclass(frozen=True, slots=True)
class Drain(Message):
    """Make ``member`` Non-Ready and move its open accounts away actively:
    idle ones at once, busy ones as their sessions end, the rest after
    ``grace_ms`` (their sessions are told to reconnect).  Routed like
    ``SetReady``; answered ``Ok``.  A member that does not know it answers
    ``Error("bad-request")``."""

    id: int
    member: str
    grace_ms: int


# -- encoding --------------------------------------------------------------
def _fields_for(cls: type[Message], version: int) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("since", 1) <= version]  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def encode(msg: Message, version: int) -> bytes:
    """One frame (length prefix included) for ``msg`` at ``version``."""
    body = [msg.CODE] + [_plain(getattr(msg, f.name)) for f in _fields_for(type(msg), version)]
    payload = msgpack.packb(body, use_bin_type=True)
    if len(payload) > limits.MAX_FRAME:
        raise ProtocolError(f"frame of {len(payload)} octets exceeds {limits.MAX_FRAME}")
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes, version: int) -> Message:
    try:
        body = msgpack.unpackb(
            payload, raw=False, strict_map_key=False,
            max_bin_len=limits.MAX_FRAME, max_str_len=limits.MAX_FRAME,
            max_array_len=limits.MAX_ARRAY, max_map_len=limits.MAX_ARRAY,
        )
    except Exception as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if not isinstance(body, list) or not body or not isinstance(body[0], int):
        raise ProtocolError("frame is not a message")
    cls = REGISTRY.get(body[0])
    if cls is None:
        raise ProtocolError(f"unknown message code {body[0]}")
    fields = _fields_for(cls, version)
    values = body[1:]
    if len(values) < len(fields):
        raise ProtocolError(f"{cls.__name__}: {len(values)} fields, {len(fields)} expected")
    kwargs = {f.name: _tupled(v) for f, v in zip(fields, values, strict=False)}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ProtocolError(f"{cls.__name__}: {exc}") from None


# -- handshake and connection state ----------------------------------------
def proof(secret: bytes, side: str, version: int, nonce_d: bytes, nonce_l: bytes,
          dialer: str, listener: str, binding: bytes = b"") -> bytes:
    """The handshake proof.  ``binding`` is the TLS channel binding of the
    connection (``tls-unique``) when the link runs over TLS: a proof made on
    one TLS channel is worthless on another, so a man in the middle who
    terminates TLS on both sides cannot pass the proofs through.  Without
    TLS it is empty and the proof is the same as in the plaintext protocol."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    parts = [side.encode(), str(version).encode(), nonce_d, nonce_l, dialer.encode(),
             listener.encode()]
    if binding:
        parts.append(b"tls-unique:" + binding)
    for part in parts:
        mac.update(HEADER.pack(len(part)) + part)
    return mac.digest()


class State(enum.Enum):
    START = "start"  # nothing sent or received
    HELLO_SENT = "hello-sent"  # dialer waits for Challenge
    CHALLENGED = "challenged"  # listener waits for Auth
    AUTH_SENT = "auth-sent"  # dialer waits for Welcome
    OPEN = "open"
    CLOSED = "closed"


HANDSHAKE = (Hello, Challenge, Auth, Welcome)

# (state, side) -> message types that may arrive
ALLOWED: dict[tuple[State, str], tuple[type[Message], ...]] = {
    (State.START, "listener"): (Hello,),
    (State.HELLO_SENT, "dialer"): (Challenge, Error),
    (State.CHALLENGED, "listener"): (Auth,),
    (State.AUTH_SENT, "dialer"): (Welcome, Error),
}


class Connection:
    """Sans-IO state of one cluster connection.

    Feed received bytes to :meth:`receive`; it returns the application
    messages that arrived (handshake messages are consumed here).  Bytes to
    send accumulate in :meth:`outgoing`.  ``side`` is "dialer" or "listener".
    """

    def __init__(self, side: str, member: str, secret: bytes, *, role: str = "backend",
                 versions: tuple[int, ...] | None = None,
                 address: tuple[str, int, int] = ("", 0, 0), binding: bytes = b"") -> None:
        if side not in ("dialer", "listener"):
            raise ValueError(side)
        self.side = side
        self.member = member
        self.role = role
        self.address = address
        self.peer = ""
        self.peer_role = ""
        self.peer_address: tuple[str, int, int] = ("", 0, 0)
        self.version = 0
        self.state = State.START
        self._secret = secret
        self.binding = binding  # TLS channel binding mixed into the proofs (see proof())
        self._versions = versions or supported_versions()
        self._nonce = b""
        self._peer_nonce = b""
        self._inbuf = bytearray()
        self._out = bytearray()

    # -- sending
    def start(self) -> None:
        """Dialer: send Hello."""
        assert self.side == "dialer" and self.state is State.START
        self._nonce = secrets.token_bytes(limits.NONCE_SIZE)
        self._out += encode(Hello(tuple(self._versions), self.member, self.role, self._nonce,
                                  self.address), 1)
        self.state = State.HELLO_SENT

    def send(self, msg: Message) -> None:
        if self.state is not State.OPEN:
            raise ProtocolError(f"cannot send {type(msg).__name__} in state {self.state.value}")
        self._out += encode(msg, self.version)

    def outgoing(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # -- receiving
    def receive(self, data: bytes) -> list[Message]:
        if self.state is State.CLOSED:
            return []
        self._inbuf += data
        out: list[Message] = []
        while True:
            if len(self._inbuf) < HEADER.size:
                if self.state is not State.OPEN and len(self._inbuf) > limits.MAX_HANDSHAKE_FRAME:
                    raise self._fail("handshake too long")
                return out
            (length,) = HEADER.unpack_from(self._inbuf)
            limit = limits.MAX_FRAME if self.state is State.OPEN else limits.MAX_HANDSHAKE_FRAME
            if length > limit:
                raise self._fail(f"frame of {length} octets exceeds {limit}")
            if len(self._inbuf) < HEADER.size + length:
                return out
            payload = bytes(self._inbuf[HEADER.size:HEADER.size + length])
            del self._inbuf[:HEADER.size + length]
            msg = decode_payload(payload, self.version or 1)
            if self.state is State.OPEN:
                if isinstance(msg, HANDSHAKE):
                    raise self._fail(f"unexpected {type(msg).__name__}")
                out.append(msg)
            else:
                self._handshake(msg)

    def _fail(self, why: str, cls: type[ProtocolError] = ProtocolError) -> ProtocolError:
        self.state = State.CLOSED
        return cls(why)

    def _handshake(self, msg: Message) -> None:
        allowed = ALLOWED.get((self.state, self.side), ())
        if not isinstance(msg, allowed):
            raise self._fail(f"{type(msg).__name__} not allowed in state {self.state.value}")
        if isinstance(msg, Error):
            raise self._fail(f"peer refused: {msg.text}", AuthenticationFailed)
        if isinstance(msg, Hello):
            common = set(msg.versions) & set(self._versions)
            if not common:
                raise self._fail(f"no common protocol version (peer {list(msg.versions)})")
            if len(msg.nonce) != limits.NONCE_SIZE:
                raise self._fail("bad nonce")
            self.version = max(common)
            self.peer, self.peer_role, self._peer_nonce = msg.member, msg.role, msg.nonce
            self.peer_address = msg.address
            self._nonce = secrets.token_bytes(limits.NONCE_SIZE)
            p = proof(self._secret, "listener", self.version, self._peer_nonce, self._nonce,
                      self.peer, self.member, self.binding)
            self._out += encode(Challenge(self.version, self.member, self._nonce, p), 1)
            self.state = State.CHALLENGED
        elif isinstance(msg, Challenge):
            if msg.version not in self._versions or len(msg.nonce) != limits.NONCE_SIZE:
                raise self._fail("bad challenge")
            expect = proof(self._secret, "listener", msg.version, self._nonce, msg.nonce,
                           self.member, msg.member, self.binding)
            if not hmac.compare_digest(expect, msg.proof):
                raise self._fail("listener does not know the cluster secret", AuthenticationFailed)
            self.version, self.peer, self._peer_nonce = msg.version, msg.member, msg.nonce
            p = proof(self._secret, "dialer", self.version, self._nonce, self._peer_nonce,
                      self.member, self.peer, self.binding)
            self._out += encode(Auth(p), 1)
            self.state = State.AUTH_SENT
        elif isinstance(msg, Auth):
            expect = proof(self._secret, "dialer", self.version, self._peer_nonce, self._nonce,
                           self.peer, self.member, self.binding)
            if not hmac.compare_digest(expect, msg.proof):
                self._out += encode(Error(0, "auth", "authentication failed"), 1)
                raise self._fail("dialer does not know the cluster secret", AuthenticationFailed)
            self._out += encode(Welcome(self.version), 1)
            self.state = State.OPEN
        elif isinstance(msg, Welcome):
            if msg.version != self.version:
                raise self._fail("version mismatch in Welcome")
            self.state = State.OPEN

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN
