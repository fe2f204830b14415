"""The sans-IO POP3 server core (RFC 1939, 2449 CAPA, 2595 STLS, 5034 SASL).

Bytes go in through :meth:`Pop3Server.receive_data`; events come out of
:meth:`Pop3Server.next_event`; replies are taken from
:meth:`Pop3Server.data_to_send`.  Login is a decision the adapter makes:
the core emits :class:`Login` and waits (``PAUSED``) until the adapter calls
:meth:`login_succeeded` with the maildrop or :meth:`login_failed`.

The maildrop is fixed at login (RFC 1939 section 5: message numbers do not
change during a session).  DELE only marks; the marks are acted upon only
when QUIT is received in the TRANSACTION state (the UPDATE state, section
6): the core then emits :class:`Update` with the UIDs to remove.  A session
that ends any other way (dropped connection, timeout) deletes nothing.

States and the commands valid in each are data (:data:`COMMANDS`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynamail.cluster.challenge import NO_CHALLENGE, ChallengeRefused, RelayChallenge
from dynamail.pop3.limits import (
    MAX_ARGUMENT,
    MAX_AUTH_FAILURES,
    MAX_COMMAND_LINE,
    MAX_SASL_LINE,
    MAX_UNAUTHENTICATED_COMMANDS,
)
from dynamail.sansio import NEED_DATA, PAUSED, ByteBuffers, Sentinel
from dynamail.sasl import decode_response, split_plain


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    SASL = "sasl"  # AUTH exchange in progress
    TRANSACTION = "transaction"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class MaildropEntry:
    uid: int
    size: int  # octets (CRLF form), as LIST reports them
    uidl: str  # unique-id (RFC 1939 7: 1-70 characters 0x21-0x7E)


@dataclass(frozen=True, slots=True)
class Login:
    """Decision needed.  ``kind`` is "pass", "apop", "sasl" or "relay";
    ``secret`` is the password, the APOP digest or the relay ticket;
    ``challenge`` the relay nonce this connection issued (and spent), or
    NO_CHALLENGE (cluster/challenge.py)."""

    kind: str
    user: str
    secret: str
    authzid: str = ""
    challenge: bytes = NO_CHALLENGE


@dataclass(frozen=True, slots=True)
class StartTls:
    """Flush, upgrade the connection, then call tls_started()."""


@dataclass(frozen=True, slots=True)
class Retrieve:
    """Send the message (the +OK line is queued); ``lines`` is None for RETR,
    the TOP line count otherwise.  The adapter sends the stuffed content and
    the terminating ``.CRLF`` after flushing ``data_to_send()``."""

    uid: int
    lines: int | None


@dataclass(frozen=True, slots=True)
class Update:
    """QUIT in TRANSACTION: remove ``uids``, then call update_done()."""

    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Closing:
    """The last reply is queued; flush and close."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client went away (nothing is deleted)."""


Event = Login | StartTls | Retrieve | Update | Closing | ConnectionClosed


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    states: frozenset[State]
    handler: Callable[[Pop3Server, list[str]], Event | None]


@dataclass
class Pop3Config:
    hostname: str
    timestamp: str = ""  # APOP token "<...>" (RFC 1939 7), shown in the greeting
    tls_available: bool = False
    tls_active: bool = False
    plaintext_auth: bool = False  # allow USER/PASS, APOP and AUTH PLAIN without TLS
    relay_command: bool = False  # accept XDYNAMAIL-CHALLENGE and XDYNAMAIL-RELAY (cluster member)


def ok(text: str = "") -> bytes:
    return b"+OK" + (b" " + text.encode("utf-8", "replace") if text else b"") + b"\r\n"


def err(text: str) -> bytes:
    return b"-ERR " + text.encode("utf-8", "replace") + b"\r\n"


class Pop3Server(ByteBuffers):
    """One POP3 session, sans I/O."""

    def __init__(self, config: Pop3Config) -> None:
        self.config = config
        self.state = State.AUTHORIZATION
        self.tls_active = config.tls_active
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._pending: str | None = None
        self._discard_line = False
        self._user: str | None = None
        self._failures = 0
        self._commands = 0
        self.maildrop: list[MaildropEntry] = []
        self.deleted: set[int] = set()  # 1-based message numbers marked by DELE
        self.relay_challenge = RelayChallenge()

    # -- I/O ------------------------------------------------------------------
    def greeting(self) -> None:
        stamp = f" {self.config.timestamp}" if self.config.timestamp else ""
        self._out += ok(f"dynamail POP3 server ready{stamp}")

    @property
    def plaintext_allowed(self) -> bool:
        return self.tls_active or self.config.plaintext_auth

    def capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.state is State.AUTHORIZATION:
            if self.plaintext_allowed:
                caps.append("USER")
                caps.append("SASL PLAIN")
            if self.config.tls_available and not self.tls_active:
                caps.append("STLS")
        caps.append("IMPLEMENTATION dynamail")
        return caps

    # -- events -----------------------------------------------------------------
    def next_event(self) -> Event | Sentinel:
        if self._pending is not None:
            return PAUSED
        if self.state is State.CLOSED:
            return NEED_DATA
        line = self._take_line()
        if line is None:
            if self._eof:
                self.state = State.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        if self.state is State.SASL:
            ev = self._sasl_response(line)
        else:
            ev = self._command(line)
        return self.next_event() if ev is None else ev

    def _take_line(self) -> bytes | None:
        while True:
            idx = self._in.find(b"\n")
            if idx < 0:
                if len(self._in) > MAX_SASL_LINE:
                    self._in.clear()
                    if not self._discard_line:
                        self._discard_line = True
                        self._out += err("Line too long")
                return None
            line = bytes(self._in[: idx + 1])
            del self._in[: idx + 1]
            if self._discard_line:
                self._discard_line = False
                continue
            return line

    def _command(self, raw: bytes) -> Event | None:
        if self.state is State.AUTHORIZATION:
            self._commands += 1
            if self._commands > MAX_UNAUTHENTICATED_COMMANDS:
                return self._close(err("Too many commands without login"))
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        words = text.split(" ")
        verb = words[0].upper()
        args = [w for w in words[1:] if w]
        if verb != "AUTH" and len(raw) > MAX_COMMAND_LINE:
            self._out += err("Line too long")
            return None
        cmd = COMMANDS.get(verb)
        if cmd is None or (verb in RELAY_COMMANDS and not self.config.relay_command):
            self._out += err("Unknown command")
            return None
        if self.state not in cmd.states:
            self._out += err(f"{verb} not valid in this state")
            return None
        if verb not in ("PASS", "AUTH", "XDYNAMAIL-RELAY") and any(len(a) > MAX_ARGUMENT for a in args):
            self._out += err("Argument too long")
            return None
        return cmd.handler(self, args)

    def _close(self, line: bytes) -> Closing:
        self._out += line
        self.state = State.CLOSED
        return Closing()

    # -- AUTHORIZATION ------------------------------------------------------------
    def _capa(self, args: list[str]) -> Event | None:
        self._out += ok("Capability list follows")
        for cap in self.capabilities():
            self._out += cap.encode() + b"\r\n"
        self._out += b".\r\n"
        return None

    def _stls(self, args: list[str]) -> Event | None:
        if self.tls_active:
            self._out += err("Already using TLS")
            return None
        if not self.config.tls_available:
            self._out += err("TLS not available")
            return None
        self._out += ok("Begin TLS negotiation")
        return StartTls()

    def tls_started(self) -> None:
        """RFC 2595 4: discard pipelined input; the session starts over."""
        self._in.clear()
        self.tls_active = True
        self._user = None

    def _user_cmd(self, args: list[str]) -> Event | None:
        if not self.plaintext_allowed:
            self._out += err("[AUTH] Plaintext authentication disallowed, use STLS")
            return None
        if len(args) != 1:
            self._out += err("Syntax: USER name")
            return None
        self._user = args[0]
        self._out += ok("Send your password")
        return None

    def _pass(self, raw_args: list[str]) -> Event | None:
        if self._user is None:
            self._out += err("Send USER first")
            return None
        if not raw_args:
            self._out += err("Syntax: PASS password")
            return None
        # RFC 1939 7: the password may contain spaces
        password = " ".join(raw_args)
        user, self._user = self._user, None
        self._pending = "login"
        return Login("pass", user, password)

    def _apop(self, args: list[str]) -> Event | None:
        # the digest travels in clear and can be attacked offline: APOP
        # follows the same rule as USER/PASS
        if not self.plaintext_allowed:
            self._out += err("[AUTH] Plaintext authentication disallowed, use STLS")
            return None
        if not self.config.timestamp:
            self._out += err("APOP not available")
            return None
        if len(args) != 2:
            self._out += err("Syntax: APOP name digest")
            return None
        self._pending = "login"
        return Login("apop", args[0], args[1].lower())

    def _challenge(self, args: list[str]) -> Event | None:
        if args:
            self._out += err("Syntax: XDYNAMAIL-CHALLENGE")
            return None
        try:
            self._out += ok(self.relay_challenge.issue())
        except ChallengeRefused as exc:
            self._out += err(str(exc))
        return None

    def _relay(self, args: list[str]) -> Event | None:
        if len(args) != 1:
            self._out += err("Syntax: XDYNAMAIL-RELAY ticket")
            return None
        try:
            challenge = self.relay_challenge.take()
        except ChallengeRefused as exc:
            self._out += err(f"[AUTH] {exc}")
            return None
        self._pending = "login"
        return Login("relay", "", args[0], challenge=challenge)

    def _auth(self, args: list[str]) -> Event | None:
        if not args:
            # RFC 5034 4 leaves bare AUTH unspecified; list the mechanisms
            self._out += ok("Methods follow")
            if self.plaintext_allowed:
                self._out += b"PLAIN\r\n"
            self._out += b".\r\n"
            return None
        mech = args[0].upper()
        if mech != "PLAIN":
            self._out += err("Unrecognized authentication type")
            return None
        if not self.plaintext_allowed:
            self._out += err("[AUTH] Plaintext authentication disallowed, use STLS")
            return None
        if len(args) > 1:
            return self._sasl_plain(args[1])
        self.state = State.SASL
        self._out += b"+ \r\n"
        return None

    def _sasl_response(self, raw: bytes) -> Event | None:
        self.state = State.AUTHORIZATION
        return self._sasl_plain(raw.rstrip(b"\r\n").decode("ascii", "replace"))

    def _sasl_plain(self, text: str) -> Event | None:
        if text == "*":
            self._out += err("Authentication cancelled")
            return None
        value = decode_response(text)
        if value is None:
            self._out += err("Cannot decode response")
            return None
        plain = split_plain(value)
        if plain is None:
            self._out += err("Malformed PLAIN response")
            return None
        authzid, login, password = plain
        self._pending = "login"
        return Login("sasl", login, password, authzid)

    def login_succeeded(self, maildrop: Sequence[MaildropEntry]) -> None:
        assert self._pending == "login"
        self._pending = None
        self.maildrop = list(maildrop)
        self.deleted = set()
        self.state = State.TRANSACTION
        total = sum(m.size for m in self.maildrop)
        self._out += ok(f"Logged in, {len(self.maildrop)} messages ({total} octets)")

    def login_failed(self, text: str = "[AUTH] Authentication failed") -> Closing | None:
        """Returns Closing when the failure limit is reached."""
        assert self._pending == "login"
        self._pending = None
        self._failures += 1
        if self._failures >= MAX_AUTH_FAILURES:
            return self._close(err("[AUTH] Too many failures, closing connection"))
        self._out += err(text)
        return None

    def login_unavailable(self, text: str = "[SYS/TEMP] Mailbox temporarily unavailable") -> None:
        assert self._pending == "login"
        self._pending = None
        self._out += err(text)

    @property
    def login_failures(self) -> int:
        return self._failures

    # -- TRANSACTION ----------------------------------------------------------------
    def _message_number(self, arg: str) -> int | None:
        """1-based number of an existing, undeleted message, else None (error queued)."""
        if not arg.isdigit() or len(arg) > 10:
            self._out += err("Invalid message number")
            return None
        n = int(arg)
        if n < 1 or n > len(self.maildrop):
            self._out += err("No such message")
            return None
        if n in self.deleted:
            self._out += err(f"Message {n} already deleted")
            return None
        return n

    def _stat(self, args: list[str]) -> Event | None:
        live = [m for i, m in enumerate(self.maildrop, 1) if i not in self.deleted]
        self._out += ok(f"{len(live)} {sum(m.size for m in live)}")
        return None

    def _listing(self, args: list[str], value: Callable[[int, MaildropEntry], str]) -> None:
        if args:
            n = self._message_number(args[0])
            if n is not None:
                self._out += ok(f"{n} {value(n, self.maildrop[n - 1])}")
            return
        self._out += ok("Listing follows")
        for i, m in enumerate(self.maildrop, 1):
            if i not in self.deleted:
                self._out += f"{i} {value(i, m)}\r\n".encode()
        self._out += b".\r\n"

    def _list(self, args: list[str]) -> Event | None:
        self._listing(args, lambda i, m: str(m.size))
        return None

    def _uidl(self, args: list[str]) -> Event | None:
        self._listing(args, lambda i, m: m.uidl)
        return None

    def _retr(self, args: list[str]) -> Event | None:
        if len(args) != 1:
            self._out += err("Syntax: RETR msg")
            return None
        n = self._message_number(args[0])
        if n is None:
            return None
        m = self.maildrop[n - 1]
        self._out += ok(f"{m.size} octets")
        return Retrieve(m.uid, None)

    def _top(self, args: list[str]) -> Event | None:
        if len(args) != 2 or not args[1].isdigit():
            self._out += err("Syntax: TOP msg lines")
            return None
        n = self._message_number(args[0])
        if n is None:
            return None
        self._out += ok("Top of message follows")
        return Retrieve(self.maildrop[n - 1].uid, int(args[1]))

    def _dele(self, args: list[str]) -> Event | None:
        if len(args) != 1:
            self._out += err("Syntax: DELE msg")
            return None
        n = self._message_number(args[0])
        if n is None:
            return None
        self.deleted.add(n)
        self._out += ok(f"Message {n} deleted")
        return None

    def _rset(self, args: list[str]) -> Event | None:
        self.deleted.clear()
        self._out += ok(f"{len(self.maildrop)} messages")
        return None

    def _noop(self, args: list[str]) -> Event | None:
        self._out += ok()
        return None

    def _quit(self, args: list[str]) -> Event | None:
        if self.state is State.TRANSACTION:
            uids = tuple(self.maildrop[n - 1].uid for n in sorted(self.deleted))
            self._pending = "update"
            return Update(uids)
        return self._close(ok("dynamail POP3 server signing off"))

    def update_done(self, success: bool = True) -> Closing:
        """RFC 1939 6: +OK when every marked message was removed."""
        assert self._pending == "update"
        self._pending = None
        if success:
            return self._close(ok(f"dynamail POP3 server signing off ({len(self.deleted)} messages deleted)"))
        return self._close(err("[SYS/TEMP] Some deleted messages not removed"))

    def idle_timeout(self) -> Closing:
        return self._close(err("Autologout; idle for too long"))

    def unavailable(self) -> Closing:
        """The account's store was closed or fenced (it is moving to another
        server): a temporary failure, and the session ends (no UPDATE)."""
        self._pending = None
        return self._close(err("[SYS/TEMP] Account moving to another server, please reconnect"))

    def shutting_down(self) -> Closing:
        """The server is stopping: say so and end the session (no UPDATE)."""
        return self._close(err("[SYS/TEMP] Server shutting down"))


RELAY_COMMANDS = frozenset({"XDYNAMAIL-CHALLENGE", "XDYNAMAIL-RELAY"})  # cluster members only
_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTH | _TRANS

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("CAPA", _BOTH, Pop3Server._capa),
        Command("QUIT", _BOTH, Pop3Server._quit),
        Command("STLS", _AUTH, Pop3Server._stls),
        Command("USER", _AUTH, Pop3Server._user_cmd),
        Command("PASS", _AUTH, Pop3Server._pass),
        Command("APOP", _AUTH, Pop3Server._apop),
        Command("AUTH", _AUTH, Pop3Server._auth),
        Command("XDYNAMAIL-CHALLENGE", _AUTH, Pop3Server._challenge),
        Command("XDYNAMAIL-RELAY", _AUTH, Pop3Server._relay),
        Command("STAT", _TRANS, Pop3Server._stat),
        Command("LIST", _TRANS, Pop3Server._list),
        Command("UIDL", _TRANS, Pop3Server._uidl),
        Command("RETR", _TRANS, Pop3Server._retr),
        Command("TOP", _TRANS, Pop3Server._top),
        Command("DELE", _TRANS, Pop3Server._dele),
        Command("RSET", _TRANS, Pop3Server._rset),
        Command("NOOP", _TRANS, Pop3Server._noop),
    )
}


class TopFilter:
    """TOP (RFC 1939 7): the header, the blank line, then ``lines`` body lines.

    Feed consecutive chunks of the message; the output (not yet dot-stuffed)
    stops once enough lines have passed; :attr:`done` then turns True.
    """

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.done = False
        self._in_body = False
        self._carry = b""

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        if self.done:
            return b""
        data = self._carry + chunk
        out: list[bytes] = []
        pos = 0
        while True:
            idx = data.find(b"\n", pos)
            if idx < 0:
                break
            line = data[pos : idx + 1]
            pos = idx + 1
            if not self._in_body:
                out.append(line)
                if line in (b"\r\n", b"\n"):
                    self._in_body = True
                    if self.lines == 0:
                        self.done = True
                        break
                continue
            if self.lines <= 0:
                self.done = True
                break
            out.append(line)
            self.lines -= 1
            if self.lines == 0:
                self.done = True
                break
        self._carry = b"" if self.done else data[pos:]
        if final and not self.done:
            out.append(self._carry)
            self._carry = b""
            self.done = True
        return b"".join(out)
