"""The admin CLI protocol as a sans-IO state machine.

The core turns command lines into *actions* for its adapter and the
adapter's results into reply lines; it never performs I/O, never awaits and
never imports asyncio.  One session goes through these states:

``LOGIN`` (after the greeting ``200 <text> <token@host>``) → ``USER name``
moves to ``PASSWORD`` (reply ``300``) → ``PASS p`` asks the adapter to
authenticate (:class:`Authenticate`); ``APOP name md5hex(token+password)``
asks for an APOP check.  A successful login moves to ``READY``, where every
registered command is allowed; ``QUIT`` (any state) moves to ``CLOSED``.
The allowed (state, verb) pairs are the table :data:`TRANSITIONS`; a known
verb in the wrong state is answered ``500 command not allowed in this
state`` and the session stays usable.

Replies (the CommuniGate Pro conventions, which existing client libraries
parse): ``200 OK``; data in ordinary mode as ``200 data follow`` with the
data on the next line; in ``INLINE`` mode as ``201 <data>`` on one line
(never an empty ``201``: empty data is ``()`` or ``""``); errors ``5xx text``.
Data in answers uses the client-friendly dialect of
:func:`dynamail.cliproto.datafmt.write` (no ``#NULL#``, no ``\\nnn``).

Invariants: at most one action is outstanding (the adapter must report its
result before feeding the next line); a line is answered by exactly one
reply (``300`` included); the bad-command and bad-login counters close the
session when they pass their limits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.cliproto import datafmt, limits
from dynamail.cliproto.commands import REGISTRY, CommandSpec
from dynamail.cliproto.grammar import SyntaxProblem, parse_args, usage


class State(enum.Enum):
    LOGIN = "login"
    PASSWORD = "password"  # USER given, waiting for PASS
    BUSY = "busy"  # an action is outstanding
    READY = "ready"
    CLOSED = "closed"


class Verb(enum.Enum):
    USER = "USER"
    PASS = "PASS"
    APOP = "APOP"
    INLINE = "INLINE"
    NOOP = "NOOP"
    QUIT = "QUIT"
    COMMAND = "<command>"  # any registered administrative command


_VERBS = {v.value: v for v in Verb if v is not Verb.COMMAND}

# (state, verb) pairs that are allowed; everything else is "not allowed".
TRANSITIONS: frozenset[tuple[State, Verb]] = frozenset(
    {
        (State.LOGIN, Verb.USER),
        (State.LOGIN, Verb.APOP),
        (State.LOGIN, Verb.NOOP),
        (State.LOGIN, Verb.QUIT),
        (State.LOGIN, Verb.INLINE),
        (State.PASSWORD, Verb.PASS),
        (State.PASSWORD, Verb.QUIT),
        (State.READY, Verb.INLINE),
        (State.READY, Verb.NOOP),
        (State.READY, Verb.QUIT),
        (State.READY, Verb.COMMAND),
    }
)

CODE_OK = 200
CODE_INLINE = 201
CODE_PASSWORD = 300
CODE_UNKNOWN = 500  # unknown command or not allowed now
CODE_SYNTAX = 501  # arguments do not fit the command
CODE_LOGIN_FAILED = 515
CODE_LIMIT = 512  # a protocol limit was crossed


# -- actions (core -> adapter) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` to the client; ``close`` afterwards when set."""

    data: bytes
    close: bool = False


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Check ``login`` with ``password`` (USER/PASS) or, when ``apop_digest``
    is set, with APOP against ``token``.  Report with :meth:`CliCore.login_done`."""

    login: str
    password: str = ""
    apop_digest: str = ""
    token: str = ""


@dataclass(frozen=True, slots=True)
class Execute:
    """Run ``command`` with parsed ``args`` for the logged-in account.
    Report with :meth:`CliCore.command_done` or :meth:`CliCore.command_failed`."""

    command: CommandSpec
    args: dict[str, Any]
    actor: AccountRef


Action = Send | Authenticate | Execute


def _line(code: int, text: str) -> bytes:
    text = text.replace("\r", " ").replace("\n", " ")
    return f"{code} {text}\r\n".encode("utf-8", "replace")


class CliCore:
    """One CLI session's protocol state (sans-IO)."""

    def __init__(self, hostname: str, token: str, *, version: str = "") -> None:
        self.hostname = hostname
        self.token = token  # "<...@host>", angle brackets included
        self.version = version
        self.state = State.LOGIN
        self.inline = False
        self.actor: AccountRef | None = None
        self._user = ""
        self._resume = State.LOGIN
        self.bad_commands = 0
        self.bad_logins = 0

    # -- output --------------------------------------------------------
    def greeting(self) -> bytes:
        return _line(CODE_OK, f"{self.hostname} dynamail {self.version} CLI ready {self.token}".replace("  ", " "))

    def _ok(self) -> Send:
        return Send(_line(CODE_OK, "OK"))

    def _error(self, code: int, text: str) -> Send:
        return Send(_line(code, text))

    def _data(self, value: Any) -> Send:
        text = datafmt.write(value, answer=True)
        if not text:
            text = '""'
        if self.inline:
            return Send(_line(CODE_INLINE, text))
        return Send(_line(CODE_OK, "data follow") + text.encode("utf-8") + b"\r\n")

    def _bad(self, code: int, text: str) -> Send:
        self.bad_commands += 1
        if self.bad_commands > limits.MAX_BAD_COMMANDS:
            self.state = State.CLOSED
            return Send(_line(code, text + "; too many bad commands, closing"), close=True)
        return self._error(code, text)

    # -- input ---------------------------------------------------------
    def line_too_long(self) -> Send:
        """The adapter discarded a line longer than ``limits.MAX_LINE``."""
        return self._bad(CODE_LIMIT, f"line too long (limit {limits.MAX_LINE} bytes)")

    def idle_timeout(self) -> Send:
        self.state = State.CLOSED
        return Send(_line(CODE_UNKNOWN, "idle timeout, closing"), close=True)

    def receive(self, raw: bytes) -> Action:
        """Handle one command line (with or without its CRLF)."""
        if self.state is State.BUSY:
            raise RuntimeError("a command is still running")
        if self.state is State.CLOSED:
            return Send(b"", close=True)
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return self._bad(CODE_SYNTAX, "command line is not UTF-8")
        if "\x00" in line:
            return self._bad(CODE_SYNTAX, "NUL in command line")
        stripped = line.strip()
        if not stripped:
            return self._bad(CODE_UNKNOWN, "empty command")
        word, _, rest = stripped.partition(" ")
        upper = word.upper()
        verb = _VERBS.get(upper, Verb.COMMAND)
        spec = REGISTRY.get(upper) if verb is Verb.COMMAND else None
        if verb is Verb.COMMAND and spec is None:
            return self._bad(CODE_UNKNOWN, f"unknown command {word[:40]!r}")
        if (self.state, verb) not in TRANSITIONS:
            if self.state in (State.LOGIN, State.PASSWORD):
                return self._bad(CODE_UNKNOWN, "please log in first (USER/PASS or APOP)")
            return self._bad(CODE_UNKNOWN, f"{upper} is not allowed now")
        if verb is Verb.QUIT:
            self.state = State.CLOSED
            return Send(_line(CODE_OK, "bye"), close=True)
        if verb is Verb.NOOP:
            return self._ok()
        if verb is Verb.INLINE:
            self.inline = True
            return self._ok()
        if verb is Verb.USER:
            name = rest.strip()
            if not name or " " in name:
                return self._bad(CODE_SYNTAX, "usage: USER name")
            self._user = name
            self.state = State.PASSWORD
            return Send(_line(CODE_PASSWORD, "enter password"))
        if verb is Verb.PASS:
            self.state = State.BUSY
            return Authenticate(login=self._user, password=rest)
        if verb is Verb.APOP:
            parts = rest.split()
            if len(parts) != 2:
                return self._bad(CODE_SYNTAX, "usage: APOP name digest")
            self.state = State.BUSY
            return Authenticate(login=parts[0], apop_digest=parts[1].lower(), token=self.token)
        assert spec is not None and self.actor is not None
        try:
            args = parse_args(rest, spec.args)
        except SyntaxProblem as exc:
            return self._bad(CODE_SYNTAX, f"{exc}; usage: {usage(spec.name, spec.args)}")
        self.bad_commands = 0
        self._resume = State.READY
        self.state = State.BUSY
        return Execute(command=spec, args=args, actor=self.actor)

    # -- results from the adapter -----------------------------------------
    def login_done(self, ref: AccountRef | None, reason: str = "") -> Send:
        if self.state is not State.BUSY:
            raise RuntimeError("no login outstanding")
        if ref is not None:
            self.actor = ref
            self.state = State.READY
            self.bad_logins = 0
            return self._ok()
        self.state = State.LOGIN
        self._user = ""
        self.bad_logins += 1
        text = reason or "incorrect account name or password"
        if self.bad_logins >= limits.MAX_BAD_LOGINS:
            self.state = State.CLOSED
            return Send(_line(CODE_LOGIN_FAILED, text + "; too many failures, closing"), close=True)
        return self._error(CODE_LOGIN_FAILED, text)

    def command_done(self, value: Any = None) -> Send:
        """The command succeeded; ``value`` is its data (None: plain OK)."""
        if self.state is not State.BUSY:
            raise RuntimeError("no command outstanding")
        self.state = self._resume
        if value is None:
            return self._ok()
        return self._data(value)

    def command_failed(self, code: int, text: str) -> Send:
        if self.state is not State.BUSY:
            raise RuntimeError("no command outstanding")
        self.state = self._resume
        if not 500 <= code <= 599:
            code = CODE_SYNTAX
        return self._error(code, text or "failed")
