"""The registry of IMAP commands: name, valid states, interaction flags, handler.

Flags (used by :class:`dynamail.imap.session.Session` and the adapter):

``USES_SEQNUMS``
    The command names or reports messages by sequence number (FETCH, STORE,
    SEARCH, COPY, MOVE, SORT without UID).  No EXPUNGE may be sent while it
    is answered (RFC 9051 section 7.5.1), so the session does not refresh
    the mailbox view during or after it.
``BREAKS_SEQNUMS``
    The command itself removes messages and renumbers the rest (EXPUNGE,
    MOVE, CLOSE).
``NEEDS_SYNC``
    The command talks to the connection directly (STARTTLS, AUTHENTICATE,
    IDLE, LOGOUT): all output before it is flushed first, and input after it
    must not be read ahead as commands (RFC 9051 section 5.5).

A handler gets the session and the parsed command and returns the text of
the tagged OK (which may start with a response code), or ``None`` when it
wrote its own tagged reply; failures are raised (``dynamail.imap.errors``).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynamail.imap.parser import Command
from dynamail.imap.state import ANY_STATE, AUTH, NOT_AUTH, SELECTED, State

if TYPE_CHECKING:
    from dynamail.imap.session import Session

Handler = Callable[["Session", Command], Awaitable[str | None]]


class Flags(enum.Flag):
    NONE = 0
    USES_SEQNUMS = enum.auto()
    BREAKS_SEQNUMS = enum.auto()
    NEEDS_SYNC = enum.auto()


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    states: frozenset[State]
    handler: Handler
    flags: Flags = Flags.NONE


REGISTRY: dict[str, CommandSpec] = {}


def _register(name: str, states: frozenset[State], handler: Handler, flags: Flags = Flags.NONE) -> None:
    REGISTRY[name] = CommandSpec(name, states, handler, flags)


def _build() -> None:
    from dynamail.imap.commands import connection as c
    from dynamail.imap.commands import mailboxes as mb
    from dynamail.imap.commands import messages as m
    from dynamail.imap.commands import metadata as md

    seq, brk, sync = Flags.USES_SEQNUMS, Flags.BREAKS_SEQNUMS, Flags.NEEDS_SYNC
    # any state (RFC 9051 6.1)
    _register("CAPABILITY", ANY_STATE, c.capability)
    _register("NOOP", ANY_STATE, c.noop)
    _register("LOGOUT", ANY_STATE, c.logout, sync)
    _register("ID", ANY_STATE, c.id_)  # RFC 2971
    # not authenticated (RFC 9051 6.2)
    _register("STARTTLS", NOT_AUTH, c.starttls, sync)
    _register("LOGIN", NOT_AUTH, c.login)
    _register("AUTHENTICATE", NOT_AUTH, c.authenticate, sync)
    _register("XDYNAMAIL-CHALLENGE", NOT_AUTH, c.relay_challenge)  # cluster relays
    _register("XDYNAMAIL-RELAY", NOT_AUTH, c.relay_ticket, sync)
    # authenticated (RFC 9051 6.3)
    _register("ENABLE", AUTH, c.enable)  # RFC 5161
    _register("COMPRESS", AUTH, c.compress, sync)  # RFC 4978
    _register("NOTIFY", AUTH, c.notify_)  # RFC 5465
    _register("SELECT", AUTH, mb.select)
    _register("EXAMINE", AUTH, mb.examine)
    _register("CREATE", AUTH, mb.create)
    _register("DELETE", AUTH, mb.delete)
    _register("RENAME", AUTH, mb.rename)
    _register("SUBSCRIBE", AUTH, mb.subscribe)
    _register("UNSUBSCRIBE", AUTH, mb.unsubscribe)
    _register("LIST", AUTH, mb.list_)
    _register("LSUB", AUTH, mb.lsub)
    _register("NAMESPACE", AUTH, mb.namespace)  # RFC 2342
    _register("STATUS", AUTH, mb.status)
    _register("APPEND", AUTH, mb.append)
    _register("IDLE", AUTH, c.idle, sync)  # RFC 2177
    _register("GETQUOTA", AUTH, mb.getquota)  # RFC 9208
    _register("GETQUOTAROOT", AUTH, mb.getquotaroot)
    _register("SETQUOTA", AUTH, mb.setquota)
    _register("GETMETADATA", AUTH, md.getmetadata)  # RFC 5464
    _register("SETMETADATA", AUTH, md.setmetadata)
    # selected (RFC 9051 6.4)
    _register("CHECK", SELECTED, c.noop)  # RFC 3501 6.4.1
    _register("CLOSE", SELECTED, m.close, brk)
    _register("UNSELECT", SELECTED, m.unselect)  # RFC 3691
    _register("EXPUNGE", SELECTED, m.expunge, brk)
    _register("UID EXPUNGE", SELECTED, m.uid_expunge, brk)  # RFC 4315
    _register("SEARCH", SELECTED, m.search, seq)
    _register("UID SEARCH", SELECTED, m.search)
    _register("SORT", SELECTED, m.sort, seq)  # RFC 5256
    _register("UID SORT", SELECTED, m.sort)
    _register("THREAD", SELECTED, m.thread, seq)  # RFC 5256
    _register("UID THREAD", SELECTED, m.thread)
    _register("FETCH", SELECTED, m.fetch, seq)
    _register("UID FETCH", SELECTED, m.fetch)
    _register("STORE", SELECTED, m.store, seq)
    _register("UID STORE", SELECTED, m.store)
    _register("COPY", SELECTED, m.copy, seq)
    _register("UID COPY", SELECTED, m.copy)
    _register("MOVE", SELECTED, m.move, seq | brk)  # RFC 6851
    _register("UID MOVE", SELECTED, m.move, brk)


_build()
