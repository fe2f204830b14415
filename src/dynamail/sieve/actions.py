"""What a Sieve run decides: the envelope it sees and the actions it returns.

Small frozen records; the delivery layer (:mod:`dynamail.sieve.filter`)
carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope of this delivery: ``sender`` "" for ``<>``, None when unknown."""

    sender: str | None
    recipient: str


@dataclass(frozen=True, slots=True)
class FileInto:
    mailbox: str  # "INBOX" for keep
    flags: frozenset[str]
    create: bool = False


@dataclass(frozen=True, slots=True)
class Redirect:
    address: str


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    extended: bool  # ereject (RFC 5429 2.1)


@dataclass(frozen=True, slots=True)
class Vacation:
    reason: str
    subject: str | None
    from_: str | None
    addresses: tuple[str, ...]
    mime: bool
    handle: str
    period: int  # seconds between replies to one sender (RFC 5230 4.1, RFC 6131)


Action = FileInto | Redirect | Reject | Vacation


@dataclass
class Outcome:
    actions: list[Action] = field(default_factory=list)
    implicit_keep: bool = True
    discarded: bool = False
    message: bytes = b""
    warnings: list[str] = field(default_factory=list)
    #: duplicate (RFC 7352): tracking records to keep once the message is delivered
    #: (key -> until when, seconds since the epoch)
    duplicates: dict[str, float] = field(default_factory=dict)

    @property
    def deliveries(self) -> list[FileInto]:
        return [a for a in self.actions if isinstance(a, FileInto)]
