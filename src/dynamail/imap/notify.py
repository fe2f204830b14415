"""NOTIFY (RFC 5465): changes of mailboxes other than the selected one,
pushed to the session as untagged STATUS (and LIST for mailboxes that went
away), during IDLE and before the tagged reply of any command.

The adapter follows the account's change feed (``AccountStore.changes()``:
the names of mailboxes as any session of the account changes them) once a
NOTIFY SET is in force and adds the names to ``Session.notify_pending`` (a
set: at most one entry per mailbox, whatever the rate of changes); the
session answers them with :func:`deliver`.

Supported events: MessageNew, MessageExpunge and FlagChange (answered with
``STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)``, plus HIGHESTMODSEQ with
CONDSTORE), and MailboxName (a mailbox that no longer exists is reported as
``LIST (\\NonExistent)``).  Others are refused with ``NO [BADEVENT ...]``
(section 5).  For the selected mailbox the usual EXISTS/EXPUNGE/FETCH are
sent, as without NOTIFY.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynamail.imap.errors import CommandBad, CommandNo
from dynamail.imap.parser import Token

if TYPE_CHECKING:
    from dynamail.imap.session import Session

SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName")
_BY_UPPER = {e.upper(): e for e in SUPPORTED}
_KNOWN = {"ANNOTATIONCHANGE", "SUBSCRIPTIONCHANGE", "MAILBOXMETADATACHANGE", "SERVERMETADATACHANGE"}
MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange"})


@dataclass(frozen=True, slots=True)
class Group:
    kind: str  # SELECTED, SELECTED-DELAYED, PERSONAL, INBOXES, SUBSCRIBED, SUBTREE, MAILBOXES
    names: tuple[str, ...]
    events: frozenset[str]


@dataclass(slots=True)
class Spec:
    status: bool
    groups: list[Group] = field(default_factory=list)

    def events_for(self, name: str, subscribed: set[str]) -> frozenset[str]:
        """Events wanted for a mailbox that is not the selected one."""
        out: set[str] = set()
        for g in self.groups:
            if g.kind in ("SELECTED", "SELECTED-DELAYED"):
                continue
            if (
                g.kind == "PERSONAL"
                or (g.kind == "INBOXES" and name == "INBOX")
                or (g.kind == "SUBSCRIBED" and name in subscribed)
                or (g.kind == "MAILBOXES" and name in g.names)
                or (g.kind == "SUBTREE" and any(name == n or name.startswith(n + "/") for n in g.names))
            ):
                out |= g.events
        return frozenset(out)


def parse(s: Session, toks: list[Token]) -> Spec | None:
    """``NONE`` → None; ``SET [STATUS] (filter events)...`` → a Spec."""
    if len(toks) == 1 and isinstance(toks[0], str) and toks[0].upper() == "NONE":
        return None
    if not toks or not isinstance(toks[0], str) or toks[0].upper() != "SET":
        raise CommandBad("Expected NOTIFY SET or NOTIFY NONE")
    rest = toks[1:]
    status = False
    if rest and isinstance(rest[0], str) and rest[0].upper() == "STATUS":
        status = True
        rest = rest[1:]
    if not rest:
        raise CommandBad("NOTIFY SET needs event groups")
    spec = Spec(status)
    for item in rest:
        if not isinstance(item, list) or len(item) < 2:
            raise CommandBad("Bad event group")
        head = item[0]
        if not isinstance(head, str):
            raise CommandBad("Bad mailbox filter")
        kind = head.upper()
        names: tuple[str, ...] = ()
        i = 1
        if kind in ("SUBTREE", "MAILBOXES"):
            arg = item[1]
            raw = arg if isinstance(arg, list) else [arg]
            got = []
            for r in raw:
                if isinstance(r, list):
                    raise CommandBad("Bad mailbox name")
                got.append(s.mailbox_arg(r.encode() if isinstance(r, str) else bytes(r)))
            names = tuple(got)
            i = 2
        elif kind not in ("SELECTED", "SELECTED-DELAYED", "PERSONAL", "INBOXES", "SUBSCRIBED"):
            raise CommandBad("Unknown mailbox filter")
        if i >= len(item):
            raise CommandBad("Missing events")
        ev = item[i]
        events: set[str] = set()
        if isinstance(ev, str) and ev.upper() == "NONE":
            pass
        elif isinstance(ev, list):
            j = 0
            while j < len(ev):
                e = ev[j]
                if not isinstance(e, str):
                    raise CommandBad("Bad event")
                name = _BY_UPPER.get(e.upper())
                if name is None:
                    if e.upper() in _KNOWN:
                        raise CommandNo("Unsupported event", "BADEVENT (" + " ".join(SUPPORTED) + ")")
                    raise CommandBad("Unknown event")
                events.add(name)
                if name == "MessageNew" and j + 1 < len(ev) and isinstance(ev[j + 1], list):
                    j += 1  # fetch attributes for the selected mailbox: EXISTS is sent
                j += 1
        else:
            raise CommandBad("Bad event list")
        if events & {"MessageNew", "MessageExpunge"} and not events >= {"MessageNew", "MessageExpunge"}:
            raise CommandBad("MessageNew and MessageExpunge go together")  # section 5
        spec.groups.append(Group(kind, names, frozenset(events)))
    return spec


async def deliver(s: Session) -> None:
    """Write what changed in watched mailboxes (not the selected one)."""
    spec = s.notify
    if spec is None or not s.notify_pending or s.store is None:
        return
    from dynamail.imap.commands.mailboxes import _subscriptions, status_line
    from dynamail.storage.api import NoSuchMailbox

    pending = sorted(s.notify_pending)
    s.notify_pending.clear()
    subscribed = set(_subscriptions(s.store))
    selected = s.selected.name if s.selected is not None else None
    for name in pending:
        if name == selected:
            continue
        events = spec.events_for(name, subscribed)
        if not events:
            continue
        try:
            st = await s.store.status(name)
        except NoSuchMailbox:
            if "MailboxName" in events:
                s.write(b'* LIST (\\NonExistent) "/" ' + s.mailbox_out(name) + b"\r\n")
            continue
        if events & MESSAGE_EVENTS:
            items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"]
            if s.condstore:
                items.append("HIGHESTMODSEQ")
            s.write(await status_line(s, name, st, items))
