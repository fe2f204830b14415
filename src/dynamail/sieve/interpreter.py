"""Runs a checked Sieve script over one message and says what to do with it.

The interpreter is synchronous and pure: it reads the message, the envelope
and the list of the account's mailboxes, and returns an :class:`Outcome`
(the actions and the message with any header edits).  It never touches
storage or the network; the delivery layer (:mod:`dynamail.sieve.filter`)
performs the actions.  It runs in a worker thread so that its CPU budget
(:class:`~dynamail.sieve.match.Budget`) is measured on that thread alone.

Implicit keep (RFC 5228 2.10.2): the message is filed into INBOX unless a
``fileinto`` or ``redirect`` without ``:copy``, a ``discard`` or a
``reject``/``ereject`` cancelled it.  A :class:`SieveRuntimeError` ends the
run; the caller then keeps the message in INBOX (RFC 5228 2.10.6).
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import re
from collections.abc import Callable, Mapping

from dynamail.sieve import limits
from dynamail.sieve.actions import Action, Envelope, FileInto, Outcome, Redirect, Reject
from dynamail.sieve.commands import Call, Script, Value
from dynamail.sieve.dates import date_part, parse_zone
from dynamail.sieve.match import Budget, Matcher, SieveRuntimeError, ascii_fold
from dynamail.sieve.message import PROTECTED_HEADERS, SieveMessage, decode_value, split_address
from dynamail.sieve.vacation import vacation_action
from dynamail.sieve.variables import Variables

_SPAM_STATUS = re.compile(r"^\s*(Yes|No)\b.*?\bscore=(-?[0-9.]+)\s+required=(-?[0-9.]+)", re.IGNORECASE)

#: RFC 5183 4: what the environment test knows without being told more.
ENVIRONMENT = {"location": "MDA", "phase": "during", "name": "dynamail"}

#: RFC 5233 2: the separator between user and detail, as Pigeonhole's default.
SUBADDRESS_SEPARATOR = "+"


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


class Run:
    """One run of one script over one message."""

    def __init__(self, script: Script, message: SieveMessage, envelope: Envelope, *,
                 mailboxes: frozenset[str] = frozenset({"INBOX"}),
                 now: datetime.datetime | None = None, budget: Budget | None = None,
                 local_zone: datetime.tzinfo | None = None,
                 seen: Mapping[str, float] | None = None,
                 environment: Mapping[str, str] | None = None,
                 library: Mapping[str, Script] | None = None,
                 delivery: str | None = None) -> None:
        self.script = script
        #: the id of this delivery (a retry of the same copy has the same id)
        self.delivery = delivery
        #: include (RFC 6609): the account's other scripts, compiled, by name
        self.library = library or {}
        self._including: list[str] = []
        self._included: set[str] = set()
        self._include_count = 0
        #: environment (RFC 5183) items; unknown items make the test false
        self.environment = {**ENVIRONMENT, **(environment or {})}
        #: duplicate (RFC 7352): ids tracked earlier (key -> until when)
        self.seen = seen or {}
        self.msg = message
        self.env = envelope
        self.mailboxes = {_canon(m) for m in mailboxes}
        self.now = now or datetime.datetime.now(datetime.UTC)
        self.zone = local_zone or datetime.UTC
        self.budget = budget or Budget()
        self.vars = Variables("variables" in script.requires, self.budget)
        self.flags: list[str] = []  # the internal variable of imap4flags (RFC 5232 3)
        self.out = Outcome()
        self.redirects = 0
        self._tests: dict[str, Callable[[Call], bool]] = {
            "allof": lambda c: all(self.test(t) for t in c.tests),
            "anyof": lambda c: any(self.test(t) for t in c.tests),
            "not": lambda c: not self.test(c.tests[0]),
            "true": lambda c: True,
            "false": lambda c: False,
            "exists": self._exists,
            "size": self._size,
            "header": self._header,
            "address": self._address,
            "envelope": self._envelope,
            "string": self._string,
            "hasflag": self._hasflag,
            "body": self._body,
            "date": self._date,
            "currentdate": self._date,
            "mailboxexists": self._mailboxexists,
            "duplicate": self._duplicate,
            "environment": self._environment,
            "spamtest": self._spamtest,
        }
        self._commands: dict[str, Callable[[Call], None]] = {
            "keep": self._keep, "discard": self._discard, "redirect": self._redirect,
            "fileinto": self._fileinto, "reject": self._reject, "ereject": self._reject,
            "vacation": self._vacation, "set": self._set, "setflag": self._flagcmd,
            "addflag": self._flagcmd, "removeflag": self._flagcmd,
            "addheader": self._addheader, "deleteheader": self._deleteheader,
            "global": self._global,
        }

    # running ---------------------------------------------------------------
    def execute(self) -> Outcome:
        try:
            self._block(self.script.commands)
        except (_Stop, _Return):  # RFC 6609 3.2: return at the top ends the script
            pass
        self._check_conflicts()
        if self.out.implicit_keep:
            self._add(FileInto("INBOX", frozenset(self.flags)))
        self.out.message = self.msg.to_bytes()
        return self.out

    def _block(self, calls: tuple[Call, ...]) -> None:
        taken = False
        for call in calls:
            self.budget.charge(16)
            name = call.name
            if name == "if":
                taken = self.test(call.tests[0])
                if taken:
                    self._block(call.block or ())
            elif name == "elsif":
                if not taken:
                    taken = self.test(call.tests[0])
                    if taken:
                        self._block(call.block or ())
            elif name == "else":
                if not taken:
                    self._block(call.block or ())
                taken = True
            elif name == "stop":
                raise _Stop
            elif name == "return":
                raise _Return
            elif name == "include":
                self._include(call)
            else:
                self._commands[name](call)

    def test(self, call: Call) -> bool:
        self.budget.charge(8)
        return self._tests[call.name](call)

    # helpers ---------------------------------------------------------------
    def s(self, value: Value | None) -> str:
        return self.vars.expand(str(value or ""))

    def sl(self, value: Value | None) -> tuple[str, ...]:
        if value is None:
            return ()
        items = (value,) if isinstance(value, str) else value
        assert isinstance(items, tuple)
        return tuple(self.vars.expand(str(v)) for v in items)

    def _matcher(self, call: Call) -> Matcher:
        return Matcher(call.tags, self.budget)

    def _matched(self, m: Matcher, values: list[str], keys: tuple[str, ...]) -> bool:
        m.captures = None
        ok = m.match_any(values, keys)
        if ok and m.captures is not None:
            self.vars.set_matches(m.captures)
        return ok

    def _add(self, action: Action) -> None:
        if len(self.out.actions) >= limits.MAX_ACTIONS:
            raise SieveRuntimeError("too many actions")
        for i, old in enumerate(self.out.actions):
            if isinstance(action, FileInto) and isinstance(old, FileInto) and old.mailbox == action.mailbox:
                self.out.actions[i] = action  # one copy per mailbox; the later flags win
                return
            if action == old:
                return
        self.out.actions.append(action)

    def _check_conflicts(self) -> None:
        rejects = [a for a in self.out.actions if isinstance(a, Reject)]
        if not rejects:
            return
        others = [a for a in self.out.actions if not isinstance(a, Reject)]
        # RFC 5429 2.1: reject together with a delivering action or vacation is refused
        if others or len(rejects) > 1:
            raise SieveRuntimeError("reject cannot be combined with other actions")

    def _include(self, call: Call) -> None:
        """RFC 6609 3.2: run another of the account's scripts here."""
        name = str(call.args[0])
        optional = "optional" in call.tags
        script = None if "global" in call.tags else self.library.get(name)
        if script is None:
            if optional:
                return
            where = "global" if "global" in call.tags else "personal"
            raise SieveRuntimeError(f"include: no {where} script {name!r}")
        if "once" in call.tags and name in self._included:
            return
        if name in self._including:
            raise SieveRuntimeError(f"include: {name!r} includes itself")
        self._include_count += 1
        if len(self._including) >= limits.MAX_INCLUDE_DEPTH or self._include_count > limits.MAX_INCLUDES:
            raise SieveRuntimeError("include: too many included scripts")
        self._included.add(name)
        self._including.append(name)
        saved = self.vars.enter()
        enabled = self.vars.enabled
        self.vars.enabled = "variables" in script.requires
        try:
            self._block(script.commands)
        except _Return:
            pass
        finally:
            self.vars.leave(saved)
            self.vars.enabled = enabled
            self._including.pop()

    # tests -----------------------------------------------------------------
    def _exists(self, call: Call) -> bool:
        return all(self.msg.values(name) for name in self.sl(call.args[0]))

    def _size(self, call: Call) -> bool:
        limit = call.args[0] if isinstance(call.args[0], int) else 0
        return self.msg.size > limit if "over" in call.tags else self.msg.size < limit

    def _header(self, call: Call) -> bool:
        m = self._matcher(call)
        values: list[str] = []
        for name in self.sl(call.args[0]):
            values.extend(self.msg.values(name))
        return self._matched(m, values, self.sl(call.args[1]))

    def _address_values(self, call: Call, addresses: list[str]) -> list[str]:
        part = "all"
        for p in ("localpart", "domain", "user", "detail"):
            if p in call.tags:
                part = p
        out: list[str] = []
        for addr in addresses:
            if part == "all":
                out.append(addr)
                continue
            split = split_address(addr)
            if split is None:
                continue
            local, domain = split
            if part == "localpart":
                out.append(local)
            elif part == "domain":
                out.append(domain)
            else:  # RFC 5233: "user+detail"; :detail does not match without a "+"
                user, plus, detail = local.partition(SUBADDRESS_SEPARATOR)
                if part == "user":
                    out.append(user)
                elif plus:
                    out.append(detail)
        return out

    def _address(self, call: Call) -> bool:
        m = self._matcher(call)
        addrs: list[str] = []
        for name in self.sl(call.args[0]):
            addrs.extend(self.msg.raw_addresses(name))
        return self._matched(m, self._address_values(call, addrs), self.sl(call.args[1]))

    def _envelope(self, call: Call) -> bool:
        m = self._matcher(call)
        addrs: list[str] = []
        for part in self.sl(call.args[0]):
            part = part.lower()
            if part == "from" and self.env.sender is not None:
                addrs.append(self.env.sender)
            elif part == "to":
                addrs.append(self.env.recipient)
        if addrs == [""] and "all" not in call.tags and any(p in call.tags for p in ("localpart", "domain", "user", "detail")):
            addrs = []
        return self._matched(m, self._address_values(call, addrs), self.sl(call.args[1]))

    def _string(self, call: Call) -> bool:
        m = self._matcher(call)
        values = list(self.sl(call.args[0]))
        if m.kind == "count":  # RFC 5229 5: empty strings are not counted
            values = [v for v in values if v]
        return self._matched(m, values, self.sl(call.args[1]))

    def _hasflag(self, call: Call) -> bool:
        m = self._matcher(call)
        if call.args[0] is not None:
            flags: list[str] = []
            for var in self.sl(call.args[0]):
                flags.extend(self.vars.get(var).split())
        else:
            flags = list(self.flags)
        return self._matched(m, flags, self.sl(call.args[1]))

    def _body(self, call: Call) -> bool:
        m = self._matcher(call)
        transform = "text"
        if "raw" in call.tags:
            transform = "raw"
        elif "content" in call.tags:
            transform = "content"
        parts = self.msg.body_parts(transform, self.sl(call.tags.get("content")))
        self.budget.charge(sum(len(p) for p in parts) // 64)
        return self._matched(m, parts, self.sl(call.args[0]))

    def _date(self, call: Call) -> bool:
        m = self._matcher(call)
        zone_arg = call.tags.get("zone")
        if call.name == "date":
            values = self.msg.values(self.s(call.args[0]))
            if not values:
                return False
            try:
                when = email.utils.parsedate_to_datetime(values[0])
            except (TypeError, ValueError, IndexError):
                return False
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
        else:
            when = self.now
        if zone_arg is not None:
            zone = parse_zone(self.s(zone_arg))
            if zone is None:
                return False
            when = when.astimezone(zone)
        elif "originalzone" not in call.tags:
            when = when.astimezone(self.zone)
        part = self.s(call.args[-2]).lower()
        return self._matched(m, [date_part(when, part)], self.sl(call.args[-1]))

    def _mailboxexists(self, call: Call) -> bool:
        return all(_canon(b) in self.mailboxes for b in self.sl(call.args[0]))

    def _environment(self, call: Call) -> bool:
        value = self.environment.get(self.s(call.args[0]).lower())
        if value is None:
            return False
        return self._matched(self._matcher(call), [value], self.sl(call.args[1]))

    def _spamtest(self, call: Call) -> bool:
        """RFC 5235 from the content filter's ``X-Spam-Status``: only a field
        above the first Received field counts (the one our server added; one
        that came with the message sits below our Received field):
        "0" untested, 1 (not spam) .. 10 (spam); with ``:percent`` 0..100."""
        status = None
        for f in self.msg.fields:  # only our own field, added above our Received field
            low = f.name.lower()
            if low == "received":
                break
            if low == "x-spam-status":
                status = decode_value(self.msg._value_text(f))
                break
        m = _SPAM_STATUS.match(status) if status else None
        percent = "percent" in call.tags
        if m is None:
            if percent:
                return False  # RFC 5235 3.2: an untested message has no percentage
            value = "0"
        else:
            score, required = float(m.group(2)), float(m.group(3))
            ratio = 1.0 if m.group(1).lower() == "yes" else max(0.0, min(score / required, 1.0)) if required > 0 else 0.0
            value = str(round(ratio * 100)) if percent else str(1 + min(9, int(ratio * 9)))
        return self._matched(self._matcher(call), [value], (self.s(call.args[0]),))

    def _duplicate(self, call: Call) -> bool:
        """RFC 7352: has a message with this id (Message-ID, a header, or
        ``:uniqueid``) been delivered within the period?  The id is tracked
        only if this delivery succeeds (the caller stores ``out.duplicates``)."""
        if "uniqueid" in call.tags:
            ident = self.s(call.tags["uniqueid"])
        else:
            values = self.msg.values(self.s(call.tags.get("header", "message-id")))
            if not values or not values[0].strip():
                return False  # RFC 7352 3.1: no id, no duplicate
            ident = values[0].strip()
        handle = self.s(call.tags.get("handle", ""))
        key = hashlib.sha256(f"{handle}\0{ident}".encode()).hexdigest()[:32]
        period = min(call.number("seconds", limits.DUPLICATE_DEFAULT_SECONDS), limits.DUPLICATE_MAX_SECONDS)
        now = self.now.timestamp()
        until = self.out.duplicates.get(key) or self.seen.get(key, 0.0)
        # a retried delivery of the copy that recorded the id is no duplicate of itself
        mine = f"{key}@{hashlib.sha256(self.delivery.encode()).hexdigest()[:8]}" if self.delivery else ""
        duplicate = until > now and not (mine and self.seen.get(mine, 0.0) > now)
        if not duplicate or "last" in call.tags:  # :last: the period counts from the latest copy
            self.out.duplicates[key] = now + period
            if mine:
                self.out.duplicates[mine] = now + period
        return duplicate

    # actions ---------------------------------------------------------------
    def _flags_of(self, call: Call) -> frozenset[str]:
        if "flags" in call.tags:
            return frozenset(_flag_words(self.sl(call.tags["flags"])))
        return frozenset(self.flags)

    def _keep(self, call: Call) -> None:
        self._add(FileInto("INBOX", self._flags_of(call)))
        self.out.implicit_keep = False

    def _discard(self, call: Call) -> None:
        self.out.implicit_keep = False
        self.out.discarded = True

    def _redirect(self, call: Call) -> None:
        address = self.s(call.args[0]).strip()
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1]
        if split_address(address) is None or any(c in address for c in " \t\r\n,<>()"):
            raise SieveRuntimeError(f"redirect: bad address {address!r}")
        self.redirects += 1
        if self.redirects > limits.MAX_REDIRECTS:
            raise SieveRuntimeError("too many redirects")
        self._add(Redirect(address))
        if "copy" not in call.tags:
            self.out.implicit_keep = False

    def _fileinto(self, call: Call) -> None:
        box = _canon(self.s(call.args[0]))
        if not box or len(box) > 512 or any(ord(c) < 32 for c in box):
            raise SieveRuntimeError(f"fileinto: bad mailbox name {box!r}")
        self._add(FileInto(box, self._flags_of(call), bool(call.tags.get("create"))))
        if "copy" not in call.tags:
            self.out.implicit_keep = False

    def _reject(self, call: Call) -> None:
        self._add(Reject(self.s(call.args[0]), call.name == "ereject"))
        self.out.implicit_keep = False

    def _vacation(self, call: Call) -> None:
        self._add(vacation_action(call, self.s, self.sl))

    def _set(self, call: Call) -> None:
        self.vars.set_with_modifiers(str(call.args[0]), self.s(call.args[1]), call.tags)

    def _global(self, call: Call) -> None:
        for name in self.sl(call.args[0]):
            self.vars.global_names.add(name.lower())

    def _flagcmd(self, call: Call) -> None:
        given = _flag_words(self.sl(call.args[1]))
        var = str(call.args[0]) if call.args[0] is not None else None
        current = self.vars.get(var).split() if var is not None else list(self.flags)
        if call.name == "setflag":
            new = _dedupe(given)
        elif call.name == "addflag":
            new = _dedupe(current + given)
        else:
            drop = {ascii_fold(f) for f in given}
            new = [f for f in current if ascii_fold(f) not in drop]
        if var is not None:
            self.vars.set(var, " ".join(new))
        else:
            self.flags = new

    def _addheader(self, call: Call) -> None:
        name, value = self.s(call.args[0]), self.s(call.args[1])
        if not _field_name_ok(name):
            raise SieveRuntimeError(f"addheader: field name {name!r} is not valid")
        if name.lower() in PROTECTED_HEADERS:  # RFC 5293 6: refused, the run goes on
            self.out.warnings.append(f"line {call.line}: adding {name} is not allowed; ignored")
            return
        if len(name) + len(value) + 2 > limits.MAX_ADDED_HEADER:
            raise SieveRuntimeError("addheader: field too long")
        self.msg.add_header(name, value, bool(call.tags.get("last")))

    def _deleteheader(self, call: Call) -> None:
        name = self.s(call.args[0])
        if not _field_name_ok(name):
            raise SieveRuntimeError(f"deleteheader: field name {name!r} is not valid")
        if name.lower() in PROTECTED_HEADERS:
            self.out.warnings.append(f"line {call.line}: deleting {name} is not allowed; ignored")
            return
        patterns = self.sl(call.args[1]) if call.args[1] is not None else None
        m = self._matcher(call)
        low = name.lower()
        positions = [i for i, f in enumerate(self.msg.fields) if f.name.lower() == low]
        index = call.tags.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            if index < 1 or index > len(positions):
                return
            pick = positions[-index] if call.tags.get("last") else positions[index - 1]
            positions = [pick]
        doomed: list[int] = []
        for i in positions:
            if patterns is not None:
                value = decode_value(self.msg._value_text(self.msg.fields[i]))
                if not m.match_any([value], patterns):
                    continue
            doomed.append(i)
        for i in reversed(doomed):
            self.msg.delete_header(i)


def _canon(box: str) -> str:
    return "INBOX" if box.upper() == "INBOX" else box


def _flag_words(items: tuple[str, ...]) -> list[str]:
    words: list[str] = []
    for item in items:
        words.extend(item.split())
    return _dedupe(words)


def _dedupe(flags: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for f in flags:
        k = ascii_fold(f)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out


def _field_name_ok(name: str) -> bool:
    """RFC 5322 3.6.8: printable US-ASCII except colon, 1..76 characters."""
    return 0 < len(name) <= 76 and all(33 <= ord(c) <= 126 and c != ":" for c in name)


def run(script: Script, message: bytes | SieveMessage, envelope: Envelope, **kwargs: object) -> Outcome:
    """Run ``script`` over ``message``; raises :class:`SieveRuntimeError` on failure."""
    msg = message if isinstance(message, SieveMessage) else SieveMessage.parse(message)
    return Run(script, msg, envelope, **kwargs).execute()  # type: ignore[arg-type]
