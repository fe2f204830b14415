"""The sans-IO SMTP server core (RFC 5321 with ESMTP extensions).

Bytes from the client go in through :meth:`SmtpServer.receive_data`; the
adapter pulls :class:`Event` values out with :meth:`SmtpServer.next_event`
and takes the bytes to send from :meth:`SmtpServer.data_to_send`.  The core
never does I/O and never decides policy: where a decision is needed (is this
recipient acceptable? are these credentials valid? is the message stored?)
it emits an event and waits (``next_event`` returns :data:`PAUSED`) until the
adapter answers with :meth:`accept_recipient` / :meth:`reject_recipient`,
:meth:`auth_succeeded` / :meth:`auth_failed` or :meth:`finish_message`.

States and the commands valid in each are data (:data:`COMMANDS`); a command
in a state its entry does not list is answered 503 (RFC 5321 4.1.4).
Pipelined commands (RFC 2920) are processed strictly in order, so replies
come out in order; the adapter flushes whenever the core needs more input.

Invariants: memory per session is bounded by the line limits (a command line,
one partial DATA line, one BDAT read); message content leaves the core as
``BodyData`` events as soon as it is decoded.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dynamail.sansio import ByteBuffers
from dynamail.sasl import decode_response, split_plain
from dynamail.smtp import replies as R
from dynamail.smtp.dots import Unstuffer
from dynamail.smtp.dsnparams import DsnParamError, check_envid, check_orcpt
from dynamail.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    BodyData,
    Closing,
    ConnectionClosed,
    DataStart,
    Event,
    Helo,
    MailFrom,
    MessageAborted,
    MessageComplete,
    RcptTo,
    Sentinel,
    StartTls,
)
from dynamail.smtp.limits import BODY_EVENT_CHUNK, MAX_AUTH_LINE, SmtpLimits
from dynamail.smtp.replies import Reply
from dynamail.smtp.syntax import Address, SyntaxProblem, parse_mail_from, parse_rcpt_to

__all__ = [
    "COMMANDS", "NEED_DATA", "PAUSED", "AuthRequest", "BodyData", "Closing", "Command",
    "ConnectionClosed", "DataStart", "Event", "Helo", "MailFrom", "MessageAborted",
    "MessageComplete", "Mode", "RcptTo", "Sentinel", "SessionConfig", "SmtpServer",
    "StartTls", "State",
]


class State(enum.Enum):
    START = "start"  # greeting sent, no HELO/EHLO yet (or just after STARTTLS)
    READY = "ready"  # HELO/EHLO done, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # reading DATA content
    CHUNK = "chunk"  # reading a BDAT chunk
    BDAT = "bdat"  # between BDAT chunks
    AUTH = "auth"  # SASL exchange in progress
    CLOSED = "closed"


class Mode(enum.Enum):
    INBOUND = "inbound"  # port 25: local recipients only, no AUTH
    SUBMISSION = "submission"  # 587/465: AUTH required, may relay
    LMTP = "lmtp"  # RFC 2033: LHLO instead of HELO/EHLO, one reply per recipient after DATA


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    states: frozenset[State]
    handler: Callable[[SmtpServer, str], Event | None]


_BEFORE_DATA = frozenset({State.START, State.READY, State.MAIL, State.RCPT, State.BDAT})


@dataclass
class SessionConfig:
    hostname: str
    mode: Mode = Mode.INBOUND
    tls_available: bool = False  # STARTTLS can be offered
    tls_active: bool = False  # the connection is already TLS (465, or after STARTTLS)
    auth_without_tls: bool = False  # allow AUTH on a cleartext connection
    # the adapter decides on every MAIL FROM (accept_sender / reject_sender);
    # False: any syntactically valid sender is accepted at once
    check_sender: bool = False
    limits: SmtpLimits = field(default_factory=SmtpLimits)


class SmtpServer(ByteBuffers):
    """One SMTP server session, sans I/O."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.state = State.START
        self.tls_active = config.tls_active
        self.helo_name: str | None = None
        self.esmtp = False
        self.identity: str | None = None  # authenticated identity
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._pending: str | None = None  # decision awaited: "mail" "rcpt" "auth" "message"
        self._discard_line = False
        self._commands_without_data = 0
        self._auth_failures = 0
        # transaction
        self.sender: Address | None = None
        self.mail_params: dict[str, str | None] = {}
        self.recipients: list[Address] = []
        self._size = 0
        self._content_error: Reply | None = None
        self._unstuffer: Unstuffer | None = None
        self._chunk_left = 0
        self._chunk_last = False
        self._chunk_discard_reply: Reply | None = None
        self._chunk_aborts = False  # the discarded chunk ends the transaction
        self._in_message = False
        self._end_due = False
        self._return_state = State.READY
        self._pending_rcpt = Address("", "")
        # SASL
        self._sasl_mech = ""
        self._sasl_step = 0
        self._sasl_login = ""

    # -- input and output ---------------------------------------------------
    def greeting(self) -> None:
        kind = "LMTP" if self.config.mode is Mode.LMTP else "ESMTP"
        self._reply(Reply(220, "", f"{self.config.hostname} {kind} dynamail"))

    def buffered(self) -> int:
        return len(self._in)

    def _reply(self, reply: Reply) -> None:
        self._out += reply.encode()

    @property
    def auth_offered(self) -> bool:
        return self.config.mode is Mode.SUBMISSION and (self.tls_active or self.config.auth_without_tls)

    def capabilities(self) -> list[str]:
        caps = [
            "PIPELINING",
            f"SIZE {self.limits.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "BINARYMIME",
            "SMTPUTF8",
            "DSN",
        ]
        if self.config.mode is Mode.LMTP:
            caps = [c for c in caps if c not in ("CHUNKING", "BINARYMIME")]
        if self.config.tls_available and not self.tls_active:
            caps.append("STARTTLS")
        if self.auth_offered and self.identity is None:
            caps.append("AUTH PLAIN LOGIN")
        return caps

    # -- events -------------------------------------------------------------
    def next_event(self) -> Event | Sentinel:
        if self._pending is not None:
            return PAUSED
        if self._end_due:
            self._end_due = False
            return self._message_end_event()
        if self.state is State.CLOSED:
            return NEED_DATA
        if self.state is State.DATA:
            return self._data_event()
        if self.state is State.CHUNK:
            return self._chunk_event()
        line = self._take_line()
        if line is None:
            if self._eof:
                self.state = State.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        if self.state is State.AUTH:
            return self._sasl_response(line)
        return self._command(line)

    def _take_line(self) -> bytes | None:
        while True:
            idx = self._in.find(b"\n")
            if idx < 0:
                if len(self._in) > MAX_AUTH_LINE:
                    self._in.clear()
                    if not self._discard_line:
                        self._discard_line = True
                        self._reply(R.LINE_TOO_LONG)
                if self._eof and self._in and not self._discard_line:
                    line = bytes(self._in)
                    self._in.clear()
                    return line
                return None
            line = bytes(self._in[: idx + 1])
            del self._in[: idx + 1]
            if self._discard_line:
                self._discard_line = False
                self._junk()
                if self.state is State.CLOSED:
                    return None
                continue
            return line

    def _junk(self) -> Event | None:
        """Count a command since the last message (MAX_COMMANDS_WITHOUT_DATA)."""
        self._commands_without_data += 1
        if self._commands_without_data > self.limits.max_commands_without_data:
            return self._close(Reply(421, "4.7.0", f"{self.config.hostname} Too many commands without a message, closing connection"))
        return None

    def _close(self, reply: Reply) -> Closing:
        self._reply(reply)
        self.state = State.CLOSED
        return Closing(reply)

    def _command(self, raw: bytes) -> Event | Sentinel:
        line_bytes = raw.rstrip(b"\r\n")
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail(Reply(500, "5.5.2", "Command is not valid UTF-8"))
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if verb != "AUTH" and len(raw) > self.limits.max_command_line:
            return self._fail(R.LINE_TOO_LONG)
        cmd = COMMANDS.get(verb)
        if cmd is None:
            return self._fail(R.UNRECOGNIZED)
        if self.state not in cmd.states:
            if self.state is State.START and cmd.name in ("MAIL", "RCPT", "DATA", "BDAT", "AUTH"):
                return self._fail(Reply(503, "5.5.1", "Send HELO/EHLO first"))
            if cmd.name == "BDAT":
                return self._bdat_refused(arg, R.BAD_SEQUENCE)
            return self._fail(R.BAD_SEQUENCE)
        ev = self._junk()
        if ev is not None:
            return ev
        ev = cmd.handler(self, arg)
        return self.next_event() if ev is None else ev

    def _fail(self, reply: Reply) -> Event | Sentinel:
        self._reply(reply)
        ev = self._junk()
        return ev if ev is not None else self.next_event()

    def _reset_transaction(self) -> None:
        self.sender = None
        self.mail_params = {}
        self.recipients = []
        self._size = 0
        self._content_error = None
        self._unstuffer = None
        self._in_message = False
        if self.state in (State.MAIL, State.RCPT, State.BDAT, State.DATA, State.CHUNK):
            self.state = State.READY

    # -- commands -------------------------------------------------------------
    def _helo(self, arg: str, extended: bool, lmtp: bool = False) -> Event | None:
        # RFC 2033 4.1: an LMTP server answers HELO and EHLO with 500, and
        # LHLO is an LMTP command only
        if lmtp != (self.config.mode is Mode.LMTP):
            self._reply(Reply(500, "5.5.1", "Use LHLO" if not lmtp else "LHLO is an LMTP command"))
            return None
        name = arg.strip()
        if not name or " " in name:
            verb = "LHLO" if lmtp else ("EHLO" if extended else "HELO")
            self._reply(Reply(501, "5.5.4", f"Syntax: {verb} hostname"))
            return None
        self._reset_transaction()
        self.helo_name = name
        self.esmtp = extended
        self.state = State.READY
        greeting = f"{self.config.hostname} Hello {name}"
        if extended:
            self._reply(Reply(250, "", (greeting, *self.capabilities())))
        else:
            self._reply(Reply(250, "", greeting))
        return Helo(name, extended)

    def _mail(self, arg: str) -> Event | None:
        if self.config.mode is Mode.SUBMISSION and self.identity is None:
            self._reply(R.AUTH_REQUIRED)
            return None
        try:
            sender, params = parse_mail_from(arg)
        except SyntaxProblem as exc:
            self._reply(exc.reply)
            return None
        problem = self._check_mail_params(sender, params)
        if problem is not None:
            self._reply(problem)
            return None
        self._reset_transaction()
        self.sender = sender
        self.mail_params = params
        if self.config.check_sender:
            self._pending = "mail"
            return MailFrom(sender, params)
        self.state = State.MAIL
        self._reply(Reply(250, "2.1.0", "Sender OK"))
        return MailFrom(sender, params)

    def accept_sender(self) -> None:
        """The adapter allows this MAIL FROM (with ``check_sender``)."""
        assert self._pending == "mail"
        self._pending = None
        self.state = State.MAIL
        self._reply(Reply(250, "2.1.0", "Sender OK"))

    def reject_sender(self, reply: Reply) -> None:
        """The adapter refuses this MAIL FROM; no transaction starts."""
        assert self._pending == "mail"
        self._pending = None
        self._reset_transaction()
        self._reply(reply)

    @property
    def deciding_sender(self) -> bool:
        return self._pending == "mail"

    def _check_mail_params(self, sender: Address | None, params: dict[str, str | None]) -> Reply | None:
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    return Reply(501, "5.5.4", "Bad SIZE parameter")
                if int(value) > self.limits.max_message_size:
                    return R.TOO_BIG
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME", "BINARYMIME"):
                    return Reply(501, "5.5.4", "Bad BODY parameter")
            elif key == "SMTPUTF8":
                if value is not None:
                    return Reply(501, "5.5.4", "SMTPUTF8 takes no value")
            elif key == "RET":
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    return Reply(501, "5.5.4", "Bad RET parameter")
            elif key == "ENVID":
                try:
                    params[key] = check_envid(value)  # RFC 3461 4.4: kept in canonical xtext
                except DsnParamError as exc:
                    return Reply(501, "5.5.4", f"Bad ENVID parameter: {exc}")
            elif key == "AUTH":
                if value is None:
                    return Reply(501, "5.5.4", f"Bad {key} parameter")
            else:
                return Reply(555, "5.5.4", f"Unsupported parameter {key}")
        if sender is not None and not sender.is_ascii and "SMTPUTF8" not in params:
            return Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        return None

    def _rcpt(self, arg: str) -> Event | None:
        try:
            address, params = parse_rcpt_to(arg, self.config.hostname)
        except SyntaxProblem as exc:
            self._reply(exc.reply)
            return None
        for key, value in params.items():
            if key == "NOTIFY":
                words = {w.upper() for w in (value or "").split(",")}
                if not words or not words <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"} or (
                    "NEVER" in words and len(words) > 1
                ):
                    self._reply(Reply(501, "5.5.4", "Bad NOTIFY parameter"))
                    return None
            elif key == "ORCPT":
                try:  # RFC 3461 4.2: kept in canonical xtext
                    params[key] = check_orcpt(value, utf8="SMTPUTF8" in self.mail_params)
                except DsnParamError as exc:
                    self._reply(Reply(501, "5.5.4", f"Bad ORCPT parameter: {exc}"))
                    return None
            else:
                self._reply(Reply(555, "5.5.4", f"Unsupported parameter {key}"))
                return None
        if not address.is_ascii and "SMTPUTF8" not in self.mail_params:
            self._reply(Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"))
            return None
        if len(self.recipients) >= self.limits.max_recipients:
            self._reply(R.TOO_MANY_RECIPIENTS)
            return None
        self._pending = "rcpt"
        self._pending_rcpt = address
        return RcptTo(address, params)

    def accept_recipient(self, reply: Reply | None = None) -> None:
        assert self._pending == "rcpt"
        self._pending = None
        self.recipients.append(self._pending_rcpt)
        self.state = State.RCPT
        self._reply(reply or Reply(250, "2.1.5", "Recipient OK"))

    def reject_recipient(self, reply: Reply) -> None:
        assert self._pending == "rcpt"
        self._pending = None
        self._reply(reply)

    def _data(self, arg: str) -> Event | None:
        if arg.strip():
            self._reply(Reply(501, "5.5.4", "DATA takes no arguments"))
            return None
        if self.state is State.BDAT:
            self._reply(Reply(503, "5.5.1", "DATA not allowed after BDAT"))
            return None
        if not self.recipients:
            self._reply(R.NO_RECIPIENTS)
            return None
        if (self.mail_params.get("BODY") or "").upper() == "BINARYMIME":
            self._reply(Reply(503, "5.5.1", "BINARYMIME requires BDAT"))
            return None
        self.state = State.DATA
        self._unstuffer = Unstuffer(self.limits.max_text_line)
        self._in_message = True
        self._size = 0
        self._reply(Reply(354, "", "Start mail input; end with <CRLF>.<CRLF>"))
        return DataStart("DATA")

    def _parse_bdat(self, arg: str) -> tuple[int, bool] | None:
        parts = arg.split()
        if not parts or len(parts) > 2 or not parts[0].isdigit() or len(parts[0]) > 20:
            return None
        last = False
        if len(parts) == 2:
            if parts[1].upper() != "LAST":
                return None
            last = True
        return int(parts[0]), last

    def _bdat_refused(self, arg: str, reply: Reply) -> Event | Sentinel:
        parsed = self._parse_bdat(arg)
        if parsed is None:
            return self._fail(Reply(501, "5.5.4", "Syntax: BDAT size [LAST]"))
        # RFC 3030 section 3: the chunk is read and discarded before the reply
        self._chunk_left = parsed[0]
        self._chunk_last = parsed[1]
        self._chunk_discard_reply = reply
        self._return_state = self.state
        self.state = State.CHUNK
        ev = self._junk()
        return ev if ev is not None else self.next_event()

    def _bdat(self, arg: str) -> Event | None:
        parsed = self._parse_bdat(arg)
        if parsed is None:
            self._reply(Reply(501, "5.5.4", "Syntax: BDAT size [LAST]"))
            return None
        size, last = parsed
        self._chunk_left = size
        self._chunk_last = last
        self._return_state = self.state
        if not self.recipients:
            self._chunk_discard_reply = R.NO_RECIPIENTS
            self.state = State.CHUNK
            return None
        if self._size + size > self.limits.max_message_size:
            # refused before a byte is stored; the chunk is still read (and
            # discarded, a piece at a time) to keep the stream in step
            # (RFC 3030 section 2), then the transaction ends with 552
            self._chunk_discard_reply = R.TOO_BIG
            self._chunk_aborts = True
            self.state = State.CHUNK
            return None
        self._chunk_discard_reply = None
        self.state = State.CHUNK
        if not self._in_message:
            self._in_message = True
            self._size = 0
            return DataStart("BDAT")
        return None

    def _rset(self, arg: str) -> Event | None:
        self._reset_transaction()
        if self.state is not State.START:
            self.state = State.READY
        self._reply(Reply(250, "2.0.0", "OK"))
        return None

    def _noop(self, arg: str) -> Event | None:
        self._reply(Reply(250, "2.0.0", "OK"))
        return None

    def _quit(self, arg: str) -> Event | None:
        return self._close(Reply(221, "2.0.0", f"{self.config.hostname} Service closing transmission channel"))

    def _vrfy(self, arg: str) -> Event | None:
        # RFC 5321 3.5.3: 252 neither confirms nor denies (no address harvesting)
        self._reply(Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"))
        return None

    def _expn(self, arg: str) -> Event | None:
        self._reply(Reply(502, "5.5.1", "EXPN not available"))
        return None

    def _help(self, arg: str) -> Event | None:
        self._reply(Reply(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS AUTH"))
        return None

    def _starttls(self, arg: str) -> Event | None:
        if arg.strip():
            self._reply(Reply(501, "5.5.4", "STARTTLS takes no arguments"))
            return None
        if self.tls_active:
            self._reply(Reply(503, "5.5.1", "TLS already active"))
            return None
        if not self.config.tls_available:
            self._reply(Reply(454, "4.7.0", "TLS not available"))
            return None
        self._reply(Reply(220, "2.0.0", "Ready to start TLS"))
        return StartTls()

    def tls_started(self) -> None:
        """The connection is now TLS: forget everything (RFC 3207 4.2)."""
        self._in.clear()
        self._reset_transaction()
        self.tls_active = True
        self.state = State.START
        self.helo_name = None
        self.esmtp = False

    # -- AUTH (RFC 4954) --------------------------------------------------------
    def _auth(self, arg: str) -> Event | None:
        if self.config.mode is not Mode.SUBMISSION:
            self._reply(R.NOT_IMPLEMENTED)
            return None
        if not self.auth_offered:
            self._reply(R.ENCRYPTION_REQUIRED)
            return None
        if self.identity is not None:
            self._reply(Reply(503, "5.5.1", "Already authenticated"))
            return None
        if self.state is not State.READY:
            self._reply(R.BAD_SEQUENCE)
            return None
        mech, _, initial = arg.strip().partition(" ")
        mech = mech.upper()
        if mech not in ("PLAIN", "LOGIN"):
            self._reply(Reply(504, "5.5.4", "Unrecognized authentication type"))
            return None
        self._sasl_mech = mech
        self._sasl_step = 0
        self._sasl_login = ""
        self.state = State.AUTH
        initial = initial.strip()
        if initial:
            return self._sasl_step_input(initial)
        self._reply(Reply(334, "", "" if mech == "PLAIN" else "VXNlcm5hbWU6"))
        return None

    def _sasl_response(self, raw: bytes) -> Event | Sentinel:
        text = raw.rstrip(b"\r\n").decode("ascii", "replace")
        ev = self._sasl_step_input(text)
        return self.next_event() if ev is None else ev

    def _sasl_abort(self, reply: Reply) -> None:
        self.state = State.READY
        self._reply(reply)

    def _sasl_step_input(self, text: str) -> Event | None:
        if text == "*":
            self._sasl_abort(R.AUTH_CANCELLED)
            return None
        value = decode_response(text)
        if value is None:
            self._sasl_abort(Reply(501, "5.5.2", "Cannot decode response"))
            return None
        if self._sasl_mech == "PLAIN":
            plain = split_plain(value)
            if plain is None:
                self._sasl_abort(Reply(501, "5.5.2", "Malformed PLAIN response"))
                return None
            return self._credentials(*plain)
        if self._sasl_step == 0:
            self._sasl_login = value
            self._sasl_step = 1
            self._reply(Reply(334, "", "UGFzc3dvcmQ6"))
            return None
        return self._credentials("", self._sasl_login, value)

    def _credentials(self, authzid: str, login: str, password: str) -> Event:
        self._pending = "auth"
        self.state = State.READY
        return AuthRequest(self._sasl_mech, authzid, login, password)

    def auth_succeeded(self, identity: str) -> None:
        assert self._pending == "auth"
        self._pending = None
        self.identity = identity
        self._reply(R.AUTH_OK)

    def auth_failed(self, reply: Reply = R.AUTH_FAILED) -> Closing | None:
        """Record a failure; returns Closing when the limit is reached (RFC 4954 4)."""
        assert self._pending == "auth"
        self._pending = None
        self._auth_failures += 1
        if self._auth_failures >= self.limits.max_auth_failures:
            return self._close(Reply(421, "4.7.0", f"{self.config.hostname} Too many failed authentications, closing connection"))
        self._reply(reply)
        return None

    @property
    def auth_failures(self) -> int:
        return self._auth_failures

    # -- message content --------------------------------------------------------
    def _add_content(self, data: bytes) -> bytes:
        if self._content_error is not None or not data:
            return b""
        self._size += len(data)
        if self._size > self.limits.max_message_size:
            self._content_error = R.TOO_BIG
            return b""
        return data

    def _data_event(self) -> Event | Sentinel:
        assert self._unstuffer is not None
        if not self._in:
            if self._eof:
                self.state = State.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        chunk = bytes(self._in[:BODY_EVENT_CHUNK])
        del self._in[:BODY_EVENT_CHUNK]
        res = self._unstuffer.feed(chunk)
        if res.line_too_long and self._content_error is None:
            self._content_error = R.TEXT_LINE_TOO_LONG
        data = self._add_content(res.data)
        if res.done:
            self._in[:0] = res.rest
            return self._end_message(data)
        if data:
            return BodyData(data)
        return self.next_event()

    def _end_message(self, last: bytes) -> Event:
        if last:
            # hand over the final bytes first; the end follows on the next call
            self._end_due = True
            return BodyData(last)
        return self._message_end_event()

    def _message_end_event(self) -> Event:
        if self._content_error is not None:
            reply = self._content_error
            # LMTP: the refusal is repeated for every accepted recipient (RFC 2033 4.2)
            for _ in self.recipients if self.config.mode is Mode.LMTP else (None,):
                self._reply(reply)
            self._reset_transaction()
            self._commands_without_data = 0
            return MessageAborted(reply)
        self._pending = "message"
        return MessageComplete(self._size)

    def _chunk_event(self) -> Event | Sentinel:
        if self._chunk_left > 0:
            if not self._in:
                if self._eof:
                    self.state = State.CLOSED
                    return ConnectionClosed()
                return NEED_DATA
            n = min(self._chunk_left, len(self._in), BODY_EVENT_CHUNK)
            chunk = bytes(self._in[:n])
            del self._in[:n]
            self._chunk_left -= n
            if self._chunk_discard_reply is not None:
                return self.next_event()
            data = self._add_content(chunk)
            return BodyData(data) if data else self.next_event()
        # chunk complete
        if self._chunk_discard_reply is not None:
            reply = self._chunk_discard_reply
            self._chunk_discard_reply = None
            self.state = self._return_state
            self._reply(reply)
            if self._chunk_aborts:
                self._chunk_aborts = False
                started = self._in_message
                self.state = State.READY
                self._reset_transaction()
                if started:
                    return MessageAborted(reply)
            return self.next_event()
        if self._content_error is not None:
            return self._message_end_event()
        if self._chunk_last:
            return self._message_end_event()
        self.state = State.BDAT
        self._reply(Reply(250, "2.0.0", f"{self._size} octets received"))
        return self.next_event()

    def finish_message(self, reply: Reply | Sequence[Reply]) -> None:
        """The adapter's verdict on a complete message (250 only when stored).

        In LMTP mode the adapter gives one reply per accepted recipient, in
        the order of their RCPT commands (RFC 2033 4.2)."""
        assert self._pending == "message"
        replies = [reply] if isinstance(reply, Reply) else list(reply)
        if self.config.mode is Mode.LMTP:
            assert len(replies) == len(self.recipients), "LMTP: one reply per recipient"
        else:
            assert len(replies) == 1
        self._pending = None
        for r in replies:
            self._reply(r)
        self._reset_transaction()
        self.state = State.READY
        self._commands_without_data = 0

    def idle_timeout(self) -> Closing:
        return self._close(Reply(421, "4.4.2", f"{self.config.hostname} Idle timeout, closing connection"))

    def shutting_down(self) -> Closing:
        """The server is stopping (RFC 5321 section 3.8): 421, then close."""
        return self._close(Reply(421, "4.3.2", f"{self.config.hostname} Service shutting down"))

    @property
    def between_commands(self) -> bool:
        """Waiting for a command (not inside message content or a decision)."""
        return self._pending is None and self.state not in (State.DATA, State.CHUNK, State.CLOSED)


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("HELO", _BEFORE_DATA, lambda s, a: s._helo(a, False)),
        Command("EHLO", _BEFORE_DATA, lambda s, a: s._helo(a, True)),
        Command("LHLO", _BEFORE_DATA, lambda s, a: s._helo(a, True, lmtp=True)),
        Command("MAIL", frozenset({State.READY}), SmtpServer._mail),
        Command("RCPT", frozenset({State.MAIL, State.RCPT}), SmtpServer._rcpt),
        Command("DATA", frozenset({State.MAIL, State.RCPT, State.BDAT}), SmtpServer._data),
        Command("BDAT", frozenset({State.MAIL, State.RCPT, State.BDAT}), SmtpServer._bdat),
        Command("RSET", _BEFORE_DATA, SmtpServer._rset),
        Command("NOOP", _BEFORE_DATA, SmtpServer._noop),
        Command("QUIT", _BEFORE_DATA, SmtpServer._quit),
        Command("VRFY", _BEFORE_DATA, SmtpServer._vrfy),
        Command("EXPN", _BEFORE_DATA, SmtpServer._expn),
        Command("HELP", _BEFORE_DATA, SmtpServer._help),
        Command("STARTTLS", frozenset({State.START, State.READY}), SmtpServer._starttls),
        Command("AUTH", frozenset({State.READY}), SmtpServer._auth),
    )
}
