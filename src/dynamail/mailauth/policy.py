"""What a DMARC failure (and a content filter's verdict) does to a message.

The recipient's domain decides, through two domain settings:

* ``DMARCRejectAction`` — for mail failing DMARC whose domain publishes
  ``p=reject``: ``Reject`` (default; ``550 5.7.1`` at the end of DATA),
  ``Junk`` (deliver into the recipient's Junk mailbox) or ``Mark`` (deliver
  normally; the ``Authentication-Results`` field says what failed);
* ``DMARCQuarantineAction`` — the same for ``p=quarantine`` (default ``Junk``).

One SMTP transaction gets one reply: the message is refused only when every
recipient's domain says ``Reject`` (and nothing else, such as a forwarder,
takes it); otherwise the recipients whose domain says ``Reject`` or
``Junk`` get it in Junk.  Sans-IO.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamail.mailauth.dmarc import DmarcResult

__all__ = ["ACTIONS", "Decision", "action_for", "decide"]

REJECT_SETTING = "DMARCRejectAction"
QUARANTINE_SETTING = "DMARCQuarantineAction"
ACTIONS = ("Reject", "Junk", "Mark")
DEFAULTS = {REJECT_SETTING: "Reject", QUARANTINE_SETTING: "Junk"}


@dataclass(frozen=True)
class Decision:
    reject: str | None = None  # the reason, when the whole message is refused
    junk: frozenset[Hashable] = field(default_factory=frozenset)  # recipients filed into Junk


def action_for(result: DmarcResult, settings: Mapping[str, Any]) -> str:
    """The action a recipient's domain settings give a DMARC result."""
    if result.result != "fail" or result.policy not in ("reject", "quarantine"):
        return "Mark"
    key = REJECT_SETTING if result.policy == "reject" else QUARANTINE_SETTING
    value = str(settings.get(key) or DEFAULTS[key]).strip().capitalize()
    return value if value in ACTIONS else DEFAULTS[key]


def decide(actions: Mapping[Hashable, str], *, others: bool, reason: str) -> Decision:
    """``actions``: the action for each local recipient; ``others``: the
    message also goes elsewhere (forwarders), so it cannot be refused."""
    if actions and not others and all(a == "Reject" for a in actions.values()):
        return Decision(reject=reason)
    return Decision(junk=frozenset(r for r, a in actions.items() if a in ("Reject", "Junk")))
