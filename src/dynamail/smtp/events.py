"""What the SMTP server core tells its adapter: events and sentinels.

Small frozen dataclasses (the h11 style); the adapter dispatches on their
type.  Events marked "decision needed" pause the core until the adapter
answers through the matching ``SmtpServer`` method.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamail.sansio import NEED_DATA as NEED_DATA
from dynamail.sansio import PAUSED as PAUSED
from dynamail.sansio import Sentinel as Sentinel
from dynamail.smtp.replies import Reply
from dynamail.smtp.syntax import Address


@dataclass(frozen=True, slots=True)
class Helo:
    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    """A new transaction; its MAIL command has been accepted."""

    sender: Address | None  # None for the null reverse-path <>
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class RcptTo:
    """Decision needed: accept_recipient() or reject_recipient(reply)."""

    address: Address
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class StartTls:
    """Flush, upgrade the connection, then call tls_started()."""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """Decision needed: auth_succeeded(identity) or auth_failed()."""

    mechanism: str
    authzid: str
    login: str
    password: str


@dataclass(frozen=True, slots=True)
class DataStart:
    """Message content follows (``via`` is "DATA" or "BDAT")."""

    via: str


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """Decision needed: finish_message(reply) once the message is stored."""

    size: int


@dataclass(frozen=True, slots=True)
class MessageAborted:
    """The content was refused (size, line length); the core has replied."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Closing:
    """The core has queued its last reply; flush and close."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed the connection."""


Event = Helo | MailFrom | RcptTo | StartTls | AuthRequest | DataStart | BodyData | MessageComplete | MessageAborted | Closing | ConnectionClosed
