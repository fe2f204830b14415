"""The owner's half of a relay challenge: one nonce per relay connection.

A member that relays a client session to the account's owner first asks
the owner, on the relay connection and before its ticket, for a challenge
(``XDYNAMAIL-CHALLENGE``).  The owner answers with a fresh random nonce and
keeps it in that session; the relaying member seals the nonce into the
ticket (:mod:`dynamail.cluster.relay`).  The ticket is therefore good on the
connection that issued the nonce and nowhere else, and only once — no
wall-clock time and no replay memory shared between connections are
involved, so members whose wall clocks differ by any amount still relay to
each other.

Invariants, per connection (one :class:`RelayChallenge` per session):

* at most one nonce is issued; a second request is refused;
* the first ``XDYNAMAIL-RELAY`` after it is checked against the nonce and
  spends it, whatever the verdict; every later ``XDYNAMAIL-RELAY`` on the
  connection is refused before any ticket is looked at — no second guess,
  and no fall-back to the time-stamped ticket of earlier releases;
* a connection that never asked for a challenge is an older relaying
  member: its ``XDYNAMAIL-RELAY`` carries the time-stamped ticket, checked
  as before (kept for a rolling upgrade, see CHANGELOG.md).

Sans-IO, and used by the IMAP, POP3 and ManageSieve cores alike.
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets
from collections.abc import Callable

from dynamail.cluster.limits import RELAY_NONCE_BYTES, RELAY_NONCE_MAX_BYTES, RELAY_NONCE_MIN_BYTES

MAX_NONCE_TEXT = (RELAY_NONCE_MAX_BYTES * 4 + 2) // 3  # base64url without padding

#: no challenge was issued on the connection: the ticket is of the old,
#: time-stamped form
NO_CHALLENGE = b""


class ChallengeRefused(Exception):
    """The request is refused; ``str()`` is the text of the refusal."""


class Phase(enum.Enum):
    UNASKED = "unasked"
    ISSUED = "issued"
    SPENT = "spent"


def encode_nonce(nonce: bytes) -> str:
    """The nonce as sent on the wire: base64url without padding (no
    character that needs quoting in IMAP, POP3 or ManageSieve)."""
    return base64.urlsafe_b64encode(nonce).rstrip(b"=").decode("ascii")


def decode_nonce(text: str | bytes) -> bytes | None:
    """A nonce an owner sent, or None when it is not one (bad base64, fewer
    than 96 bits, too long)."""
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            return None
    else:
        raw = text
    if not raw or len(raw) > MAX_NONCE_TEXT or len(raw) % 4 == 1:
        return None
    if raw.strip(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        return None
    try:
        nonce = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        return None
    if not RELAY_NONCE_MIN_BYTES <= len(nonce) <= RELAY_NONCE_MAX_BYTES:
        return None
    return nonce


class RelayChallenge:
    """The challenge state of one connection at the owner."""

    def __init__(self, token: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._token = token
        self.phase = Phase.UNASKED
        self._nonce = NO_CHALLENGE

    def issue(self) -> str:
        """A new nonce for this connection, as its wire text; raises
        :class:`ChallengeRefused` when one was issued already."""
        if self.phase is not Phase.UNASKED:
            raise ChallengeRefused("Challenge already issued on this connection")
        self._nonce = self._token(RELAY_NONCE_BYTES)  # the OS's CSPRNG
        self.phase = Phase.ISSUED
        return encode_nonce(self._nonce)

    def take(self) -> bytes:
        """The nonce a relay ticket presented now must carry, spending it:
        :data:`NO_CHALLENGE` when none was issued (the old ticket form).
        Raises :class:`ChallengeRefused` once the nonce has been spent."""
        if self.phase is Phase.SPENT:
            raise ChallengeRefused("Relay challenge already used on this connection")
        if self.phase is Phase.UNASKED:
            return NO_CHALLENGE
        nonce, self._nonce = self._nonce, NO_CHALLENGE
        self.phase = Phase.SPENT
        return nonce
