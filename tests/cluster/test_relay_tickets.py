from __future__ import annotations

import time

import pytest

from dynamail.accounts import AccountRef
from dynamail.cluster.challenge import ChallengeRefused, RelayChallenge, decode_nonce, encode_nonce
from dynamail.cluster.relay import TicketBook

REF = AccountRef("shared.test", "ann", True)


def test_ticket_round_trip_and_single_use() -> None:
    book = TicketBook(b"k" * 32)
    t = book.make(REF, "192.0.2.7", 51234)
    assert book.verify(t) == (REF, "192.0.2.7", 51234)
    assert book.verify(t) is None  # replay refused
    assert book.verify(book.make(REF, "192.0.2.7", 1)) is not None


def test_ticket_from_another_cluster_or_tampered_is_refused() -> None:
    mine, theirs = TicketBook(b"k" * 32), TicketBook(b"x" * 32)
    assert mine.verify(theirs.make(REF, "h", 1)) is None
    t = mine.make(REF, "h", 1)
    body, mac = t.split(".")
    assert mine.verify(body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac) is None
    for bad in ("", ".", "a.b.c", "x" * 5000, b"\xff\xfe", "!!!.???"):
        assert mine.verify(bad) is None


def test_ticket_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    book = TicketBook(b"k" * 32, validity=30.0)
    t = book.make(REF, "h", 1)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 31)
    assert book.verify(t) is None


# -- tickets bound to the owner's per-connection challenge (cluster/challenge.py) --


def _issued() -> tuple[RelayChallenge, bytes]:
    """An owner's connection that issued a challenge, and the nonce the
    relaying member read from it."""
    conn = RelayChallenge()
    nonce = decode_nonce(conn.issue())
    assert nonce is not None and len(nonce) * 8 >= 96
    return conn, nonce


def test_challenged_ticket_is_valid_on_its_connection_once() -> None:
    book = TicketBook(b"k" * 32)
    conn, nonce = _issued()
    t = book.make(REF, "192.0.2.7", 51234, nonce)
    assert book.verify(t, conn.take()) == (REF, "192.0.2.7", 51234)
    # the connection spent its nonce: a replay on it is refused before the ticket is read
    with pytest.raises(ChallengeRefused):
        conn.take()
    # and the ticket is worth nothing without that connection's nonce
    assert book.verify(t) is None


def test_challenged_ticket_replayed_on_another_connection_is_refused() -> None:
    book = TicketBook(b"k" * 32)
    _, mine = _issued()
    other, theirs = _issued()
    assert mine != theirs
    t = book.make(REF, "h", 1, mine)
    assert book.verify(t, other.take()) is None  # captured and presented on another connection
    assert book.verify(t, b"\0" * 16) is None


def test_challenged_ticket_tampered_or_from_another_cluster_is_refused() -> None:
    mine, theirs = TicketBook(b"k" * 32), TicketBook(b"x" * 32)
    _, nonce = _issued()
    assert mine.verify(theirs.make(REF, "h", 1, nonce), nonce) is None
    t = mine.make(REF, "h", 1, nonce)
    body, mac = t.split(".")
    assert mine.verify(body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac, nonce) is None
    assert mine.verify(body + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"), nonce) is None
    for bad in ("", ".", "a.b.c", "x" * 5000, b"\xff\xfe", "!!!.???", "%%%%.%%%%"):
        assert mine.verify(bad, nonce) is None


def test_old_and_new_forms_cannot_stand_in_for_each_other() -> None:
    book = TicketBook(b"k" * 32)
    _, nonce = _issued()
    # an old time-stamped ticket on a connection that asked for a challenge: no downgrade
    assert book.verify(book.make(REF, "h", 1), nonce) is None
    # a challenged ticket on a connection that asked for none
    assert book.verify(book.make(REF, "h", 1, nonce)) is None


def test_old_form_is_still_accepted_without_a_challenge() -> None:
    # an earlier release relays with the time-stamped ticket (rolling upgrade)
    book = TicketBook(b"k" * 32)
    conn = RelayChallenge()
    t = book.make(REF, "h", 7)
    assert book.verify(t, conn.take()) == (REF, "h", 7)
    assert book.verify(t, RelayChallenge().take()) is None  # still single use


def test_challenged_ticket_ignores_wall_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # the relaying member's clock is ten hours behind the owner's
    relaying, owner = TicketBook(b"k" * 32, validity=30.0), TicketBook(b"k" * 32, validity=30.0)
    conn, nonce = _issued()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 36000)
    t = relaying.make(REF, "h", 1, nonce)
    old = relaying.make(REF, "h", 1)
    monkeypatch.setattr(time, "time", real)
    assert owner.verify(old) is None  # the old form fails the wall-clock check
    assert owner.verify(t, conn.take()) == (REF, "h", 1)


def test_a_second_challenge_on_one_connection_is_refused() -> None:
    conn = RelayChallenge()
    conn.issue()
    with pytest.raises(ChallengeRefused):
        conn.issue()
    conn.take()
    with pytest.raises(ChallengeRefused):
        conn.issue()


def test_nonces_from_an_owner_are_checked() -> None:
    assert decode_nonce(encode_nonce(b"n" * 16)) == b"n" * 16
    for bad in ("", "a", "short", "x" * 200, "!!!!!!!!!!!!!!!!!!!!!!", "AAAA=AAAAAAAAAAAAAAAAA", "é" * 22,
                b"\xff" * 22, "A" * 21):
        assert decode_nonce(bad) is None, bad
    assert decode_nonce(encode_nonce(b"n" * 11)) is None  # fewer than 96 bits
