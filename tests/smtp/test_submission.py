"""Unit tests of ``dynamail.smtp.submission``: Received, Date, Message-ID."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given
from hypothesis import strategies as st

from dynamail.smtp.submission import HeaderCompleter, header_names, received_field

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def complete(chunks: list[bytes], limit: int = 1000) -> tuple[bytes, list[str]]:
    c = HeaderCompleter("mail.example", now=NOW, limit=limit)
    out = b"".join(c.feed(x) for x in chunks) + c.finish()
    return out, c.added


def test_missing_date_and_message_id_are_added_in_front() -> None:
    msg = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    out, added = complete([msg])
    assert added == ["Date", "Message-ID"]
    assert out.startswith(b"Date: Fri, 15 Jan 2027 08:00:00 +0000\r\nMessage-ID: <")
    assert out.endswith(msg)
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed["Message-ID"].endswith("@mail.example>") and parsed["Subject"] == "hi"


def test_present_fields_are_kept_whatever_their_case_and_folding() -> None:
    msg = b"DATE: Mon, 2 Nov 2026 10:00:00 +0100\r\nmessage-id:\r\n <x@y>\r\n\r\nbody\r\n"
    assert complete([msg]) == (msg, [])


def test_only_the_header_section_counts() -> None:
    msg = b"Subject: s\r\n\r\nDate: in the body\r\nMessage-ID: <body@x>\r\n"
    out, added = complete([msg])
    assert added == ["Date", "Message-ID"] and out.endswith(msg)


def test_continuation_lines_are_not_field_names() -> None:
    assert header_names(b"Subject: a\r\n Date: folded\r\nX-Y: z\r\n") == {"subject", "x-y"}


def test_bytes_are_held_only_until_the_header_ends() -> None:
    c = HeaderCompleter("mail.example", now=NOW)
    assert c.feed(b"Subject: a\r\nDate: x\r\nMessage-ID: <m@x>\r") == b""
    assert c.feed(b"\n\r\nbo") == b"Subject: a\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\nbo"
    assert c.feed(b"dy") == b"dy"
    assert c.finish() == b""


def test_message_without_body_or_header_end() -> None:
    out, added = complete([b"Subject: only a header"])
    assert added == ["Date", "Message-ID"] and out.endswith(b"Subject: only a header")
    out, added = complete([b"\r\njust a body\r\n"])  # empty header section
    assert added == ["Date", "Message-ID"] and out.endswith(b"\r\n\r\njust a body\r\n")


def test_header_scan_is_bounded() -> None:
    c = HeaderCompleter("mail.example", now=NOW, limit=100)
    long_header = b"X-Long: " + b"a" * 200 + b"\r\n"
    out = c.feed(long_header)
    assert out.endswith(long_header) and c.added == ["Date", "Message-ID"]  # released at the limit
    assert c.feed(b"Date: late\r\n\r\n") == b"Date: late\r\n\r\n"


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_any_split_gives_the_same_result(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole, added = complete([data])
    split, added2 = complete(chunks)
    # the Message-ID is random; everything else must agree
    strip = lambda b: b"".join(line for line in b.split(b"\r\n") if not line.startswith(b"Message-ID: <"))  # noqa: E731
    assert added == added2 and strip(whole) == strip(split)
    assert whole.endswith(data)


def test_received_names_identity_and_protocol_only() -> None:
    field = received_field(
        helo="client\r\nX-Injected: 1", peer="192.0.2.1", hostname="mail.example", protocol="ESMTPSA",
        session_id="abc", recipients=["bob@example.org"], identity="alice@example.org", now=NOW,
    )
    assert field.startswith(b"Received: from clientX-Injected: 1 ([192.0.2.1]) (authenticated as alice@example.org)\r\n")
    assert b"\tby mail.example (dynamail) with ESMTPSA id abc\r\n\tfor <bob@example.org>;" in field
    assert field.count(b"\r\n") == 4 and field.endswith(b"Fri, 15 Jan 2027 08:00:00 -0000\r\n")
    inbound = received_field(helo=None, peer="192.0.2.1", hostname="m", protocol="ESMTP", session_id="i",
                             recipients=["a@x", "b@x"], now=NOW)
    assert b"authenticated" not in inbound and b"for <" not in inbound and b"from unknown" in inbound
