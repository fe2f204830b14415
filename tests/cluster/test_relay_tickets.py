from __future__ import annotations

import time

import pytest

from dynamail.accounts import AccountRef
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
