"""The checker on hand-written histories: every rule fires on a history that
breaks it and stays quiet on one that keeps it."""

from __future__ import annotations

import time
from typing import Any

from dynamail.chaos.checker import Checker, Final, log_time, percentile, unavailability
from dynamail.chaos.history import OK, REFUSED, UNKNOWN, Fault, History, Op, load

A = "u1@chaos.test"
UV = 7


class Script:
    """Builds a history with strictly increasing times."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.ops: list[Op] = []
        self.faults: list[Fault] = []

    def op(self, kind: str, outcome: str = OK, mailbox: str = "INBOX", msgid: str = "", **kw: Any) -> Op:
        self.t += 1
        data = kw.pop("data", {})
        op = Op(len(self.ops) + 1, kind, "w", "b1", account=kw.pop("account", A), mailbox=mailbox,
                msgid=msgid, start=self.t, end=self.t + 0.5, outcome=outcome, data=data, **kw)
        self.t += 1
        self.ops.append(op)
        return op

    def fetch(self, mailbox: str, seen: list[list[Any]], uv: int = UV) -> Op:
        return self.op("fetch", mailbox=mailbox, data={"uidvalidity": uv, "observed": seen})

    def final(self, messages: dict[str, list[list[Any]]], **kw: Any) -> Final:
        boxes = {"INBOX": [], "Work": [], "Archive": [], **messages}
        return Final(time=self.t + 10, messages={A: boxes}, uidvalidity={A: dict.fromkeys(boxes, UV)},
                     **kw)

    def check(self, final: Final) -> set[str]:
        return {v.kind for v in Checker(self.ops, self.faults, final).check()}


def test_a_clean_history_has_no_violation() -> None:
    s = Script()
    s.op("deliver", msgid="<d1>")
    s.op("append", mailbox="Work", msgid="<a1>", data={"flags": ["$Chaos1"], "uid": 1, "uidvalidity": UV})
    s.fetch("INBOX", [[1, "<d1>", []]])
    s.op("store", msgid="<d1>", data={"flags": ["\\Flagged"], "uid": 1})
    s.op("copy", msgid="<d1>", target="Work")
    s.op("deliver", REFUSED, msgid="<d2>")
    s.op("deliver", UNKNOWN, msgid="<d3>")
    final = s.final({"INBOX": [[1, "<d1>", ["\\Flagged", "\\Seen"]], [2, "<d3>", []]],
                     "Work": [[1, "<a1>", ["$Chaos1"]], [2, "<d1>", ["\\Flagged"]]]})
    assert s.check(final) == set()


def test_lost_and_duplicated_acknowledged_messages() -> None:
    s = Script()
    s.op("deliver", msgid="<d1>")
    s.op("deliver", msgid="<d2>")
    assert s.check(s.final({"INBOX": [[1, "<d1>", []]]})) == {"lost"}
    # (a duplicate also shows as one message with two UIDs)
    assert "duplicate" in s.check(s.final({"INBOX": [[1, "<d1>", []], [2, "<d2>", []], [3, "<d2>", []]]}))


def test_a_duplicate_delivery_carries_the_members_log_lines_of_its_transaction() -> None:
    s = Script()
    s.op("deliver", msgid="<d1>", reply="250 2.0.0 Message accepted as abc123def456-7")
    logs = {"b2": ["2026-12-03 20:00:08,987 INFO dynamail.smtp: abc123def456 1 local copies queued",
                   "2026-12-03 20:00:09,000 INFO dynamail.smtp: other"]}
    final = s.final({"INBOX": [[1, "<d1>", []], [2, "<d1>", []]]}, logs=logs)
    dup = next(v for v in Checker(s.ops, s.faults, final).check() if v.kind == "duplicate")
    assert any("b2:" in e and "queued" in e for e in dup.evidence)
    assert not any("other" in e for e in dup.evidence)


def test_an_unknown_outcome_may_or_may_not_have_taken_effect_but_never_twice() -> None:
    s = Script()
    s.op("append", UNKNOWN, msgid="<a1>")
    assert s.check(s.final({})) == set()
    assert s.check(s.final({"INBOX": [[1, "<a1>", []]]})) == set()
    assert "duplicate" in s.check(s.final({"INBOX": [[1, "<a1>", []], [2, "<a1>", []]]}))


def test_refused_creation_must_not_take_effect() -> None:
    s = Script()
    s.op("deliver", REFUSED, msgid="<d1>", reply="not sent")
    assert s.check(s.final({"INBOX": [[1, "<d1>", []]]})) == {"refused-took-effect"}
    s.fetch("INBOX", [[1, "<d1>", []]])  # seen in the middle of the run
    assert "refused-took-effect" in s.check(s.final({}))


def test_expunged_or_moved_message_must_not_come_back() -> None:
    s = Script()
    s.op("deliver", msgid="<d1>")
    s.op("expunge", msgid="<d1>")
    assert s.check(s.final({})) == set()
    assert s.check(s.final({"INBOX": [[1, "<d1>", []]]})) == {"came-back"}
    s.fetch("INBOX", [[1, "<d1>", []]])
    assert s.check(s.final({})) == {"came-back"}
    m = Script()
    m.op("deliver", msgid="<d1>")
    m.op("move", msgid="<d1>", target="Work")
    assert m.check(m.final({"Work": [[1, "<d1>", []]]})) == set()
    assert m.check(m.final({"Work": [[1, "<d1>", []]], "INBOX": [[1, "<d1>", []]]})) == {"came-back"}


def test_the_second_copy_of_a_duplicate_is_no_message_coming_back() -> None:
    s = Script()
    s.op("deliver", msgid="<d1>")
    s.fetch("INBOX", [[79, "<d1>", []], [81, "<d1>", []]])
    s.op("expunge", msgid="<d1>", data={"uid": 81})
    kinds = s.check(s.final({"INBOX": [[79, "<d1>", []]]}))
    assert kinds == {"duplicate"}
    assert "came-back" in s.check(s.final({"INBOX": [[81, "<d1>", []]]}))


def test_unexplained_message() -> None:
    s = Script()
    assert s.check(s.final({"INBOX": [[1, "<nobody>", []]]})) == {"unexplained"}


def test_uid_rules() -> None:
    s = Script()
    s.op("deliver", msgid="<d1>")
    s.op("deliver", msgid="<d2>")
    s.op("deliver", msgid="<d3>")
    s.fetch("INBOX", [[1, "<d1>", []], [5, "<d2>", []]])
    # d3 appears later with a UID below one shown earlier
    assert s.check(s.final({"INBOX": [[1, "<d1>", []], [3, "<d3>", []], [5, "<d2>", []]]})) == {"uid"}
    r = Script()
    r.op("deliver", msgid="<d1>")
    r.op("deliver", msgid="<d2>")
    r.op("expunge", msgid="<d1>")
    r.fetch("INBOX", [[1, "<d1>", []]])
    # UID 1 reused for another message, and not ascending within one answer
    kinds = r.check(r.final({"INBOX": [[2, "<d2>", []], [1, "<d1>", []]]}))
    assert "uid" in kinds
    v = Script()
    v.op("deliver", msgid="<d1>")
    v.fetch("INBOX", [[1, "<d1>", []]], uv=3)
    assert v.check(v.final({"INBOX": [[1, "<d1>", []]]})) == {"uid"}  # UIDVALIDITY 3 -> 7


def test_appenduid_must_ascend() -> None:
    s = Script()
    s.op("append", msgid="<a1>", data={"uid": 4, "uidvalidity": UV, "flags": []})
    s.op("append", msgid="<a2>", data={"uid": 3, "uidvalidity": UV, "flags": []})
    assert "uid" in s.check(s.final({"INBOX": [[3, "<a2>", []], [4, "<a1>", []]]}))


def test_flags_follow_the_last_acknowledged_store_unless_an_unknown_store_followed() -> None:
    s = Script()
    s.op("deliver", msgid="<d1>")
    s.op("store", msgid="<d1>", data={"flags": ["$Chaos1"]})
    s.op("store", msgid="<d1>", data={"flags": ["\\Flagged"]})
    assert s.check(s.final({"INBOX": [[1, "<d1>", ["\\Flagged", "\\Seen"]]]})) == set()
    assert s.check(s.final({"INBOX": [[1, "<d1>", ["$Chaos1"]]]})) == {"flags"}
    s.op("store", UNKNOWN, msgid="<d1>", data={"flags": []})
    assert s.check(s.final({"INBOX": [[1, "<d1>", ["$Chaos1"]]]})) == set()


def test_single_image_and_admin_state() -> None:
    s = Script()
    s.op("account-create", account="s1@chaos.test")
    s.op("account-create", REFUSED, account="s2@chaos.test")
    s.op("account-create", account="s3@chaos.test")
    s.op("account-rename", account="s3@chaos.test", data={"new": "s3r@chaos.test"})
    s.op("setting", account=A, data={"value": "Chaos 1"})
    good = {"b1": ["s1", "s3r", "u1"], "b2": ["s1", "s3r", "u1"]}
    names = {"b1": {A: "Chaos 1"}, "b2": {A: "Chaos 1"}}
    boxes = {"b1": {A: ["Archive", "INBOX", "Work"]}, "b2": {A: ["Archive", "INBOX", "Work"]}}
    assert s.check(s.final({}, accounts=good, realnames=names, mailboxes=boxes)) == set()
    bad = {"b1": ["s1", "s2", "s3", "u1"], "b2": ["s1", "s3r", "u1"]}
    assert s.check(s.final({}, accounts=bad, realnames=names, mailboxes=boxes)) == {"admin", "single-image"}
    other = {"b1": {A: "Chaos 1"}, "b2": {A: "old"}}
    assert s.check(s.final({}, accounts=good, realnames=other, mailboxes=boxes)) == {"admin", "single-image"}
    split = {"b1": {A: ["Archive", "INBOX", "Work"]}, "b2": {A: ["INBOX", "Work"]}}
    assert s.check(s.final({}, accounts=good, realnames=names, mailboxes=split)) == {"single-image"}


def test_double_writer_logs_and_serverbug() -> None:
    s = Script()
    assert s.check(s.final({}, writer_epochs={A: {"INBOX": [3, 5, 3]}})) == {"double-writer"}
    assert s.check(s.final({}, writer_epochs={A: {"INBOX": [3, 5]}})) == set()
    t0 = s.t
    stamp = time.strftime("%Y-%m-%d %H:%M:%S,000", time.localtime(t0))
    line = f"{stamp} WARNING dynamail.cluster: lease lost: closing 2 shared accounts"
    assert s.check(s.final({}, logs={"b2": [line]})) == {"lease-lost"}
    s.faults.append(Fault(1, "pause", ["b2"], start=s.t - 3, healed=s.t - 1))
    assert s.check(s.final({}, logs={"b2": [line]})) == set()
    err = f"{stamp} ERROR dynamail.imap: something broke"
    assert s.check(s.final({}, logs={"b1": [err]})) == {"log-error"}
    s.op("append", UNKNOWN, msgid="<a9>", reply="NO [SERVERBUG] Internal server error")
    assert s.check(s.final({})) == {"serverbug"}
    assert abs(log_time(stamp) - t0) < 1


def test_unavailability_is_fault_to_first_acknowledged_operation() -> None:
    s = Script()
    s.faults.append(Fault(1, "kill", ["b1"], start=s.t + 0.5, healed=s.t + 2, affected=[A, "u2@chaos.test"]))
    s.op("deliver", UNKNOWN, msgid="<d1>")
    s.op("deliver", msgid="<d2>")  # ends 3.0 s after the fault
    u = unavailability(s.ops, s.faults)
    assert u["count"] == 1 and u["censored"] == 1
    assert u["max"] == 3.0 and u["p99"] == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) in (2.0, 3.0)
    assert u["held"] == 0 and u["not_held"]["max"] == 3.0
    assert u["by_kind"] == {"kill": {"count": 1, "p50": 3.0, "p99": 3.0, "max": 3.0}}


def test_unavailability_ends_at_the_first_acknowledgement() -> None:
    """An operation that started soon after the fault but was answered late
    (its connection went to the cut-off member) does not stand for the
    account: another client was served earlier."""
    s = Script()
    t0 = s.t
    s.faults.append(Fault(1, "isolate", ["b1"], start=t0 + 0.5, healed=t0 + 5, affected=[A]))
    slow = s.op("deliver", msgid="<s1>")
    slow.member, slow.start, slow.end = "b1", t0 + 0.6, t0 + 7.5
    quick = s.op("append", msgid="<q1>")
    quick.member, quick.start, quick.end = "b2", t0 + 1.5, t0 + 2.5
    u = unavailability(s.ops, s.faults)
    assert u["max"] == 2.0 and u["per_fault"][0]["accounts"] == {A: 2.0}


def test_unavailability_of_a_second_kill_counts_from_that_kill() -> None:
    """``kill-two``: an account only the second kill reached (its owner was
    killed 1.5 s after the first member) is measured from the second kill;
    the first member's accounts from the first."""
    s = Script()
    t0 = s.t
    u2 = "u2@chaos.test"
    s.faults.append(Fault(1, "kill-two", ["b1", "b2"], start=t0 + 0.5, healed=t0 + 5,
                          affected=[A, u2], since={u2: t0 + 2.0}))
    a = s.op("append", msgid="<k1>")
    a.member, a.start, a.end = "b3", t0 + 1.0, t0 + 1.8
    early = s.op("append", msgid="<k2>", account=u2)  # before the second kill: not its evidence
    early.member, early.start, early.end = "b3", t0 + 1.0, t0 + 1.2
    b = s.op("append", msgid="<k3>", account=u2)
    b.member, b.start, b.end = "b3", t0 + 2.1, t0 + 3.0
    u = unavailability(s.ops, s.faults)
    assert u["per_fault"][0]["accounts"] == {A: 1.3, u2: 1.0}


def test_unavailability_tells_a_client_held_by_the_paused_member() -> None:
    """A client whose request went to the stopped member waits for it; the
    same fault measured on a client that went elsewhere is not 'held'."""
    s = Script()
    s.faults.append(Fault(1, "pause", ["b1"], start=s.t + 0.5, healed=s.t + 5, controller=True,
                          affected=[A, "u2@chaos.test"]))
    stuck = s.op("append", UNKNOWN, msgid="<p1>")  # through b1, which is stopped
    stuck.member, stuck.end = "b1", s.t + 4.5
    again = s.op("append", msgid="<p2>")
    again.member, again.start, again.end = "b2", s.t + 4.6, s.t + 4.8
    other = s.op("append", msgid="<p3>", account="u2@chaos.test")
    other.member, other.start, other.end = "b3", s.t + 0.7, s.t + 1.9
    u = unavailability(s.ops, s.faults)
    assert u["count"] == 2 and u["held"] == 1
    assert u["per_fault"][0]["held"] == [A]
    assert u["not_held"]["max"] == round(other.end - s.faults[0].start, 3)
    assert list(u["by_kind"]) == ["pause (controller)"]


def test_unavailability_tells_a_client_answered_late_by_the_cut_off_member_itself() -> None:
    """Every client of the account went to the isolated member (a delivery
    sent there during the fault, then a login): they were answered only
    after it was joined again.  The pair is 'held' even though the first
    acknowledgement came from that member; an operation sent there after
    the heal does not make a pair held."""
    s = Script()
    t0 = s.t
    u2 = "u2@chaos.test"
    s.faults.append(Fault(1, "isolate", ["b1"], start=t0 + 0.5, healed=t0 + 4, controller=True,
                          affected=[A, u2]))
    late = s.op("deliver", msgid="<i1>")  # sent to b1 while cut off, answered after the heal
    late.member, late.start, late.end = "b1", t0 + 0.7, t0 + 7.3
    login = s.op("login", account=A)
    login.member, login.start, login.end = "b1", t0 + 3.0, t0 + 6.9
    after = s.op("append", msgid="<i2>", account=u2)  # sent to b1 after the heal: the cluster's own time
    after.member, after.start, after.end = "b1", t0 + 4.5, t0 + 5.0
    u = unavailability(s.ops, s.faults)
    assert u["per_fault"][0]["accounts"] == {A: 6.8, u2: 4.5}
    assert u["per_fault"][0]["held"] == [A]
    assert u["not_held"]["max"] == 4.5


def test_history_streams_and_loads(tmp_path: Any) -> None:
    h = History(tmp_path / "h.jsonl")
    op = h.begin("deliver", "w", "b1", account=A, mailbox="INBOX", msgid="<x>")
    h.finish(op, OK, "250 ok")
    f = h.fault("kill", ["b2"], affected=[A])
    h.healed(f)
    h.close()
    ops, faults = load(tmp_path / "h.jsonl")
    assert [o.msgid for o in ops] == ["<x>"] and ops[0].outcome == OK
    assert faults[0].members == ["b2"] and faults[0].healed >= faults[0].start


def test_a_clock_stepped_member_may_lose_its_lease_at_its_own_stepped_time() -> None:
    s = Script()
    fault_start = s.t
    s.faults.append(Fault(1, "clock-step", ["b2"], start=fault_start, healed=fault_start + 5, offset=-300))
    stepped = time.strftime("%Y-%m-%d %H:%M:%S,000", time.localtime(fault_start + 2 - 300))
    line = f"{stepped} WARNING dynamail.cluster: lease lost: closing 1 shared accounts"
    assert s.check(s.final({}, logs={"b2": [line]})) == set()
    assert s.check(s.final({}, logs={"b1": [line]})) == {"lease-lost"}  # b1 was not stepped
