"""The sans-IO ManageSieve server core (RFC 5804).

Bytes go in through :meth:`ManageSieveServer.receive_data`; events come
out of :meth:`ManageSieveServer.next_event`; replies are taken from
:meth:`ManageSieveServer.data_to_send`.  Decisions that need the outside
world are events: :class:`Login` (check credentials, then
:meth:`login_succeeded`/:meth:`login_failed`), :class:`StartTls`, and
:class:`ScriptOp` (an operation on the account's scripts, answered with
:meth:`op_done` or :meth:`op_failed`).  While one is outstanding the core
is ``PAUSED`` and reads nothing more.

Commands are read incrementally: a line, then each literal (``{n}`` or
``{n+}``, RFC 5804 4) it announces, then the rest of the line.  Nothing is
re-scanned, so the work per byte is constant; the line is bounded by
``MAX_COMMAND_LINE`` and a literal by ``MAX_LITERAL`` (a larger literal is
read and dropped, then refused with ``QUOTA/MAXSIZE``).  Scripts are checked
here (PUTSCRIPT, CHECKSCRIPT) with the same compiler that delivery uses.

States and the commands valid in each are data (:data:`COMMANDS`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynamail.cluster.challenge import NO_CHALLENGE, ChallengeRefused, RelayChallenge
from dynamail.managesieve.limits import (
    MAX_ARGUMENTS,
    MAX_AUTH_FAILURES,
    MAX_COMMAND_LINE,
    MAX_LITERAL,
    MAX_UNAUTHENTICATED_COMMANDS,
)
from dynamail.sansio import NEED_DATA, PAUSED, ByteBuffers, Sentinel
from dynamail.sasl import decode_response, split_plain
from dynamail.sieve import limits as sieve_limits
from dynamail.sieve.commands import CAPABILITIES, compile_script
from dynamail.sieve.grammar import SieveError
from dynamail.sieve.scripts import ScriptError, check_name

__all__ = ["NEED_DATA", "PAUSED", "Sentinel"]


class State(enum.Enum):
    NONAUTH = "nonauth"
    SASL = "sasl"  # waiting for the client's SASL response
    AUTH = "auth"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Login:
    """Decision needed: ``kind`` "plain" (user, password, authzid) or "relay"
    (ticket, and ``challenge``: the relay nonce this connection issued and
    spent, or NO_CHALLENGE; cluster/challenge.py)."""

    kind: str
    user: str
    secret: str
    authzid: str = ""
    challenge: bytes = NO_CHALLENGE


@dataclass(frozen=True, slots=True)
class StartTls:
    """Flush, upgrade the connection, then call tls_started()."""


@dataclass(frozen=True, slots=True)
class ScriptOp:
    """An operation on the account's scripts: ``op`` is "list", "get", "put",
    "delete", "rename" or "activate"; ``args`` its names (and text)."""

    op: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Closing:
    """The last reply is queued; flush and close."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client went away."""


Event = Login | StartTls | ScriptOp | Closing | ConnectionClosed

Arg = str | int  # a string (quoted or literal) or a number


class ProtocolError(Exception):
    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    states: frozenset[State]
    args: tuple[str, ...]  # "string" | "number", "?" suffix: optional
    handler: Callable[[ManageSieveServer, list[Arg]], Event | None]


@dataclass
class ManageSieveConfig:
    hostname: str
    tls_available: bool = False
    tls_active: bool = False
    plaintext_auth: bool = False  # allow AUTHENTICATE PLAIN without TLS
    relay_command: bool = False  # accept XDYNAMAIL-CHALLENGE and XDYNAMAIL-RELAY (cluster member)
    implementation: str = "dynamail"


def quoted(text: str) -> bytes:
    """A string as RFC 5804 4 writes it: quoted when it can be, else a literal."""
    data = text.encode("utf-8")
    if len(data) <= 1024 and b"\r" not in data and b"\n" not in data and b"\0" not in data:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def response(kind: str, text: str = "", code: str = "") -> bytes:
    out = kind.encode()
    if code:
        out += b" (" + code.encode() + b")"
    if text:
        out += b" " + quoted(text)
    return out + b"\r\n"


class ManageSieveServer(ByteBuffers):
    """One ManageSieve session, sans I/O."""

    def __init__(self, config: ManageSieveConfig) -> None:
        self.config = config
        self.state = State.NONAUTH
        self.tls_active = config.tls_active
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._pending: str | None = None  # the decision awaited ("login", "tls", op name)
        self._args: list[Arg] = []
        self._line_size = 0
        self._literal_left = 0
        self._literal = bytearray()
        self._literal_reading = False
        self._literal_too_big = False
        self._drop_reason: tuple[str, str] | None = None  # why the literal being read is dropped
        self._skip_line = False  # the rest of an overlong line is dropped
        self._failures = 0
        self._commands = 0
        self.user = ""
        self.relay_challenge = RelayChallenge()

    # -- greeting and capabilities (RFC 5804 1.7) -------------------------------
    @property
    def plaintext_allowed(self) -> bool:
        return self.tls_active or self.config.plaintext_auth

    def capability_lines(self) -> bytes:
        lines = [
            b'"IMPLEMENTATION" ' + quoted(self.config.implementation),
            b'"SIEVE" ' + quoted(" ".join(c for c in CAPABILITIES if not c.startswith("comparator-i;a")
                                          or c == "comparator-i;ascii-numeric")),
            b'"SASL" ' + quoted("PLAIN" if self.plaintext_allowed and self.state is not State.AUTH else ""),
            b'"MAXREDIRECTS" ' + quoted(str(sieve_limits.MAX_REDIRECTS)),
            b'"VERSION" "1.0"',
        ]
        if self.config.tls_available and not self.tls_active and self.state is State.NONAUTH:
            lines.append(b'"STARTTLS"')
        return b"".join(line + b"\r\n" for line in lines)

    def greeting(self) -> None:
        self._out += self.capability_lines() + response("OK", f"{self.config.hostname} ManageSieve ready")

    # -- events -------------------------------------------------------------------
    def next_event(self) -> Event | Sentinel:
        while True:
            if self._pending is not None:
                return PAUSED
            if self.state is State.CLOSED:
                return NEED_DATA
            try:
                args = self._read_command()
            except ProtocolError as exc:
                self._reset()
                self._out += response("NO", exc.text, exc.code)
                continue
            if args is None:
                if self._eof:
                    self.state = State.CLOSED
                    return ConnectionClosed()
                return NEED_DATA
            ev = self._sasl_response(args) if self.state is State.SASL else self._dispatch(args)
            if ev is not None:
                return ev

    def _reset(self) -> None:
        self._args = []
        self._line_size = 0
        self._literal_reading = False
        self._literal_too_big = False
        self._drop_reason = None
        self._literal = bytearray()

    def _read_command(self) -> list[Arg] | None:
        """The next complete command as its tokens; None if more bytes are needed."""
        while True:
            if self._literal_reading:
                take = min(self._literal_left, len(self._in))
                if not self._literal_too_big:
                    self._literal += self._in[:take]
                del self._in[:take]
                self._literal_left -= take
                if self._literal_left:
                    return None
                self._literal_reading = False
                if self._drop_reason is not None:
                    text, code = self._drop_reason
                    self._skip_line = True  # the rest of the command is dropped
                    raise ProtocolError(text, code)
                try:
                    self._args.append(bytes(self._literal).decode("utf-8"))
                except UnicodeDecodeError:
                    self._skip_line = True
                    raise ProtocolError("String is not UTF-8") from None
                self._literal = bytearray()
                continue
            idx = self._in.find(b"\n")
            if idx < 0:
                if len(self._in) + self._line_size > MAX_COMMAND_LINE:
                    self._in.clear()
                    if not self._skip_line:
                        self._skip_line = True
                        self._args = []
                        self._line_size = 0
                        raise ProtocolError("Line too long")
                return None
            raw = bytes(self._in[: idx + 1])
            del self._in[: idx + 1]
            if self._skip_line:
                self._skip_line = False
                self._reset()
                continue
            self._line_size += len(raw)
            if self._line_size > MAX_COMMAND_LINE:
                self._reset()
                raise ProtocolError("Line too long")
            literal = self._tokenize(raw.rstrip(b"\r\n"))
            if len(self._args) > MAX_ARGUMENTS + 1:
                if literal is None:
                    self._reset()
                    raise ProtocolError("Too many arguments")
                self._drop_reason = ("Too many arguments", "")
            if literal is None:
                args, self._args, self._line_size = self._args, [], 0
                return args
            self._literal_reading = True
            self._literal_left = literal
            if literal > MAX_LITERAL:
                self._drop_reason = ("Literal too large", "QUOTA/MAXSIZE")
            self._literal_too_big = self._drop_reason is not None

    def _tokenize(self, line: bytes) -> int | None:
        """Append the tokens of one line piece; the size of a literal it ends with."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("Command is not UTF-8") from None
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c == " ":
                i += 1
            elif c == '"':
                j, buf = i + 1, []
                while True:
                    if j >= n:
                        raise ProtocolError("Unterminated string")
                    if text[j] == "\\" and j + 1 < n and text[j + 1] in '"\\':
                        buf.append(text[j + 1])
                        j += 2
                    elif text[j] == '"':
                        break
                    else:
                        buf.append(text[j])
                        j += 1
                self._args.append("".join(buf))
                i = j + 1
            elif c == "{":
                end = text.find("}", i)
                if end != n - 1:
                    raise ProtocolError("Bad literal")
                inner = text[i + 1:end].rstrip("+")
                if not (inner.isascii() and inner.isdigit()) or len(inner) > 10:
                    raise ProtocolError("Bad literal")
                return int(inner)
            else:
                j = i
                while j < n and text[j] != " ":
                    j += 1
                word = text[i:j]
                self._args.append(int(word) if word.isascii() and word.isdigit() and len(word) < 19 else word)
                i = j
        return None

    def _dispatch(self, args: list[Arg]) -> Event | None:
        if not args or not isinstance(args[0], str):
            self._out += response("NO", "Command expected")
            return None
        name = args[0].upper()
        if self.state is State.NONAUTH:
            self._commands += 1
            if self._commands > MAX_UNAUTHENTICATED_COMMANDS:
                return self._bye("Too many commands without authentication")
        cmd = COMMANDS.get(name)
        if cmd is None or (name in RELAY_COMMANDS and not self.config.relay_command):
            self._out += response("NO", "Unknown command")
            return None
        if self.state not in cmd.states:
            self._out += response("NO", "Not allowed now")
            return None
        given = args[1:]
        kinds = cmd.args
        required = sum(1 for k in kinds if not k.endswith("?"))
        if not required <= len(given) <= len(kinds):
            self._out += response("NO", f"Wrong number of arguments to {name}")
            return None
        for kind, value in zip(kinds, given, strict=False):
            want_number = kind.rstrip("?") == "number"
            if want_number != isinstance(value, int):
                self._out += response("NO", f"Bad arguments to {name}")
                return None
        return cmd.handler(self, list(given))

    def _bye(self, text: str, code: str = "") -> Closing:
        self._out += response("BYE", text, code)
        self.state = State.CLOSED
        return Closing()

    # -- adapter decisions ---------------------------------------------------------
    def tls_started(self) -> None:
        """RFC 5804 2.2: after TLS the capabilities are sent again."""
        assert self._pending == "tls"
        self._pending = None
        self.tls_active = True
        self._out += self.capability_lines() + response("OK", "TLS active")

    def login_succeeded(self, user: str) -> None:
        assert self._pending == "login"
        self._pending = None
        self.user = user
        self.state = State.AUTH
        self._out += response("OK", "Logged in")

    def login_failed(self, text: str = "Authentication failed", code: str = "") -> None:
        assert self._pending == "login"
        self._pending = None
        self.state = State.NONAUTH
        self._failures += 1
        if self._failures >= MAX_AUTH_FAILURES:
            self._bye("Too many failed authentications")
            return
        self._out += response("NO", text, code)

    def login_unavailable(self) -> None:
        """The account cannot be opened now (RFC 5804 1.3 TRYLATER)."""
        self._pending = None
        self._bye("Account temporarily unavailable", "TRYLATER")

    def op_done(self, value: object = None) -> None:
        op = self._pending
        self._pending = None
        if op == "list":
            assert isinstance(value, list)
            for name, active in value:
                self._out += quoted(name) + (b" ACTIVE" if active else b"") + b"\r\n"
        elif op == "get":
            assert isinstance(value, str)
            data = value.encode("utf-8")
            self._out += b"{%d}\r\n" % len(data) + data + b"\r\n"
        self._out += response("OK")

    def op_failed(self, code: str, text: str) -> None:
        self._pending = None
        self._out += response("NO", text, code)

    def shutting_down(self) -> None:
        if self.state is not State.CLOSED:
            self._bye("Server shutting down", "TRYLATER")

    def idle_timeout(self) -> None:
        if self.state is not State.CLOSED:
            self._bye("Idle for too long")

    # -- command handlers ---------------------------------------------------------
    def _op(self, op: str, *args: str) -> ScriptOp:
        self._pending = op
        return ScriptOp(op, args)

    def _name(self, value: Arg) -> str | None:
        name = str(value)
        try:
            check_name(name)
        except ScriptError as exc:
            self._out += response("NO", exc.text)
            return None
        return name

    def _check(self, text: str) -> bool:
        if len(text.encode("utf-8")) > sieve_limits.MAX_SCRIPT_SIZE:
            self._out += response("NO", "Script too large", "QUOTA/MAXSIZE")
            return False
        try:
            compile_script(text)
        except SieveError as exc:
            self._out += response("NO", str(exc))
            return False
        return True

    def _capability(self, args: list[Arg]) -> None:
        self._out += self.capability_lines() + response("OK")

    def _noop(self, args: list[Arg]) -> None:
        if args:
            self._out += b"OK (TAG " + quoted(str(args[0])) + b') "Done"\r\n'
        else:
            self._out += response("OK", "Done")

    def _logout(self, args: list[Arg]) -> Closing:
        self._out += response("OK", "Logout")
        self.state = State.CLOSED
        return Closing()

    def _starttls(self, args: list[Arg]) -> StartTls | None:
        if not self.config.tls_available or self.tls_active:
            self._out += response("NO", "TLS not available")
            return None
        self._out += response("OK", "Begin TLS negotiation now")
        self._pending = "tls"
        return StartTls()

    def _authenticate(self, args: list[Arg]) -> Login | None:
        mech = str(args[0]).upper()
        if mech != "PLAIN":
            self._out += response("NO", "Unsupported mechanism")
            return None
        if not self.plaintext_allowed:
            self._out += response("NO", "Authentication requires TLS", "ENCRYPT-NEEDED")
            return None
        if len(args) > 1:
            return self._plain(str(args[1]))
        self.state = State.SASL
        self._out += b'""\r\n'  # RFC 5804 2.1: an empty challenge
        return None

    def _sasl_response(self, args: list[Arg]) -> Login | None:
        self.state = State.NONAUTH
        if len(args) != 1 or not isinstance(args[0], str):
            self._out += response("NO", "Bad SASL response")
            return None
        if args[0] == "*":
            self._out += response("NO", "Authentication cancelled")
            return None
        return self._plain(args[0])

    def _plain(self, b64: str) -> Login | None:
        decoded = decode_response(b64)
        parts = split_plain(decoded) if decoded is not None else None
        if parts is None:
            self._out += response("NO", "Bad SASL response")
            return None
        authzid, user, password = parts
        self._pending = "login"
        return Login("plain", user, password, authzid)

    def _challenge(self, args: list[Arg]) -> None:
        """``OK (XDYNAMAIL-CHALLENGE "<nonce>")``: the nonce in a response
        code, as RFC 5804 section 1.3 carries SASL data."""
        try:
            nonce = self.relay_challenge.issue()
        except ChallengeRefused as exc:
            self._out += response("NO", str(exc))
            return
        self._out += response("OK", "", f'XDYNAMAIL-CHALLENGE "{nonce}"')

    def _relay(self, args: list[Arg]) -> Login | None:
        try:
            challenge = self.relay_challenge.take()
        except ChallengeRefused as exc:
            self._out += response("NO", str(exc))
            return None
        self._pending = "login"
        return Login("relay", "", str(args[0]), challenge=challenge)

    def _havespace(self, args: list[Arg]) -> None:
        if self._name(args[0]) is None:
            return
        size = args[1]
        assert isinstance(size, int)
        if size > sieve_limits.MAX_SCRIPT_SIZE:
            self._out += response("NO", "Script too large", "QUOTA/MAXSIZE")
        else:
            self._out += response("OK")

    def _putscript(self, args: list[Arg]) -> ScriptOp | None:
        name = self._name(args[0])
        if name is None or not self._check(str(args[1])):
            return None
        return self._op("put", name, str(args[1]))

    def _checkscript(self, args: list[Arg]) -> None:
        if self._check(str(args[0])):
            self._out += response("OK")

    def _listscripts(self, args: list[Arg]) -> ScriptOp:
        return self._op("list")

    def _renamescript(self, args: list[Arg]) -> ScriptOp | None:
        old, new = self._name(args[0]), None
        if old is not None:
            new = self._name(args[1])
        if old is None or new is None:
            return None
        return self._op("rename", old, new)


def _named_op(op: str) -> Callable[[ManageSieveServer, list[Arg]], ScriptOp | None]:
    """SETACTIVE, GETSCRIPT, DELETESCRIPT: one script name (SETACTIVE "" deactivates)."""
    def handler(core: ManageSieveServer, args: list[Arg]) -> ScriptOp | None:
        value = str(args[0])
        if op == "activate" and value == "":
            return core._op(op, "")
        name = core._name(value)
        return None if name is None else core._op(op, name)
    return handler


RELAY_COMMANDS = frozenset({"XDYNAMAIL-CHALLENGE", "XDYNAMAIL-RELAY"})  # cluster members only
_ANY = frozenset({State.NONAUTH, State.AUTH})
_NONAUTH = frozenset({State.NONAUTH})
_AUTH = frozenset({State.AUTH})
S = ManageSieveServer


def _cmds(rows: Sequence[tuple[str, frozenset[State], tuple[str, ...], Callable[..., Event | None]]]
          ) -> dict[str, Command]:
    return {name: Command(name, states, args, handler) for name, states, args, handler in rows}


#: RFC 5804 section 2: every command, the states it is valid in, its arguments.
COMMANDS: dict[str, Command] = _cmds([
    ("CAPABILITY", _ANY, (), S._capability),
    ("NOOP", _ANY, ("string?",), S._noop),
    ("LOGOUT", _ANY, (), S._logout),
    ("STARTTLS", _NONAUTH, (), S._starttls),
    ("AUTHENTICATE", _NONAUTH, ("string", "string?"), S._authenticate),
    ("XDYNAMAIL-CHALLENGE", _NONAUTH, (), S._challenge),
    ("XDYNAMAIL-RELAY", _NONAUTH, ("string",), S._relay),
    ("HAVESPACE", _AUTH, ("string", "number"), S._havespace),
    ("PUTSCRIPT", _AUTH, ("string", "string"), S._putscript),
    ("CHECKSCRIPT", _AUTH, ("string",), S._checkscript),
    ("LISTSCRIPTS", _AUTH, (), S._listscripts),
    ("SETACTIVE", _AUTH, ("string",), _named_op("activate")),
    ("GETSCRIPT", _AUTH, ("string",), _named_op("get")),
    ("DELETESCRIPT", _AUTH, ("string",), _named_op("delete")),
    ("RENAMESCRIPT", _AUTH, ("string", "string"), S._renamescript),
])
