"""Transcripts of whole CLI sessions against a real Admin on a temporary
base directory (no socket)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dynamail.cliproto import limits
from dynamail.cliproto.commands import REGISTRY
from dynamail.cliproto.core import State

# -- greeting and login --------------------------------------------------------


def test_greeting_has_token(play: Any) -> None:
    async def s(t: Any) -> None:
        assert re.fullmatch(r"200 main\.test .* <[^<>@\s]+@main\.test>\r\n", t.greeting)
        assert t.core.token in t.greeting

    play(s)


def test_user_pass_login(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.expect("USER postmaster", r"300 ")
        await t.expect("PASS pm-secret", r"200 OK")
        await t.expect("NOOP", r"200 OK")
        await t.expect("QUIT", r"200 ")
        assert t.closed

    play(s)


def test_login_with_full_address_and_case(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login("PostMaster@Main.Test")

    play(s)


def test_bad_password_then_good(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.expect("USER postmaster", r"300 ")
        await t.expect("PASS wrong", r"515 ")
        assert t.core.state is State.LOGIN
        await t.expect("LISTDOMAINS", r"500 please log in")
        await t.login()

    play(s)


def test_unknown_user_looks_like_bad_password(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.expect("USER nobody@main.test", r"300 ")
        text = await t.expect("PASS x", r"515 ")
        await t.expect("USER postmaster", r"300 ")
        text2 = await t.expect("PASS x", r"515 ")
        assert text == text2

    play(s)


def test_repeated_bad_logins_close_the_session(play: Any) -> None:
    async def s(t: Any) -> None:
        for _ in range(limits.MAX_BAD_LOGINS - 1):
            await t.expect("USER postmaster", r"300 ")
            await t.expect("PASS nope", r"515 ")
            assert not t.closed
        await t.expect("USER postmaster", r"300 ")
        await t.expect("PASS nope", r"515 .*closing")
        assert t.closed

    play(s)


def test_failed_logins_are_throttled_across_sessions(ctx: Any) -> None:
    import asyncio

    from .conftest import Transcript

    async def main() -> None:
        for _ in range(3):  # several connections, bad passwords
            t = Transcript(ctx)
            for _ in range(2):
                await t.expect("USER postmaster", r"300 ")
                await t.expect("PASS nope", r"515 ")
        t = Transcript(ctx)
        await t.expect("USER postmaster", r"300 ")
        text = await t.send("PASS pm-secret")  # right password, but throttled now
        assert text.startswith("515 "), text

    asyncio.run(main())


def test_apop_login(play: Any) -> None:
    async def s(t: Any) -> None:
        digest = t.apop_digest("pm-secret")
        await t.expect(f"APOP postmaster {digest}", r"200 OK")
        assert t.core.state is State.READY

    play(s)


def test_apop_wrong_digest(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.expect("APOP postmaster " + "0" * 32, r"515 ")
        await t.expect(f"APOP postmaster {t.apop_digest('other')}", r"515 ")
        await t.expect("APOP postmaster", r"501 ")
        await t.expect(f"APOP postmaster {t.apop_digest('pm-secret')}", r"200 OK")

    play(s)


def test_pass_without_user(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.expect("PASS pm-secret", r"500 ")
        await t.expect("USER", r"501 ")
        await t.login()

    play(s)


def test_commands_need_login(play: Any) -> None:
    async def s(t: Any) -> None:
        for verb in ("LISTDOMAINS", "GETVERSION", "CREATEDOMAIN x.test", "GETSERVERALERTS"):
            await t.expect(verb, r"500 please log in")
        await t.expect("NOOP", r"200 OK")
        await t.expect("INLINE", r"200 OK")

    play(s)


# -- modes -------------------------------------------------------------------------


def test_ordinary_and_inline_answers(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        text = await t.send("LISTDOMAINS")
        assert text == "200 data follow\r\n(main.test)\r\n"
        await t.expect("INLINE", r"200 OK")
        text = await t.send("LISTDOMAINS")
        assert text == "201 (main.test)\r\n"
        text = await t.send("MAINDOMAINNAME")
        assert text == "201 main.test\r\n"

    play(s)


def test_never_an_empty_201(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        await t.expect("INLINE", r"200 OK")
        await t.expect("CREATEDOMAIN empty.test", r"200 OK")
        for cmd in ("LISTACCOUNTS empty.test", "GETDOMAINSETTINGS empty.test", "GETSERVERALERTS",
                    "GETDOMAINALERTS empty.test", "GETACCOUNTDEFAULTS empty.test"):
            text = await t.send(cmd)
            assert text.startswith("201 ") and len(text.strip()) > 4, (cmd, text)
            assert "#NULL#" not in text

    play(s)


def test_answers_avoid_nnn_escapes(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        await t.expect("INLINE", r"200 OK")
        await t.expect('UPDATESERVERACCOUNTDEFAULTS {X-Note="a\\001b\\tc";}', r"200 OK")
        text = await t.send("GETSERVERACCOUNTDEFAULTS")
        assert "\\001" not in text and "\\" not in text.replace("\\t", "")
        assert "#NULL#" not in text

    play(s)


# -- malformed input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"", "500"),
        (b"   ", "500"),
        (b"FROBNICATE", "500"),
        (b"CREATEDOMAIN", "501"),
        (b"CREATEDOMAIN x.test {a=b", "501"),
        (b"CREATEDOMAIN x.test extra words", "501"),
        (b"UPDATEDOMAINSETTINGS main.test (a,b)", "501"),
        (b"SETACCOUNTRIGHTS postmaster {a=b;}", "501"),
        (b"RENAMEACCOUNT a b", "501"),
        (b"SETACCOUNTPASSWORD postmaster x", "501"),
        (b"LISTDOMAINS \xff\xfe", "501"),
        (b"LISTDOMAINS \x00", "501"),
        (b'CREATEDOMAIN "unterminated', "501"),
        (b"GETDOMAINSETTINGS " + b"(" * 100, "501"),
    ],
)
def test_malformed_lines_keep_the_session(play: Any, line: bytes, code: str) -> None:
    async def s(t: Any) -> None:
        await t.login()
        text = await t.send(line)
        assert text.startswith(code + " "), text
        assert not t.closed
        await t.expect("NOOP", r"200 OK")

    play(s)


def test_line_too_long_reply(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        reply = t.core.line_too_long()
        assert reply.data.startswith(b"512 ") and not reply.close
        await t.expect("NOOP", r"200 OK")

    play(s)


def test_too_many_bad_commands_close(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        for _ in range(limits.MAX_BAD_COMMANDS):
            await t.expect("BOGUS", r"500 ")
        await t.expect("BOGUS", r"500 .*closing")
        assert t.closed

    play(s)


def test_good_command_resets_bad_count(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        for _ in range(3):
            for _ in range(limits.MAX_BAD_COMMANDS - 1):
                await t.expect("BOGUS", r"500 ")
            await t.expect("GETVERSION", r"200 data follow")
        assert not t.closed

    play(s)


def test_idle_timeout_reply_closes() -> None:
    from dynamail.cliproto.core import CliCore

    core = CliCore("h", "<t@h>")
    reply = core.idle_timeout()
    assert reply.close and reply.data.startswith(b"5")
    assert core.state is State.CLOSED


# -- the command table ---------------------------------------------------------------------

REQUIRED = """
LISTDOMAINS MAINDOMAINNAME CREATEDOMAIN DELETEDOMAIN GETDOMAINSETTINGS UPDATEDOMAINSETTINGS
SETDOMAINSETTINGS GETDOMAINEFFECTIVESETTINGS GETACCOUNTDEFAULTS UPDATEACCOUNTDEFAULTS
SETACCOUNTDEFAULTS GETSERVERACCOUNTDEFAULTS UPDATESERVERACCOUNTDEFAULTS SETSERVERACCOUNTDEFAULTS
GETCLUSTERACCOUNTDEFAULTS UPDATECLUSTERACCOUNTDEFAULTS SETCLUSTERACCOUNTDEFAULTS
GETCLUSTERDOMAINDEFAULTS UPDATECLUSTERDOMAINDEFAULTS SETCLUSTERDOMAINDEFAULTS GETDOMAINDEFAULTS
UPDATEDOMAINDEFAULTS SETDOMAINDEFAULTS CREATEACCOUNT RENAMEACCOUNT DELETEACCOUNT LISTACCOUNTS
GETACCOUNTSETTINGS UPDATEACCOUNTSETTINGS SETACCOUNTSETTINGS GETACCOUNTEFFECTIVESETTINGS
SETACCOUNTPASSWORD VERIFYACCOUNTPASSWORD GETACCOUNTRIGHTS SETACCOUNTRIGHTS
GETSERVERALERTS SETSERVERALERTS POSTSERVERALERT REMOVESERVERALERT
GETCLUSTERALERTS SETCLUSTERALERTS POSTCLUSTERALERT REMOVECLUSTERALERT
GETDOMAINALERTS SETDOMAINALERTS POSTDOMAINALERT REMOVEDOMAINALERT
GETACCOUNTALERTS SETACCOUNTALERTS POSTACCOUNTALERT REMOVEACCOUNTALERT
GETACCOUNTPREFS UPDATEACCOUNTPREFS SETACCOUNTPREFS GETCLUSTERACCOUNTPREFS
UPDATECLUSTERACCOUNTPREFS SETCLUSTERACCOUNTPREFS GETVERSION
LISTMAILBOXES CREATEMAILBOX DELETEMAILBOX RENAMEMAILBOX GETCURRENTCONTROLLER
""".split()


def test_registry_has_every_required_command() -> None:
    missing = [c for c in REQUIRED if c not in REGISTRY]
    assert not missing
    for spec in REGISTRY.values():
        assert spec.name == spec.name.upper()
        assert spec.admin_method, spec.name
