"""The history of a fault campaign: every client operation and every fault.

An operation is recorded once it has finished, with its outcome:

``ok``       the server acknowledged it (SMTP 250, IMAP OK, CLI 200, HTTP 2xx);
``refused``  it certainly did not take effect: a permanent refusal, or the
             request was never sent (connect or login failed first);
``unknown``  anything else: a timeout, a dropped connection, a temporary
             failure (SMTP 4xx after DATA, ``NO [UNAVAILABLE]``, CLI 530,
             HTTP 5xx).  A temporary failure may follow a server-side timeout
             after the change was made, so it proves nothing either way.

Times are wall-clock seconds (``time.time()``) taken in the one campaign
process, so that they compare with each other and with the members' log
lines; the campaign never steps its own clock (a clock-step fault steps one
member's, and records by how much, so that its log lines can be placed).  The recorder is shared by all
worker threads (one lock) and streams every record as one JSON line, so
that a campaign that dies still leaves its history behind.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

OK, REFUSED, UNKNOWN = "ok", "refused", "unknown"
OUTCOMES = (OK, REFUSED, UNKNOWN)


@dataclass(slots=True)
class Op:
    """One client operation.  ``msgid`` names the message it is about (a
    delivery, an APPEND, or the message a STORE/COPY/MOVE/EXPUNGE targets);
    ``observed`` is what a FETCH saw: ``[uid, msgid, flags]`` per message."""

    id: int
    kind: str
    worker: str
    member: str
    account: str = ""
    mailbox: str = ""
    target: str = ""
    msgid: str = ""
    start: float = 0.0
    end: float = 0.0
    outcome: str = UNKNOWN
    reply: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Fault:
    """One injected fault: ``members`` as they were hit, ``affected`` the
    accounts whose availability it is measured on, ``healed`` when every
    member it hit runs again (restarted, resumed, joined, its clock and
    storage back to normal).  ``triggered`` is false for a fault that did
    not happen (a storage point never reached, a kind not available here)."""

    id: int
    kind: str
    members: list[str]
    start: float
    healed: float = 0.0
    triggered: bool = True
    controller: bool = False
    affected: list[str] = field(default_factory=list)
    note: str = ""
    available: bool = True  # False: this host cannot inject the kind (see note)
    offset: float = 0.0  # clock-step: seconds the member's wall clock (and its log) was off
    # account -> when the fault reached it, where later than ``start``: the
    # second kill of ``kill-two`` reaches the accounts only it affects then
    since: dict[str, float] = field(default_factory=dict)


class History:
    """Thread-safe recorder of operations and faults (optionally streamed to
    ``path`` as JSON lines: ``{"op": {...}}`` or ``{"fault": {...}}``)."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._next = 1
        self.ops: list[Op] = []
        self.faults: list[Fault] = []
        self._out: TextIO | None = open(path, "w", encoding="utf-8") if path else None

    def begin(self, kind: str, worker: str, member: str, **fields: Any) -> Op:
        with self._lock:
            op_id = self._next
            self._next += 1
        return Op(op_id, kind, worker, member, start=time.time(), **fields)

    def finish(self, op: Op, outcome: str, reply: str = "", **data: Any) -> Op:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        op.end = time.time()
        op.outcome = outcome
        op.reply = reply[:300]
        op.data.update(data)
        with self._lock:
            self.ops.append(op)
            self._write({"op": asdict(op)})
        return op

    def fault(self, kind: str, members: list[str], **fields: Any) -> Fault:
        with self._lock:
            f = Fault(self._next, kind, list(members), time.time(), **fields)
            self._next += 1
            self.faults.append(f)
        return f

    def healed(self, f: Fault) -> None:
        f.healed = time.time()
        with self._lock:
            self._write({"fault": asdict(f)})

    def _write(self, record: dict[str, Any]) -> None:
        if self._out is not None:
            self._out.write(json.dumps(record, sort_keys=True) + "\n")
            self._out.flush()

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None

    def snapshot(self) -> tuple[list[Op], list[Fault]]:
        with self._lock:
            return list(self.ops), list(self.faults)


def load(path: Path) -> tuple[list[Op], list[Fault]]:
    """Read a history written by :class:`History` (to check it again)."""
    ops: list[Op] = []
    faults: list[Fault] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "op" in rec:
            ops.append(Op(**rec["op"]))
        elif "fault" in rec:
            faults.append(Fault(**rec["fault"]))
    return ops, faults
