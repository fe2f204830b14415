"""The interpreter: every command and extension over small messages."""

from __future__ import annotations

import datetime

import pytest

from dynamail.sieve.actions import Envelope, FileInto, Redirect, Reject, Vacation
from dynamail.sieve.commands import compile_script
from dynamail.sieve.interpreter import run
from dynamail.sieve.match import Budget, SieveRuntimeError

MSG = (
    b"Return-Path: <alice@example.org>\r\n"
    b"Received: from x by y; Tue, 1 Dec 2026 09:00:00 +0000\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.com>, carol@example.com\r\n"
    b"Cc: team@lists.example.com\r\n"
    b"Subject: Meeting =?utf-8?q?m=C3=BCnchen?= tomorrow\r\n"
    b"Date: Tue, 1 Dec 2026 10:30:15 +0100\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"X-Spam-Score: 12\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=B\r\n"
    b"\r\n"
    b"--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Let's meet in M=C3=BCnchen.\r\n"
    b"--B\r\nContent-Type: text/html\r\n\r\n<p>HTML part</p>\r\n--B--\r\n"
)
ENV = Envelope("alice@example.org", "bob@example.com")


def go(script: str, msg: bytes = MSG, env: Envelope = ENV, **kw: object) -> list[object]:
    out = run(compile_script(script), msg, env, **kw)  # type: ignore[arg-type]
    return list(out.actions)


def inbox(flags: frozenset[str] = frozenset()) -> FileInto:
    return FileInto("INBOX", flags)


def test_empty_script_keeps() -> None:
    assert go("") == [inbox()]


def test_base_tests() -> None:
    s = 'require "fileinto";\n'
    assert go(s + 'if header :contains "subject" "MÜNCHEN" { fileinto "a"; }') == [inbox()]  # ASCII casemap
    assert go(s + 'if header :contains "subject" "münchen" { fileinto "a"; }') == [FileInto("a", frozenset())]
    assert go(s + 'if address :domain :is "to" "example.com" { fileinto "b"; }')[0] == FileInto("b", frozenset())
    assert go(s + 'if address :localpart "cc" "team" { discard; }') == []
    assert go(s + 'if exists ["x-spam-score", "nope"] { discard; }') == [inbox()]
    assert go(s + "if size :over 100 { discard; }") == []
    assert go(s + "if size :under 100 { discard; }") == [inbox()]
    assert go(s + 'if allof (true, not false) { stop; } discard;') == [inbox()]
    assert go(s + 'if anyof (false, false) { discard; } elsif true { fileinto "e"; } else { discard; }') == \
        [FileInto("e", frozenset())]


def test_envelope() -> None:
    s = 'require ["envelope", "fileinto"];'
    assert go(s + 'if envelope :domain "from" "example.org" { fileinto "x"; }') == [FileInto("x", frozenset())]
    assert go(s + 'if envelope :all "to" "bob@example.com" { discard; }') == []
    null = Envelope("", "bob@example.com")
    assert go(s + 'if envelope :is "from" "" { discard; }', env=null) == []
    assert go(s + 'if envelope :localpart "from" "" { discard; }', env=null) == [inbox()]


def test_subaddress() -> None:
    s = 'require ["subaddress", "envelope", "fileinto", "variables"];'
    env = Envelope("alice+lists@example.org", "bob+work@example.com")
    assert go(s + 'if envelope :detail "to" "work" { fileinto "work"; }', env=env) == [FileInto("work", frozenset())]
    assert go(s + 'if envelope :user "to" "bob" { discard; }', env=env) == []
    assert go(s + 'if address :detail "from" "" { discard; }') == [inbox()]  # no "+": no detail at all
    assert go(s + 'if address :user :matches "to" "b*" { fileinto "${0}"; }') == [FileInto("bob", frozenset())]


def test_fileinto_copy_and_mailbox() -> None:
    s = 'require ["fileinto", "copy", "mailbox"];'
    assert go(s + 'fileinto :copy "A"; fileinto :create "B";') == [FileInto("A", frozenset()), FileInto("B", frozenset(), True)]
    assert go(s + 'if mailboxexists "Work" { fileinto "Work"; }', mailboxes=frozenset({"INBOX", "Work"})) == \
        [FileInto("Work", frozenset())]
    assert go(s + 'if mailboxexists "Work" { fileinto "Work"; }') == [inbox()]
    assert go(s + 'fileinto "A"; fileinto "A"; keep; keep;') == [FileInto("A", frozenset()), inbox()]


def test_redirect_and_limits() -> None:
    assert go('redirect "c@example.net";') == [Redirect("c@example.net")]
    assert go('require "copy"; redirect :copy "c@example.net";') == [Redirect("c@example.net"), inbox()]
    many = "".join(f'redirect "u{i}@example.net";' for i in range(6))
    with pytest.raises(SieveRuntimeError, match="too many redirects"):
        go(many)
    with pytest.raises(SieveRuntimeError, match="bad address"):
        go('redirect "not an address";')


def test_reject_ereject_and_conflicts() -> None:
    assert go('require "reject"; reject "no thanks";') == [Reject("no thanks", False)]
    assert go('require "ereject"; ereject "no";') == [Reject("no", True)]
    with pytest.raises(SieveRuntimeError, match="reject cannot"):
        go('require ["reject", "fileinto"]; fileinto "x"; reject "no";')


def test_imap4flags() -> None:
    s = 'require ["imap4flags", "fileinto"];'
    assert go(s + 'setflag "\\\\Seen"; addflag ["\\\\Flagged foo", "\\\\seen"]; removeflag "foo"; fileinto "x";') == \
        [FileInto("x", frozenset({"\\Seen", "\\Flagged"}))]
    assert go(s + 'addflag "a"; keep :flags "b";') == [inbox(frozenset({"b"}))]
    assert go(s + 'addflag "a";') == [inbox(frozenset({"a"}))]  # implicit keep takes the internal flags
    assert go(s + 'addflag "a"; if hasflag :is "A" { discard; }') == []
    assert go('require ["imap4flags", "variables"]; setflag "v" "x y"; if hasflag :count "eq" '
              ':comparator "i;ascii-numeric" "v" "2" { discard; }'.replace('"variables"', '"variables", "relational", "comparator-i;ascii-numeric"')) == []


def test_variables() -> None:
    s = 'require ["variables", "fileinto"];'
    assert go(s + 'if header :matches "from" "* <*@*>" { fileinto "${1}/${3}"; }') == \
        [FileInto("Alice/example.org", frozenset())]
    assert go(s + 'set :upperfirst :lower "v" "HELLO"; set :length "n" "${v}"; fileinto "${v}${n}";') == \
        [FileInto("Hello5", frozenset())]
    assert go(s + 'set "a" "${"; fileinto "x${a}{b}${unset}${ns.x}";') == [FileInto("x${{b}${ns.x}", frozenset())]
    assert go(s + 'set :quotewildcard "q" "a*b"; if string :is "${q}" "a\\\\*b" { discard; }') == []
    assert go('require ["variables", "relational"]; if string :count "eq" ["a", "", "b"] "2" { discard; }') == []


def test_relational_numeric() -> None:
    s = 'require ["relational", "comparator-i;ascii-numeric", "fileinto"];'
    assert go(s + 'if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "10" { fileinto "Junk"; }') == \
        [FileInto("Junk", frozenset())]
    assert go(s + 'if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "3" { discard; }') == []
    assert go(s + 'if header :value "lt" :comparator "i;ascii-numeric" "x-spam-score" "9" { discard; }') == [inbox()]


def test_body() -> None:
    s = 'require "body";'
    assert go(s + 'if body :contains "münchen" { discard; }') == []  # decoded text part
    assert go(s + 'if body :contains "M=C3=BCnchen" { discard; }') == [inbox()]
    assert go(s + 'if body :raw :contains "M=C3=BCnchen" { discard; }') == []
    assert go(s + 'if body :content "text/html" :contains "HTML part" { discard; }') == []
    assert go(s + 'if body :content "text/plain" :contains "HTML part" { discard; }') == [inbox()]


def test_date_and_currentdate() -> None:
    s = 'require ["date", "relational"];'
    assert go(s + 'if date :originalzone "date" "hour" "10" { discard; }') == []
    assert go(s + 'if date "date" "hour" "09" { discard; }') == []  # converted to UTC (the local zone here)
    assert go(s + 'if date :zone "+0530" "date" "time" "15:00:15" { discard; }') == []
    assert go(s + 'if date :originalzone "date" "zone" "+0100" { discard; }') == []
    assert go(s + 'if date "date" "weekday" "2" { discard; }') == []  # a Tuesday
    now = datetime.datetime(2026, 12, 24, 8, 0, tzinfo=datetime.UTC)
    assert go(s + 'if currentdate :value "ge" "date" "2026-12-24" { discard; }', now=now) == []
    assert go(s + 'if currentdate :is "julian" "61398" { discard; }', now=now) == []


def test_editheader() -> None:
    s = 'require ["editheader"];'
    out = run(compile_script(s + 'addheader "X-Tag" "one"; addheader :last "X-Tag" "two"; deleteheader "x-spam-score";'),
              MSG, ENV)
    head = out.message.split(b"\r\n\r\n")[0]
    assert head.startswith(b"X-Tag: one\r\n") and head.endswith(b"X-Tag: two")
    assert b"X-Spam-Score" not in head
    assert out.message.endswith(MSG[MSG.index(b"\r\n\r\n"):])
    for protected in ('addheader "Received" "x";', 'deleteheader "received";', 'deleteheader "Auto-Submitted";'):
        out = run(compile_script(s + protected), MSG, ENV)
        assert out.message == MSG and "not allowed" in out.warnings[0]
    with pytest.raises(SieveRuntimeError, match="not valid"):
        run(compile_script(s + 'addheader "Bad Name" "x";'), MSG, ENV)
    out = run(compile_script(s + 'addheader "X-Note" "Grüße";'), MSG, ENV)
    assert out.message.startswith(b"X-Note: =?utf-8?b?R3LDvMOfZQ==?=\r\n")
    out = run(compile_script(s + 'deleteheader :index 1 :last "to";'), MSG, ENV)
    assert b"\r\nTo:" not in out.message
    out = run(compile_script(s + 'deleteheader :contains "subject" "nothing";'), MSG, ENV)
    assert out.message == MSG


def test_vacation_action() -> None:
    (v, keep) = go('require "vacation"; vacation :days 3 :subject "Away" :addresses ["b@x"] "back soon";')
    assert isinstance(v, Vacation) and v.period == 3 * 86400 and v.subject == "Away" and v.addresses == ("b@x",)
    assert keep == inbox()
    (v2, _) = go('require ["vacation", "vacation-seconds"]; vacation :seconds 1 :handle "h" "x";')
    assert isinstance(v2, Vacation) and v2.period == 3600 and v2.handle == "h"
    with pytest.raises(SieveRuntimeError, match="reject"):
        go('require ["vacation", "reject"]; vacation "x"; reject "y";')


def test_environment() -> None:
    s = 'require ["environment", "fileinto", "variables"];'
    assert go(s + 'if environment :is "location" "MDA" { discard; }') == []
    assert go(s + 'if environment "phase" "during" { discard; }') == []
    assert go(s + 'if environment :matches "host" "*" { fileinto "${1}"; }',
              environment={"host": "mx1.example"}) == [FileInto("mx1.example", frozenset())]
    assert go(s + 'if environment :contains "remote-ip" "" { discard; }') == [inbox()]  # unknown item: false


def test_duplicate() -> None:
    script = compile_script('require ["duplicate", "fileinto"]; if duplicate { fileinto "Dups"; }')
    first = run(script, MSG, ENV)
    assert first.actions == [inbox()] and len(first.duplicates) == 1
    again = run(script, MSG, ENV, seen=first.duplicates)
    assert again.actions == [FileInto("Dups", frozenset())] and again.duplicates == {}  # no :last
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=13)  # default 12 h
    assert run(script, MSG, ENV, seen=first.duplicates, now=later).actions == [inbox()]
    last = compile_script('require "duplicate"; if duplicate :last :seconds 60 :handle "h" { discard; }')
    one = run(last, MSG, ENV)
    two = run(last, MSG, ENV, seen=one.duplicates)
    assert two.actions == [] and two.duplicates  # :last renews the record
    retried = run(script, MSG, ENV, delivery="q1/a/b")
    assert run(script, MSG, ENV, seen=retried.duplicates, delivery="q1/a/b").actions == [inbox()]  # a retry
    assert run(script, MSG, ENV, seen=retried.duplicates, delivery="q2/a/b").actions == [
        FileInto("Dups", frozenset())]  # another delivery of the same Message-ID
    by_header = compile_script('require "duplicate"; if duplicate :header "x-missing" { discard; }')
    assert run(by_header, MSG, ENV).duplicates == {}  # no id: false, nothing tracked
    unique = compile_script('require "duplicate"; if duplicate :uniqueid "x" { discard; } '
                            'if duplicate :uniqueid "x" { discard; }')
    assert run(unique, MSG, ENV).actions == []  # the second test sees the first's record


def test_cpu_budget() -> None:
    script = 'require "variables"; set "a" "' + "a" * 4000 + '";' + \
        "".join('if string :matches "${a}" "*a*a*a*a*a*a*a*a*a*b" { stop; }' for _ in range(50))
    with pytest.raises(SieveRuntimeError, match="CPU"):
        run(compile_script(script), MSG, ENV, budget=Budget(steps=200_000))


def test_include_return_global() -> None:
    lib = {
        "spam": compile_script('require ["fileinto", "include"]; '
                               'if header :contains "subject" "münchen" { fileinto "Munich"; return; } discard;'),
        "tag": compile_script('require ["include", "variables"]; global "tag"; set "tag" "from-tag"; set "local" "x";'),
        "loop": compile_script('require "include"; include "loop";'),
    }
    main = compile_script('require ["include", "variables", "fileinto"]; include "spam"; '
                          'include :optional "missing"; global "tag"; include "tag"; include :once "tag"; '
                          'fileinto "${tag}-${local}";')
    assert run(main, MSG, ENV, library=lib).actions == [FileInto("Munich", frozenset()),
                                                        FileInto("from-tag-", frozenset())]
    with pytest.raises(SieveRuntimeError, match="no personal script 'missing'"):
        run(compile_script('require "include"; include "missing";'), MSG, ENV, library=lib)
    with pytest.raises(SieveRuntimeError, match="includes itself"):
        run(compile_script('require "include"; include "loop";'), MSG, ENV, library=lib)
    with pytest.raises(SieveRuntimeError, match="no global script"):
        run(compile_script('require "include"; include :global "spam";'), MSG, ENV, library=lib)
    assert run(compile_script('require "include"; return; discard;'), MSG, ENV).actions == [inbox()]
    assert compile_script('require "include"; include "a"; include :global "g"; include "b";').includes == ("a", "b")


def test_spamtest_reads_the_content_filters_verdict() -> None:
    s = ('require ["spamtest", "spamtestplus", "relational", "comparator-i;ascii-numeric", "fileinto"];'
         'if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "Junk"; }'
         'elsif spamtest :is "0" { fileinto "Untested"; }'
         'elsif spamtest :percent :value "lt" :comparator "i;ascii-numeric" "20" { fileinto "Clean"; }')

    def msg(status: str) -> bytes:
        return (status + "\r\n" if status else "").encode() + MSG
    assert go(s, msg("X-Spam-Status: Yes, score=15.2 required=15")) == [FileInto("Junk", frozenset())]
    assert go(s, msg("X-Spam-Status: No, score=7 required=15")) == [inbox()]  # 1 + int(4.2) = 5, 47 %
    assert go(s, msg("X-Spam-Status: No, score=9 required=15")) == [FileInto("Junk", frozenset())]  # 1 + int(5.4) = 6
    assert go(s, msg("X-Spam-Status: No, score=1.5 required=15")) == [FileInto("Clean", frozenset())]  # 10 %
    assert go(s, msg("")) == [FileInto("Untested", frozenset())]
    assert go(s, msg("X-Spam-Status: Unknown (content filter unavailable)")) == [FileInto("Untested", frozenset())]
    forged = MSG.replace(b"From: Alice", b"X-Spam-Status: No, score=0 required=15\r\nFrom: Alice")
    assert go(s, forged) == [FileInto("Untested", frozenset())]  # below our Received: not ours
