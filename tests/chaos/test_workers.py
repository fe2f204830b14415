"""Parsing of the IMAP answers the workers record, and outcome classification."""

from __future__ import annotations

import random

from dynamail.chaos.history import OK, REFUSED, UNKNOWN
from dynamail.chaos.workers import api_outcome, cli_outcome, imap_outcome, message, parse_fetch


def test_parse_fetch_reads_uid_flags_and_message_id_wherever_flags_come() -> None:
    data = [
        (b"1 (UID 4 FLAGS (\\Seen $Chaos1) BODY[HEADER.FIELDS (MESSAGE-ID)] {26}",
         b"Message-ID: <a@chaos.test>\r\n\r\n"),
        b")",
        (b"2 (UID 9 BODY[HEADER.FIELDS (MESSAGE-ID)] {26}", b"message-id: <b@chaos.test>\r\n\r\n"),
        b" FLAGS (\\Flagged))",
        b"3 (FLAGS (\\Seen))",  # an unsolicited flag update carries no message
    ]
    assert parse_fetch(data) == [[4, "<a@chaos.test>", ["$Chaos1", "\\Seen"]],
                                 [9, "<b@chaos.test>", ["\\Flagged"]]]


def test_outcomes() -> None:
    assert imap_outcome("OK", [b"done"]) == OK
    assert imap_outcome("NO", [b"[UNAVAILABLE] Account temporarily unavailable"]) == UNKNOWN
    assert imap_outcome("NO", [b"[SERVERBUG] oops"]) == UNKNOWN
    assert imap_outcome("NO", [b"no code at all"]) == UNKNOWN
    assert imap_outcome("NO", [b"[TRYCREATE] no such mailbox"]) == REFUSED
    assert cli_outcome("200 OK") == OK
    assert cli_outcome("530 temporarily unavailable") == UNKNOWN
    assert cli_outcome("513 unknown account") == REFUSED
    assert cli_outcome("") == UNKNOWN
    assert (api_outcome(201), api_outcome(404), api_outcome(503), api_outcome(500)) == (
        OK, REFUSED, UNKNOWN, UNKNOWN)


def test_message_carries_its_id_and_crlf_lines() -> None:
    raw = message("<x@chaos.test>", "u1@chaos.test", "s", random.Random(1))
    assert b"Message-ID: <x@chaos.test>\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
