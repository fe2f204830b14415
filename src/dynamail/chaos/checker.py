"""The checker: what must hold of a campaign's history and of the healed
cluster's final state, and the unavailability each fault caused.

It reads only data (the recorded operations and faults, a :class:`Final`
snapshot taken through IMAP, the admin CLI and the shared storage after
every fault was healed, and the members' logs), so a saved history can be
checked again, and every rule has a test on a hand-written history.

The rules (each violation names its rule as ``kind``):

``lost`` / ``duplicate``    an acknowledged delivery, APPEND, COPY or MOVE
                            is present exactly once where it belongs;
``refused-took-effect``     a refused creation is never seen;
``came-back``               a message whose EXPUNGE or MOVE was acknowledged
                            is never seen there afterwards;
``unexplained``             no message appears that no operation created;
``uid``                     UIDs ascend within an answer, never change for a
                            message, are never reused under one UIDVALIDITY,
                            and a message first seen later never has a UID
                            at or below one seen earlier; UIDVALIDITY stays;
``flags``                   the flags equal those of the last acknowledged
                            STORE (skipped where an unknown STORE followed it,
                            and satisfied by the flags of any unknown STORE,
                            which may take effect at any time);
``single-image``            every member lists the same mailboxes, the same
                            STATUS, the same accounts and the same settings;
``admin``                   scratch accounts exist exactly as the acknowledged
                            create / rename / delete operations say;
``double-writer``           no account's data log shows an older epoch
                            writing after a newer one;
``lease-lost``              no member that was not faulted logs "lease lost";
``log-error``               no log line at ERROR or above;
``serverbug``               no ``[SERVERBUG]`` answer (nor HTTP 500).
"""

from __future__ import annotations

import datetime
import itertools
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from dynamail.chaos.history import OK, REFUSED, UNKNOWN, Fault, Op

CHAOS_FLAGS = frozenset(("\\Flagged", "\\Answered", "$Chaos1", "$Chaos2"))
CREATES = ("deliver", "append", "copy", "move")
REMOVES = ("move", "expunge")
AVAILABILITY_KINDS = ("deliver", "append", "store", "copy", "move", "expunge", "fetch", "pop3")
LEASE_GRACE = 5.0  # seconds after a fault heals in which its member may still log a lease loss
_ACCEPTED = re.compile(r"accepted as ([0-9a-f]{6,})")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ")


@dataclass(slots=True)
class Violation:
    kind: str
    text: str
    evidence: list[str] = field(default_factory=list)
    repeats: int = 0


@dataclass(slots=True)
class Final:
    """The healed cluster at the end.  ``messages``/``uidvalidity`` were read
    through one member; the other fields are per member (SSI)."""

    time: float = 0.0
    messages: dict[str, dict[str, list[list[Any]]]] = field(default_factory=dict)
    uidvalidity: dict[str, dict[str, int]] = field(default_factory=dict)
    mailboxes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    status: dict[str, dict[str, dict[str, list[int]]]] = field(default_factory=dict)
    accounts: dict[str, list[str]] = field(default_factory=dict)
    realnames: dict[str, dict[str, str]] = field(default_factory=dict)
    writer_epochs: dict[str, dict[str, list[int]]] | None = None
    logs: dict[str, list[str]] = field(default_factory=dict)


def describe(op: Op) -> str:
    where = f"{op.account}/{op.mailbox}" + (f"->{op.target}" if op.target else "")
    extra = {k: v for k, v in op.data.items() if k != "observed"}
    return (f"op {op.id} {op.kind} {op.outcome} via {op.member} {where} {op.msgid} "
            f"[{op.start:.3f}-{op.end:.3f}] {op.reply[:120]!r} {extra if extra else ''}").rstrip()


class Checker:
    def __init__(self, ops: list[Op], faults: list[Fault], final: Final) -> None:
        self.ops = sorted(ops, key=lambda o: o.start)
        self.faults = faults
        self.final = final
        self.violations: list[Violation] = []
        self._seen: dict[tuple[str, str], Violation] = {}

    def check(self) -> list[Violation]:
        self.messages()
        self.observations()
        self.flags()
        self.single_image()
        self.admin()
        self.writers()
        self.logs()
        self.serverbugs()
        return self.violations

    def add(self, kind: str, text: str, *evidence: str) -> None:
        """Record a violation once; the same finding seen again (a duplicate
        in every later FETCH, say) only counts its repeats."""
        key = (kind, text)
        if key in self._seen:
            self._seen[key].repeats += 1
            return
        v = Violation(kind, text, list(evidence))
        self._seen[key] = v
        self.violations.append(v)

    # -- messages ----------------------------------------------------------------
    def _creators(self) -> dict[tuple[str, str, str], list[Op]]:
        out: dict[tuple[str, str, str], list[Op]] = defaultdict(list)
        for op in self.ops:
            if op.kind in CREATES and op.msgid:
                box = op.target if op.kind in ("copy", "move") else op.mailbox
                out[(op.account, box, op.msgid)].append(op)
        return out

    def _removers(self) -> dict[tuple[str, str, str], list[Op]]:
        out: dict[tuple[str, str, str], list[Op]] = defaultdict(list)
        for op in self.ops:
            if op.kind in REMOVES and op.msgid:
                out[(op.account, op.mailbox, op.msgid)].append(op)
        return out

    def messages(self) -> None:
        creators, removers = self._creators(), self._removers()
        counts: dict[tuple[str, str, str], int] = defaultdict(int)
        uids: dict[tuple[str, str, str], set[int]] = defaultdict(set)
        for account, boxes in self.final.messages.items():
            for box, seen in boxes.items():
                for uid, msgid, _flags in seen:
                    counts[(account, box, msgid)] += 1
                    uids[(account, box, msgid)].add(uid)
        for key in set(creators) | set(counts):
            c = counts.get(key, 0)
            made = creators.get(key, [])
            gone = removers.get(key, [])
            where = f"{key[0]}/{key[1]} {key[2]}"
            ev = [describe(o) for o in made + gone] + self._delivery_logs(made)
            if c > 1:
                self.add("duplicate", f"{where} present {c} times at the end", *ev)
            if not made:
                if c:
                    self.add("unexplained", f"{where} present but no operation created it")
                continue
            outcomes = {o.outcome for o in made}
            removed_ok = any(o.outcome == OK for o in gone)
            removal_tried = any(o.outcome in (OK, UNKNOWN) for o in gone)
            if removed_ok and c:
                self._removed_but_seen(where, gone, uids[key], "present at the end", ev)
            elif OK in outcomes and not removal_tried and c == 0:
                self.add("lost", f"{where} acknowledged but absent at the end", *ev)
            elif outcomes == {REFUSED} and c:
                self.add("refused-took-effect", f"{where} refused but present at the end", *ev)

    def _delivery_logs(self, ops: list[Op]) -> list[str]:
        """The members' log lines about the SMTP transactions of ``ops`` (the
        session id in "Message accepted as ID.n")."""
        out: list[str] = []
        for op in ops:
            m = _ACCEPTED.search(op.reply) if op.kind == "deliver" else None
            if not m:
                continue
            for member, lines in sorted(self.final.logs.items()):
                out += [f"{member}: {line[:300]}" for line in lines if m.group(1) in line][:10]
        return out

    def observations(self) -> None:
        creators, removers = self._creators(), self._removers()
        # (account, mailbox) -> time-ordered observations: (start, end, uidvalidity, seen, label)
        obs: dict[tuple[str, str], list[tuple[float, float, int, list[list[Any]], str]]] = defaultdict(list)
        for op in self.ops:
            if op.outcome != OK:
                continue
            if op.kind == "fetch":
                obs[(op.account, op.mailbox)].append(
                    (op.start, op.end, int(op.data.get("uidvalidity", 0)), op.data.get("observed", []),
                     describe(op)))
            elif op.kind == "pop3":
                for msgid in op.data.get("observed", []):
                    self._seen_check(creators, removers, op.account, "INBOX", msgid, op.start,
                                     describe(op))
        for account, boxes in self.final.messages.items():
            for box, seen in boxes.items():
                uv = self.final.uidvalidity.get(account, {}).get(box, 0)
                obs[(account, box)].append((self.final.time, self.final.time, uv, seen, "final state"))
        for (account, box), series in obs.items():
            self._uid_rules(account, box, series)
            for start, _end, _uv, seen, label in series:
                ids = [s[1] for s in seen]
                for msgid in {i for i in ids if ids.count(i) > 1}:
                    self.add("duplicate", f"{account}/{box} {msgid} seen {ids.count(msgid)} times "
                             "in one answer", label)
                if label == "final state":
                    continue  # judged by messages()
                for msgid in set(ids):
                    self._seen_check(creators, removers, account, box, msgid, start, label,
                                     {s[0] for s in seen if s[1] == msgid})
        appended: dict[tuple[str, str, int], list[Op]] = defaultdict(list)
        for op in self.ops:
            if op.kind == "append" and op.outcome == OK and "uid" in op.data:
                appended[(op.account, op.mailbox, int(op.data["uidvalidity"]))].append(op)
        for (account, box, _uv), ops in appended.items():
            for a, b in itertools.pairwise(ops):
                if a.end < b.start and int(b.data["uid"]) <= int(a.data["uid"]):
                    self.add("uid", f"{account}/{box} APPENDUID did not ascend", describe(a), describe(b))

    def _seen_check(self, creators: dict[tuple[str, str, str], list[Op]],
                    removers: dict[tuple[str, str, str], list[Op]], account: str, box: str,
                    msgid: str, at: float, label: str, uids: set[int] | None = None) -> None:
        key = (account, box, msgid)
        uids = uids or set()
        made = creators.get(key, [])
        if not made:
            self.add("unexplained", f"{account}/{box} {msgid} seen but no operation created it", label)
            return
        if {o.outcome for o in made} == {REFUSED}:
            self.add("refused-took-effect", f"{account}/{box} {msgid} refused but seen", label,
                     *(describe(o) for o in made))
        gone = [o for o in removers.get(key, []) if o.outcome == OK and o.end < at]
        if gone:
            self._removed_but_seen(f"{account}/{box} {msgid}", gone, uids, "seen",
                                   [label, *(describe(o) for o in gone)])

    def _removed_but_seen(self, where: str, gone: list[Op], uids: set[int], how: str,
                          evidence: list[str]) -> None:
        """A message seen after an acknowledged EXPUNGE or MOVE: the removed
        copy itself came back, unless the UIDs show another copy of it (a
        duplicate) that nobody removed."""
        done = [o for o in gone if o.outcome == OK]
        removed = {int(o.data["uid"]) for o in done if "uid" in o.data}
        kinds = "/".join(sorted({o.kind for o in done}))
        if len(removed) == len(done) and uids and not uids & removed:
            self.add("duplicate", f"{where}: another copy (UID {', '.join(map(str, sorted(uids)))}) "
                     f"{how} after the acknowledged {kinds} of UID "
                     f"{', '.join(str(u) for u in sorted(removed))}", *evidence)
        else:
            self.add("came-back", f"{where} {how} after an acknowledged {kinds}", *evidence)

    def _uid_rules(self, account: str, box: str,
                   series: list[tuple[float, float, int, list[list[Any]], str]]) -> None:
        where = f"{account}/{box}"
        series = sorted(series, key=lambda s: s[0])
        uid_of: dict[tuple[int, str], int] = {}
        msg_of: dict[tuple[int, int], str] = {}
        validities: list[tuple[int, str]] = []
        earlier: list[tuple[float, int, set[str], str]] = []  # (end, max uid, msgids, label)
        ever: set[str] = set()
        for start, end, uv, seen, label in series:
            if uv and (not validities or validities[-1][0] != uv):
                if validities:
                    self.add("uid", f"{where} UIDVALIDITY changed {validities[-1][0]} -> {uv}",
                             validities[-1][1], label)
                validities.append((uv, label))
            uids = [s[0] for s in seen]
            if any(b <= a for a, b in itertools.pairwise(uids)):
                self.add("uid", f"{where} UIDs do not strictly ascend in one answer: {uids[:50]}", label)
            ids = [s[1] for s in seen]
            for uid, msgid, _flags in seen:
                prev = uid_of.setdefault((uv, msgid), uid)
                if prev != uid and ids.count(msgid) == 1:  # (a duplicate is reported as such)
                    self.add("uid", f"{where} {msgid} changed UID {prev} -> {uid}", label)
                other = msg_of.setdefault((uv, uid), msgid)
                if other != msgid:
                    self.add("uid", f"{where} UID {uid} reused: {other} then {msgid}", label)
            for uid, msgid, _flags in seen:
                if msgid in ever:
                    continue
                ever.add(msgid)
                for e_end, e_max, e_ids, e_label in earlier:
                    if e_end < start and msgid not in e_ids and uid <= e_max:
                        self.add("uid", f"{where} {msgid} first seen with UID {uid} <= {e_max}, "
                                 "the highest UID an earlier answer showed", e_label, label)
                        break
            earlier.append((end, max(uids, default=0), {s[1] for s in seen}, label))

    # -- flags -------------------------------------------------------------------
    def flags(self) -> None:
        stores: dict[tuple[str, str, str], list[Op]] = defaultdict(list)
        for op in self.ops:
            if op.kind == "store" or (op.kind == "append" and op.outcome != REFUSED):
                stores[(op.account, op.mailbox, op.msgid)].append(op)
        for account, boxes in self.final.messages.items():
            for box, seen in boxes.items():
                ids = [s[1] for s in seen]
                for _uid, msgid, flags in seen:
                    history = stores.get((account, box, msgid))
                    if not history or ids.count(msgid) > 1:  # a duplicate is reported as such
                        continue
                    acked = [o for o in history if o.outcome == OK]
                    if not acked:
                        continue
                    last = acked[-1]
                    later = [o for o in history if o.start > last.start and o.outcome == UNKNOWN]
                    if later:
                        continue
                    have = sorted(set(flags) & CHAOS_FLAGS)
                    want = sorted(last.data.get("flags", []))
                    unknown = [sorted(o.data.get("flags", [])) for o in history if o.outcome == UNKNOWN]
                    if have != want and have not in unknown:
                        self.add("flags", f"{account}/{box} {msgid} has {have}, last acknowledged "
                                 f"STORE set {want}", *(describe(o) for o in history[-5:]))

    # -- single service image ----------------------------------------------------
    def single_image(self) -> None:
        for what, table in (("mailboxes", self.final.mailboxes), ("STATUS", self.final.status),
                            ("settings", self.final.realnames)):
            members = sorted(table)
            for a, b in itertools.pairwise(members):
                for account in sorted(set(table[a]) | set(table[b])):
                    va, vb = table[a].get(account), table[b].get(account)
                    if va != vb:
                        self.add("single-image", f"{account}: {what} differ between {a} and {b}",
                                 f"{a}: {va}", f"{b}: {vb}")
        members = sorted(self.final.accounts)
        for a, b in itertools.pairwise(members):
            if self.final.accounts[a] != self.final.accounts[b]:
                self.add("single-image", f"accounts differ between {a} and {b}",
                         f"{a}: {self.final.accounts[a]}", f"{b}: {self.final.accounts[b]}")

    # -- administration ------------------------------------------------------------
    def admin(self) -> None:
        state: dict[str, str] = {}  # name -> "present" / "absent" / "unsure"
        evidence: dict[str, list[str]] = defaultdict(list)

        def put(name: str, value: str, op: Op) -> None:
            state[name] = value
            evidence[name].append(describe(op))

        for op in self.ops:
            name = op.account.partition("@")[0]
            new = str(op.data.get("new", "")).partition("@")[0]
            if op.kind == "account-create" and op.outcome != REFUSED:
                put(name, "present" if op.outcome == OK else "unsure", op)
            elif op.kind == "account-create":
                state.setdefault(name, "absent")
                evidence[name].append(describe(op))
            elif op.kind == "account-rename" and op.outcome != REFUSED:
                sure = op.outcome == OK
                put(name, "absent" if sure else "unsure", op)
                put(new, "present" if sure else "unsure", op)
            elif op.kind == "account-delete" and op.outcome != REFUSED:
                put(name, "absent" if op.outcome == OK else "unsure", op)
        for member, names in self.final.accounts.items():
            have = set(names)
            for name, s in state.items():
                if s == "present" and name not in have:
                    self.add("admin", f"account {name} missing on {member}", *evidence[name])
                elif s == "absent" and name in have:
                    self.add("admin", f"account {name} exists on {member}", *evidence[name])
        settings: dict[str, list[Op]] = defaultdict(list)
        for op in self.ops:
            if op.kind == "setting":
                settings[op.account].append(op)
        for account, ops in settings.items():
            acked = [o for o in ops if o.outcome == OK]
            if not acked or any(o.start > acked[-1].start and o.outcome == UNKNOWN for o in ops):
                continue
            want = acked[-1].data.get("value")
            unknown = {o.data.get("value") for o in ops if o.outcome == UNKNOWN}
            for member, real in self.final.realnames.items():
                got = real.get(account)
                if got != want and got not in unknown:
                    self.add("admin", f"{account} RealName on {member} is {got!r}, last "
                             f"acknowledged change set {want!r}", *(describe(o) for o in ops[-3:]))

    # -- storage, logs, answers ------------------------------------------------------
    def writers(self) -> None:
        for account, boxes in (self.final.writer_epochs or {}).items():
            for box, seq in boxes.items():
                if seq != sorted(seq):
                    self.add("double-writer", f"{account}/{box}: writer epochs {seq}")

    def faulted(self, member: str, t: float) -> bool:
        """Whether ``member`` was hit by a fault around ``t`` (a time from its
        own log: while its clock was stepped by a clock-step, its log lines
        carry the stepped time, so that window counts shifted as well)."""
        return any(member in f.members and f.triggered
                   and any(f.start - 1.0 + shift <= t <= (f.healed or f.start) + LEASE_GRACE + shift
                           for shift in {0.0, f.offset})
                   for f in self.faults)

    def logs(self) -> None:
        for member, lines in self.final.logs.items():
            for line in lines:
                m = _LOG_TIME.match(line)
                if not m:
                    continue
                level = m.group(2)
                if level in ("ERROR", "CRITICAL"):
                    self.add("log-error", f"{member} logged {level}", line[:400])
                if "lease lost" in line:
                    t = log_time(m.group(1))
                    if not self.faulted(member, t):
                        self.add("lease-lost", f"{member} lost its lease while not faulted",
                                 line[:400], *self._faults_near(t))

    def _faults_near(self, t: float) -> list[str]:
        return [f"fault {f.id} {f.kind} {f.members} at {f.start:.3f} healed {f.healed:.3f}"
                f"{' (controller)' if f.controller else ''}"
                for f in self.faults if f.start - 10 <= t <= (f.healed or f.start) + 30]

    def serverbugs(self) -> None:
        for op in self.ops:
            if "[SERVERBUG]" in op.reply or (op.data.get("via") == "api" and op.reply.startswith("500")):
                self.add("serverbug", f"{op.kind} answered a server error", describe(op))


def log_time(stamp: str) -> float:
    """A log line's ``asctime`` (local time, milliseconds) as epoch seconds."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


# -- unavailability ----------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def unavailability(ops: list[Op], faults: list[Fault]) -> dict[str, Any]:
    """For every triggered fault and every account it affected: the time from
    the fault to the first acknowledgement of an operation on that account
    that started after it (the earliest end among them: an operation that
    started early but waited long, say on a connection to a cut-off member,
    does not hide that others were served meanwhile).  Pairs with no such
    operation are counted as ``censored``."""
    by_account: dict[str, list[Op]] = defaultdict(list)
    tried: dict[str, list[Op]] = defaultdict(list)  # every operation, whatever its outcome
    for op in sorted(ops, key=lambda o: o.start):
        if op.kind in HELD_KINDS:
            tried[op.account].append(op)
        if op.kind in AVAILABILITY_KINDS and op.outcome == OK:
            by_account[op.account].append(op)
    values: list[float] = []
    free: list[float] = []  # pairs whose client was not held by a faulted process
    by_kind: dict[str, list[float]] = defaultdict(list)
    per_fault: list[dict[str, Any]] = []
    censored = 0
    for f in faults:
        if not f.triggered:
            continue
        gaps: dict[str, float] = {}
        held: list[str] = []
        for account in f.affected:
            t0 = max(f.start, f.since.get(account, f.start))
            first = min((o for o in by_account.get(account, []) if o.start >= t0),
                        key=lambda o: o.end, default=None)
            if first is None:
                censored += 1
                continue
            gaps[account] = round(first.end - t0, 3)
            if _held_by_faulted(tried.get(account, []), f, first, t0):
                held.append(account)
            else:
                free.append(gaps[account])
        values += gaps.values()
        by_kind[f.kind + (" (controller)" if f.controller else "")] += gaps.values()
        per_fault.append({"fault": f.id, "kind": f.kind, "members": f.members,
                          "controller": f.controller, "max": max(gaps.values(), default=0.0),
                          "accounts": gaps, "held": held})
    return {**_spread(values), "censored": censored,
            "not_held": _spread(free), "held": len(values) - len(free),
            "by_kind": {k: _spread(v) for k, v in sorted(by_kind.items())},
            "per_fault": per_fault}


HELD_AFTER = 1.0  # a client still waiting this long after the fault on a faulted member was held by it
HELD_KINDS = (*AVAILABILITY_KINDS, "login")  # what an account's mail clients do (not the admin client)


def _held_by_faulted(tried: list[Op], f: Fault, first: Op, t0: float) -> bool:
    """Was the account's client, up to its first acknowledged operation after
    the fault (which reached the account at ``t0``), waiting on one of the
    faulted processes themselves (a stopped or cut-off member cannot answer,
    whatever the rest of the cluster does)?  Any operation of the account's
    clients counts, a login too, and the first acknowledged one itself when a
    faulted member answered it: sent there before the fault healed and still
    unanswered ``HELD_AFTER`` after the fault."""
    healed = f.healed or math.inf
    return any(o.member in f.members and o.start < healed and o.start <= first.start
               and o.end > t0 + HELD_AFTER for o in tried)


def _spread(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50": round(percentile(values, 50), 3),
            "p99": round(percentile(values, 99), 3), "max": round(max(values, default=0.0), 3)}
