"""NOTIFY (RFC 5465): changes of mailboxes other than the selected one,
pushed to the session as untagged STATUS and LIST, during IDLE and before
the tagged reply of any command.

The adapter follows the account's change feed (``AccountStore.changes()``:
the names of mailboxes as any session of the account changes them, and
``LIST_CHANGED`` when mailboxes or subscriptions changed) once a NOTIFY SET
is in force and adds them to ``Session.notify_pending`` (a set: at most one
entry per mailbox, whatever the rate of changes); the session answers them
with :func:`deliver`.

Message events (MessageNew, MessageExpunge, FlagChange, section 5.2 and
5.3) are answered with ``STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)``,
plus HIGHESTMODSEQ with CONDSTORE.  For the selected mailbox the usual
EXISTS/EXPUNGE/FETCH are sent, as without NOTIFY.

MailboxName (section 5.4) and SubscriptionChange (section 5.5) are found by
comparing the account's mailboxes and subscriptions with the session's last
picture of them (:class:`Boxes`, MAILBOXIDs included, so a rename is told
from a delete and a create): a new mailbox is ``LIST () "/" name``, a
renamed one ``LIST () "/" new ("OLDNAME" (old))`` (for every child too),
one that went away ``LIST (\\NonExistent)``, and a subscription change
``LIST`` with ``\\Subscribed`` or without it.  The session's own CREATE,
DELETE, RENAME and (UN)SUBSCRIBE are taken into the picture as they happen
(:func:`own_change`), so it is told only of other sessions' changes, as
Dovecot does.  AnnotationChange and the metadata events are refused with
``NO [BADEVENT ...]`` (section 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynamail.imap.errors import CommandBad, CommandNo
from dynamail.imap.parser import Token

if TYPE_CHECKING:
    from dynamail.imap.session import Session

SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
_BY_UPPER = {e.upper(): e for e in SUPPORTED}
_KNOWN = {"ANNOTATIONCHANGE", "MAILBOXMETADATACHANGE", "SERVERMETADATACHANGE"}
MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange"})
LIST_EVENTS = frozenset({"MailboxName", "SubscriptionChange"})


@dataclass(frozen=True, slots=True)
class Group:
    kind: str  # SELECTED, SELECTED-DELAYED, PERSONAL, INBOXES, SUBSCRIBED, SUBTREE, MAILBOXES
    names: tuple[str, ...]
    events: frozenset[str]


@dataclass(slots=True)
class Boxes:
    """The session's picture of the account's mailboxes: name -> UIDVALIDITY
    (the ground of MAILBOXID), and the subscribed names."""

    ids: dict[str, int]
    subscribed: set[str]


@dataclass(slots=True)
class Spec:
    status: bool
    groups: list[Group] = field(default_factory=list)
    boxes: Boxes | None = None  # kept while some group asks for LIST_EVENTS

    @property
    def wants_lists(self) -> bool:
        return any(g.events & LIST_EVENTS for g in self.groups)

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


async def picture(s: Session) -> Boxes:
    from dynamail.imap.commands.mailboxes import _subscriptions

    store = s.need_store()
    listing = await store.list_mailboxes()
    return Boxes({m.name: m.uidvalidity for m in listing}, set(_subscriptions(store)))


async def own_change(s: Session, *names: str) -> None:
    """Take the session's own change of ``names`` (and of their children and
    superior names) into its picture, so it is not announced back to it."""
    spec = s.notify
    if spec is None or spec.boxes is None:
        return
    now = await picture(s)

    def touched(n: str) -> bool:
        return any(n == g or n.startswith(g + "/") or g.startswith(n + "/") for g in names)

    old = spec.boxes
    old.ids = {n: v for n, v in old.ids.items() if not touched(n)} | {n: v for n, v in now.ids.items() if touched(n)}
    old.subscribed = {n for n in old.subscribed if not touched(n)} | {n for n in now.subscribed if touched(n)}


def _list_line(s: Session, name: str, attrs: list[str], old: str | None = None) -> bytes:
    line = b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + s.mailbox_out(name)
    if old is not None:  # RFC 5465 section 5.4 (and RFC 9051 7.3.1): the name it had
        line += b' ("OLDNAME" (' + s.mailbox_out(old) + b"))"
    return line + b"\r\n"


async def _lists(s: Session, spec: Spec, before: Boxes) -> None:
    """LIST responses for what other sessions changed since ``before``."""
    now = await picture(s)
    spec.boxes = now
    either = before.subscribed | now.subscribed

    def wants(event: str, *names: str) -> bool:
        return any(event in spec.events_for(n, either) for n in names)

    def attrs(name: str) -> list[str]:
        out = [] if name in now.ids else ["\\NonExistent"]
        return out + (["\\Subscribed"] if name in now.subscribed else [])

    # a MAILBOXID now under another name was renamed (RENAME INBOX leaves
    # an empty INBOX with a new one behind)
    name_of = {v: n for n, v in before.ids.items() if v}
    renamed: dict[str, str] = {}  # new name -> old name
    for n, v in now.ids.items():
        was = name_of.get(v)
        if was is not None and was != n:
            renamed[n] = was
    gone = sorted(n for n in before.ids if n not in now.ids and n not in renamed.values())
    created = sorted(n for n, v in now.ids.items() if n not in renamed and n != "INBOX" and before.ids.get(n) != v)
    for n in gone:
        if wants("MailboxName", n):
            s.write(_list_line(s, n, attrs(n)))
    for n in sorted(renamed):
        if wants("MailboxName", n, renamed[n]):
            s.write(_list_line(s, n, attrs(n), renamed[n]))
    for n in created:
        if wants("MailboxName", n):
            s.write(_list_line(s, n, attrs(n)))
    carried = {n for n, o in renamed.items() if (o in before.subscribed) == (n in now.subscribed)}
    carried |= {renamed[n] for n in carried}
    for n in sorted(before.subscribed ^ now.subscribed):
        if n not in carried and wants("SubscriptionChange", n):
            s.write(_list_line(s, n, attrs(n)))


async def deliver(s: Session) -> None:
    """Write what changed in watched mailboxes (not the selected one)."""
    spec = s.notify
    if spec is None or not s.notify_pending or s.store is None:
        return
    from dynamail.imap.commands.mailboxes import _subscriptions, status_line
    from dynamail.storage.api import LIST_CHANGED, NoSuchMailbox

    pending = sorted(s.notify_pending)
    s.notify_pending.clear()
    if spec.boxes is not None and LIST_CHANGED in pending:
        await _lists(s, spec, spec.boxes)
    subscribed = set(_subscriptions(s.store))
    selected = s.selected.name if s.selected is not None else None
    for name in pending:
        if name == selected or name == LIST_CHANGED:
            continue
        events = spec.events_for(name, subscribed)
        if not events & MESSAGE_EVENTS:
            continue
        try:
            st = await s.store.status(name)
        except NoSuchMailbox:  # gone: MailboxName said so, if it was asked for
            continue
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"]
        if s.condstore:
            items.append("HIGHESTMODSEQ")
        s.write(await status_line(s, name, st, items))
