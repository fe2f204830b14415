"""The sans-IO side of our SMTP client: replies in, commands out.

:class:`ReplyReader` turns received bytes into complete (possibly
multi-line) replies (RFC 5321 4.2.1); :class:`ClientTransaction` decides,
from each reply, what to send next for one message to a list of recipients
on one connection, and records each recipient's outcome.  The outbound
transport (``dynamail.smtp.outbound``) only moves bytes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from dynamail.smtp.dsnparams import DsnParamError, check_envid, check_orcpt

MAX_REPLY_LINE = 4096  # RFC 5321 4.5.3.1.5: 512; tolerate chatty servers
MAX_REPLY_LINES = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ProtocolError(Exception):
    """The server sent something that is not an SMTP reply."""


@dataclass(frozen=True, slots=True)
class ServerReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


class ReplyReader:
    def __init__(self) -> None:
        self._buf = bytearray()
        self._lines: list[str] = []

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_reply(self) -> ServerReply | None:
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return None
            raw = bytes(self._buf[:idx]).rstrip(b"\r")
            del self._buf[: idx + 1]
            if len(raw) < 3 or not raw[:3].isdigit() or raw[3:4] not in (b"", b" ", b"-"):
                raise ProtocolError(f"not an SMTP reply: {raw[:60]!r}")
            # a control character from the next hop never reaches a bounce or a log line
            self._lines.append(_CONTROL.sub(" ", raw[4:].decode("utf-8", "replace")))
            if len(self._lines) > MAX_REPLY_LINES:
                raise ProtocolError("reply has too many lines")
            if raw[3:4] != b"-":
                lines = tuple(self._lines)
                self._lines = []
                return ServerReply(int(raw[:3]), lines)


class Step(enum.Enum):
    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    CONTENT = "content"  # the adapter sends the content, then the final reply comes
    QUIT = "quit"
    DONE = "done"


@dataclass(slots=True)
class Outcome:
    """What happened to one recipient: 2xx accepted, 4xx retry, 5xx failed.

    ``dsn_passed``: the next server advertised DSN and got the recipient's
    NOTIFY/ORCPT (and the message's RET/ENVID) with the message, so any
    further report is its job (RFC 3461 5.2.2 and 5.3): no "relayed" notice.
    """

    code: int
    text: str
    dsn_passed: bool = False


#: RFC 3461 parameters passed on to a server that advertises DSN.
DSN_MAIL_PARAMS = ("RET", "ENVID")
DSN_RCPT_PARAMS = ("NOTIFY", "ORCPT")


@dataclass
class ClientTransaction:
    """One message to ``recipients`` on one connection.

    ``on_reply`` returns the bytes to send next (``b""`` for none); when the
    step becomes ``CONTENT`` the transport sends the dot-stuffed message and
    feeds the final reply; ``STARTTLS`` asks the transport to start TLS and
    then call :meth:`tls_started`.
    """

    helo: str
    sender: str
    recipients: list[str]
    size: int
    tls_possible: bool = False
    eightbit: bool = False
    utf8: bool = False
    # RFC 3461: RET/ENVID of the message, NOTIFY/ORCPT per recipient, as
    # received (already xtext); sent only when the server advertises DSN
    dsn_params: dict[str, str | None] = field(default_factory=dict)
    rcpt_params: dict[str, dict[str, str | None]] = field(default_factory=dict)
    step: Step = Step.GREETING
    extensions: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    _rcpt_index: int = 0
    tls_active: bool = False
    error: Outcome | None = None  # a failure that applies to every recipient left

    def _fail_all(self, code: int, text: str) -> bytes:
        for r in self.recipients:
            if r not in self.outcomes:
                self.outcomes[r] = Outcome(code, text)
        self.error = Outcome(code, text)
        self.step = Step.QUIT
        return b"QUIT\r\n"

    def _mail(self) -> bytes:
        self.step = Step.MAIL
        params = ""
        if "SIZE" in self.extensions:
            params += f" SIZE={self.size}"
        if self.eightbit and "8BITMIME" in self.extensions:
            params += " BODY=8BITMIME"
        if self.utf8:
            if "SMTPUTF8" not in self.extensions:
                # RFC 6531 3.2: cannot be sent to this server
                return self._fail_all(553, "5.6.7 remote server does not support SMTPUTF8")
            params += " SMTPUTF8"
        if self.dsn:
            params += _dsn_params(self.dsn_params, DSN_MAIL_PARAMS)
        return f"MAIL FROM:<{self.sender}>{params}\r\n".encode()

    @property
    def dsn(self) -> bool:
        """The server takes DSN parameters (RFC 3461 4)."""
        return "DSN" in self.extensions

    def _rcpt(self) -> bytes:
        rcpt = self.recipients[self._rcpt_index]
        params = _dsn_params(self.rcpt_params.get(rcpt, {}), DSN_RCPT_PARAMS) if self.dsn else ""
        return f"RCPT TO:<{rcpt}>{params}\r\n".encode()

    def on_reply(self, reply: ServerReply) -> bytes:
        step = self.step
        if step is Step.GREETING:
            if reply.code != 220:
                return self._fail_all(reply.code if reply.code >= 400 else 421, reply.text)
            self.step = Step.EHLO
            return f"EHLO {self.helo}\r\n".encode()
        if step is Step.EHLO:
            if reply.code != 250:
                self.step = Step.HELO
                return f"HELO {self.helo}\r\n".encode()
            self.extensions = {}
            for line in reply.lines[1:]:
                key, _, value = line.partition(" ")
                self.extensions[key.upper()] = value
            if self.tls_possible and not self.tls_active and "STARTTLS" in self.extensions:
                self.step = Step.STARTTLS
                return b"STARTTLS\r\n"
            return self._mail()
        if step is Step.HELO:
            if reply.code != 250:
                return self._fail_all(reply.code, reply.text)
            self.extensions = {}
            return self._mail()
        if step is Step.STARTTLS:
            if reply.code != 220:
                # opportunistic TLS: carry on in clear text
                self.tls_possible = False
                return self._mail()
            return b""  # the transport upgrades and calls tls_started()
        if step is Step.MAIL:
            if reply.code != 250:
                return self._fail_all(reply.code, reply.text)
            self.step = Step.RCPT
            self._rcpt_index = 0
            return self._rcpt()
        if step is Step.RCPT:
            rcpt = self.recipients[self._rcpt_index]
            if reply.code in (250, 251):
                self.accepted.append(rcpt)
            else:
                self.outcomes[rcpt] = Outcome(reply.code, reply.text)
            self._rcpt_index += 1
            if self._rcpt_index < len(self.recipients):
                return self._rcpt()
            if not self.accepted:
                self.step = Step.QUIT
                return b"QUIT\r\n"
            self.step = Step.DATA
            return b"DATA\r\n"
        if step is Step.DATA:
            if reply.code != 354:
                return self._fail_all(reply.code, reply.text)
            self.step = Step.CONTENT
            return b""
        if step is Step.CONTENT:
            for rcpt in self.accepted:
                self.outcomes[rcpt] = Outcome(reply.code, reply.text, dsn_passed=self.dsn and reply.positive)
            self.step = Step.QUIT
            return b"QUIT\r\n"
        if step is Step.QUIT:
            self.step = Step.DONE
            return b""
        return b""

    def tls_started(self) -> bytes:
        self.tls_active = True
        self.step = Step.EHLO
        return f"EHLO {self.helo}\r\n".encode()

    def unfinished(self, code: int, text: str) -> None:
        """The connection broke: every recipient without an outcome gets this."""
        for r in self.recipients:
            if r not in self.outcomes:
                self.outcomes[r] = Outcome(code, text)


def _dsn_params(given: dict[str, str | None], keys: tuple[str, ...]) -> str:
    """`` KEY=value`` for each of ``keys`` present; ENVID and ORCPT are
    passed on in canonical xtext (RFC 3461 4), anything that could break the
    command line is dropped."""
    out = ""
    for key in keys:
        value = given.get(key)
        try:
            if key == "ENVID":
                value = check_envid(value)
            elif key == "ORCPT":
                value = check_orcpt(value, utf8=True)
        except DsnParamError:
            continue
        if value and value.isprintable() and value.isascii() and " " not in value:
            out += f" {key}={value}"
    return out
