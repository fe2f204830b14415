"""Every CLI command through the real Admin layer: results, rights refusals,
settings inheritance, ``default`` removal, hostile names."""

from __future__ import annotations

import datetime
from typing import Any

import pytest


async def _setup(t: Any) -> None:
    """example.test with alice (plain user) and dadmin (domain administrator)."""
    await t.login()
    await t.expect("CREATEDOMAIN example.test", r"200 OK")
    await t.expect('CREATEACCOUNT alice@example.test {Password="alice-pw"; RealName="Alice A";}', r"200 OK")
    await t.expect("CREATEACCOUNT dadmin@example.test MultiMailbox {Password=dpw;}", r"200 OK")
    await t.expect("SETACCOUNTRIGHTS dadmin@example.test (DomainAdmin)", r"200 OK")


def test_domains(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        assert await t.data("MAINDOMAINNAME") == "main.test"
        await t.expect("CREATEDOMAIN a.test {MaxAccounts=#5; RealName=\"A Corp\";}", r"200 OK")
        await t.expect("CREATEDOMAIN b.test SHARED", r"200 OK")
        await t.expect("CREATEDOMAIN a.test", r"514 ")
        assert await t.data("LISTDOMAINS") == ["a.test", "b.test", "main.test"]
        settings = await t.data("GETDOMAINSETTINGS a.test")
        assert settings["RealName"] == "A Corp"
        assert settings["MaxAccounts"] == 5
        await t.expect("UPDATEDOMAINSETTINGS a.test {RealName=\"A Inc\";}", r"200 OK")
        assert (await t.data("GETDOMAINSETTINGS a.test"))["RealName"] == "A Inc"
        await t.expect("SETDOMAINSETTINGS a.test {MailToUnknown=Discarded;}", r"200 OK")
        assert await t.data("GETDOMAINSETTINGS a.test") == {"MailToUnknown": "Discarded"}
        eff = await t.data("GETDOMAINEFFECTIVESETTINGS a.test")
        assert eff["MailToUnknown"] == "Discarded" and eff["MaxAccounts"] == "unlimited"
        await t.expect("CREATEACCOUNT u@a.test", r"200 OK")
        await t.expect("DELETEDOMAIN a.test", r"501 ")  # not empty
        await t.expect("DELETEDOMAIN a.test FORCE", r"200 OK")
        await t.expect("DELETEDOMAIN b.test", r"200 OK")
        await t.expect("DELETEDOMAIN nosuch.test", r"513 ")
        assert await t.data("LISTDOMAINS") == ["main.test"]

    play(s)


def test_accounts(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        accounts = await t.data("LISTACCOUNTS example.test")
        assert sorted(accounts) == ["alice", "dadmin"]
        assert "postmaster" in await t.data("LISTACCOUNTS")
        assert (await t.data("GETACCOUNTSETTINGS alice@example.test"))["RealName"] == "Alice A"
        assert "Password" not in await t.data("GETACCOUNTSETTINGS alice@example.test")
        await t.expect("UPDATEACCOUNTSETTINGS alice@example.test {MaxAccountSize=20M;}", r"200 OK")
        got = await t.data("GETACCOUNTSETTINGS alice@example.test")
        assert got == {"RealName": "Alice A", "MaxAccountSize": "20M"}
        await t.expect("SETACCOUNTSETTINGS alice@example.test {RealName=Al;}", r"200 OK")
        assert await t.data("GETACCOUNTSETTINGS alice@example.test") == {"RealName": "Al"}
        await t.expect("VERIFYACCOUNTPASSWORD alice@example.test PASSWORD alice-pw", r"200 OK")
        await t.expect("SETACCOUNTPASSWORD alice@example.test PASSWORD new-pw", r"200 OK")
        await t.expect("VERIFYACCOUNTPASSWORD alice@example.test PASSWORD alice-pw", r"5\d\d ")
        await t.expect("SETACCOUNTPASSWORD alice@example.test TO older-form", r"200 OK")
        await t.expect("VERIFYACCOUNTPASSWORD alice@example.test PASSWORD older-form", r"200 OK")
        await t.expect("RENAMEACCOUNT alice@example.test INTO alicia@example.test", r"200 OK")
        await t.expect("GETACCOUNTSETTINGS alice@example.test", r"513 ")
        await t.expect("VERIFYACCOUNTPASSWORD alicia@example.test PASSWORD older-form", r"200 OK")
        await t.expect("CREATEACCOUNT bob@example.test BogusType", r"501 ")
        await t.expect("CREATEACCOUNT bob@example.test {Password=#5;}", r"501 ")
        await t.expect("DELETEACCOUNT alicia@example.test", r"200 OK")
        await t.expect("DELETEACCOUNT alicia@example.test", r"513 ")
        await t.expect("DELETEACCOUNT postmaster", r"501 ")  # oneself

    play(s)


def test_rights_commands(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        assert await t.data("GETACCOUNTRIGHTS postmaster") == ["Master"]
        assert await t.data("GETACCOUNTRIGHTS dadmin@example.test") == ["DomainAdmin"]
        await t.expect("SETACCOUNTRIGHTS alice@example.test (Master)", r"501 ")  # not Main Domain
        await t.expect("CREATEACCOUNT ops", r"200 OK")
        await t.expect("SETACCOUNTRIGHTS ops (Settings, Monitors)", r"200 OK")
        assert sorted(await t.data("GETACCOUNTRIGHTS ops")) == ["Monitors", "Settings"]

    play(s)


def test_settings_inheritance_and_default_removal(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        eff = await t.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")
        assert eff["MaxAccountSize"] == "100M"  # built-in
        await t.expect("UPDATESERVERACCOUNTDEFAULTS {MaxAccountSize=1G;}", r"200 OK")
        assert (await t.data("GETSERVERACCOUNTDEFAULTS"))["MaxAccountSize"] == "1G"
        eff = await t.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")
        assert eff["MaxAccountSize"] == "1G"  # server-wide
        await t.expect("UPDATEACCOUNTDEFAULTS example.test {MaxAccountSize=500M;}", r"200 OK")
        assert (await t.data("GETACCOUNTDEFAULTS example.test")) == {"MaxAccountSize": "500M"}
        eff = await t.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")
        assert eff["MaxAccountSize"] == "500M"  # domain default
        await t.expect("UPDATEACCOUNTSETTINGS alice@example.test {MaxAccountSize=5M;}", r"200 OK")
        eff = await t.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")
        assert eff["MaxAccountSize"] == "5M"  # own
        await t.expect("UPDATEACCOUNTSETTINGS alice@example.test {MaxAccountSize=default;}", r"200 OK")
        assert "MaxAccountSize" not in await t.data("GETACCOUNTSETTINGS alice@example.test")
        eff = await t.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")
        assert eff["MaxAccountSize"] == "500M"
        await t.expect("UPDATEACCOUNTDEFAULTS example.test {MaxAccountSize=default;}", r"200 OK")
        eff = await t.data("GETACCOUNTEFFECTIVESETTINGS alice@example.test")
        assert eff["MaxAccountSize"] == "1G"
        await t.expect("SETACCOUNTDEFAULTS example.test {RealName=Someone;}", r"200 OK")
        assert await t.data("GETACCOUNTDEFAULTS example.test") == {"RealName": "Someone"}
        await t.expect("SETSERVERACCOUNTDEFAULTS {}", r"200 OK")
        assert await t.data("GETSERVERACCOUNTDEFAULTS") == {}
        # domains: own -> server-wide default domain settings -> built-in
        await t.expect("UPDATEDOMAINDEFAULTS {MaxAccounts=#50;}", r"200 OK")
        assert (await t.data("GETDOMAINDEFAULTS"))["MaxAccounts"] == 50
        assert (await t.data("GETDOMAINEFFECTIVESETTINGS example.test"))["MaxAccounts"] == 50
        await t.expect("UPDATEDOMAINSETTINGS example.test {MaxAccounts=#7;}", r"200 OK")
        assert (await t.data("GETDOMAINEFFECTIVESETTINGS example.test"))["MaxAccounts"] == 7
        await t.expect("UPDATEDOMAINSETTINGS example.test {MaxAccounts=#NULL#;}", r"200 OK")
        assert (await t.data("GETDOMAINEFFECTIVESETTINGS example.test"))["MaxAccounts"] == 50
        await t.expect("SETDOMAINDEFAULTS {}", r"200 OK")
        assert (await t.data("GETDOMAINEFFECTIVESETTINGS example.test"))["MaxAccounts"] == "unlimited"

    play(s)


def test_cluster_defaults_apply_to_shared_domains(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        await t.expect("CREATEDOMAIN shared.test SHARED", r"200 OK")
        await t.expect("CREATEDOMAIN local.test", r"200 OK")
        await t.expect("CREATEACCOUNT s@shared.test", r"200 OK")
        await t.expect("CREATEACCOUNT l@local.test", r"200 OK")
        await t.expect("UPDATECLUSTERACCOUNTDEFAULTS {MaxAccountSize=3G;}", r"200 OK")
        assert await t.data("GETCLUSTERACCOUNTDEFAULTS") == {"MaxAccountSize": "3G"}
        assert (await t.data("GETACCOUNTEFFECTIVESETTINGS s@shared.test"))["MaxAccountSize"] == "3G"
        assert (await t.data("GETACCOUNTEFFECTIVESETTINGS l@local.test"))["MaxAccountSize"] == "100M"
        await t.expect("SETCLUSTERACCOUNTDEFAULTS {}", r"200 OK")
        assert (await t.data("GETACCOUNTEFFECTIVESETTINGS s@shared.test"))["MaxAccountSize"] == "100M"
        await t.expect("UPDATECLUSTERDOMAINDEFAULTS {MaxAccounts=#9;}", r"200 OK")
        assert await t.data("GETCLUSTERDOMAINDEFAULTS") == {"MaxAccounts": 9}
        assert (await t.data("GETDOMAINEFFECTIVESETTINGS shared.test"))["MaxAccounts"] == 9
        assert (await t.data("GETDOMAINEFFECTIVESETTINGS local.test"))["MaxAccounts"] == "unlimited"
        await t.expect("SETCLUSTERDOMAINDEFAULTS {}", r"200 OK")
        assert await t.data("GETCLUSTERDOMAINDEFAULTS") == {}

    play(s)


def test_prefs(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        await t.expect("UPDATEACCOUNTPREFS alice@example.test {Language=German;}", r"200 OK")
        assert (await t.data("GETACCOUNTPREFS alice@example.test"))["Language"] == "German"
        await t.expect("SETACCOUNTPREFS alice@example.test {SortOrder=Subject;}", r"200 OK")
        assert await t.data("GETACCOUNTPREFS alice@example.test") == {"SortOrder": "Subject"}
        await t.expect("UPDATECLUSTERACCOUNTPREFS {MessagesPerPage=#50;}", r"200 OK")
        assert await t.data("GETCLUSTERACCOUNTPREFS") == {"MessagesPerPage": 50}
        await t.expect("SETCLUSTERACCOUNTPREFS {}", r"200 OK")
        assert await t.data("GETCLUSTERACCOUNTPREFS") == {}
        await t.expect("UPDATESERVERACCOUNTPREFS {TimeZone=Europe/Berlin;}", r"200 OK")
        assert await t.data("GETSERVERACCOUNTPREFS") == {"TimeZone": "Europe/Berlin"}
        await t.expect("SETSERVERACCOUNTPREFS {}", r"200 OK")
        assert await t.data("GETSERVERACCOUNTPREFS") == {}

    play(s)


@pytest.mark.parametrize(
    ("kind", "target"),
    [("SERVER", ""), ("CLUSTER", ""), ("DOMAIN", "example.test"), ("ACCOUNT", "alice@example.test")],
)
def test_alerts(play: Any, kind: str, target: str) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        tgt = f" {target}" if target else ""
        await t.expect(f'POST{kind}ALERT{tgt} "first notice"', r"200 OK")
        await t.expect(f'POST{kind}ALERT{tgt} second', r"200 OK")
        alerts = await t.data(f"GET{kind}ALERTS{tgt}")
        assert sorted(alerts.values()) == ["first notice", "second"]
        stamp = next(k for k, v in alerts.items() if v == "first notice")
        await t.expect(f"REMOVE{kind}ALERT{tgt} {stamp}", r"200 OK")
        await t.expect(f"REMOVE{kind}ALERT{tgt} {stamp}", r"513 ")
        assert list((await t.data(f"GET{kind}ALERTS{tgt}")).values()) == ["second"]
        await t.expect(f'SET{kind}ALERTS{tgt} {{20240102T030405Z="set one";}}', r"200 OK")
        alerts = await t.data(f"GET{kind}ALERTS{tgt}")
        assert list(alerts.values()) == ["set one"]
        assert next(iter(alerts)).startswith("20240102T030405")
        await t.expect(f'SET{kind}ALERTS{tgt} {{notastamp="x";}}', r"501 ")

    play(s)


def test_domain_alerts_default_to_own_domain(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        await t.expect("POSTDOMAINALERT main.test hello", r"200 OK")
        assert list((await t.data("GETDOMAINALERTS")).values()) == ["hello"]

    play(s)


def test_mailboxes(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        if t.ctx.accounts is None:
            pytest.skip("mail storage not built")
        await t.expect("CREATEMAILBOX alice@example.test Projects", r"200 OK")
        await t.expect('CREATEMAILBOX alice@example.test "Projects/2024"', r"200 OK")
        boxes = await t.data("LISTMAILBOXES alice@example.test")
        assert {"INBOX", "Projects", "Projects/2024"} <= set(boxes)
        await t.expect("RENAMEMAILBOX alice@example.test Projects/2024 INTO Archive2024", r"200 OK")
        await t.expect("DELETEMAILBOX alice@example.test Archive2024", r"200 OK")
        boxes = await t.data("LISTMAILBOXES alice@example.test")
        assert "Archive2024" not in boxes and "Projects/2024" not in boxes
        await t.expect('CREATEMAILBOX alice@example.test "../../etc"', r"501 ")

    play(s)


def test_version_and_controller(play: Any) -> None:
    async def s(t: Any) -> None:
        await t.login()
        version = await t.data("GETVERSION")
        assert version.startswith("dynamail ")
        await t.expect("GETCURRENTCONTROLLER", r"502 ")  # standalone: not a cluster member

    play(s)


# -- rights ---------------------------------------------------------------------------


def test_plain_user_rights(ctx: Any) -> None:
    import asyncio

    from .conftest import Transcript

    async def main() -> None:
        admin = Transcript(ctx)
        await _setup(admin)
        await admin.expect("CREATEACCOUNT carol@example.test {Password=cpw;}", r"200 OK")
        t = Transcript(ctx)
        await t.login("alice@example.test", "alice-pw")
        for cmd in (
            "CREATEDOMAIN evil.test",
            "DELETEDOMAIN example.test",
            "UPDATEDOMAINSETTINGS example.test {MaxAccounts=#1;}",
            "CREATEACCOUNT x@example.test",
            "DELETEACCOUNT carol@example.test",
            "GETACCOUNTSETTINGS carol@example.test",
            "SETACCOUNTPASSWORD carol@example.test PASSWORD x",
            "SETACCOUNTRIGHTS alice@example.test (DomainAdmin)",
            "UPDATESERVERACCOUNTDEFAULTS {RealName=x;}",
            "SETCLUSTERACCOUNTDEFAULTS {}",
            "POSTSERVERALERT hi",
            "GETSERVERALERTS",
            "LISTACCOUNTS example.test",
            "GETACCOUNTSETTINGS postmaster",
            "RENAMEACCOUNT carol@example.test INTO c2@example.test",
            "UPDATEACCOUNTDEFAULTS example.test {RealName=x;}",
        ):
            await t.expect(cmd, r"520 ")
        # and the session stays usable; own data is readable
        assert (await t.data("GETACCOUNTSETTINGS alice@example.test"))["RealName"] == "Alice A"
        await t.expect("UPDATEACCOUNTPREFS alice@example.test {Language=French;}", r"200 OK")
        await t.expect("SETACCOUNTPASSWORD alice@example.test PASSWORD changed", r"200 OK")

    asyncio.run(main())


def test_domain_admin_rights(ctx: Any) -> None:
    import asyncio

    from .conftest import Transcript

    async def main() -> None:
        admin = Transcript(ctx)
        await _setup(admin)
        await admin.expect("CREATEDOMAIN other.test", r"200 OK")
        await admin.expect("CREATEACCOUNT z@other.test", r"200 OK")
        t = Transcript(ctx)
        await t.login("dadmin@example.test", "dpw")
        await t.expect("CREATEACCOUNT new@example.test {Password=np;}", r"200 OK")
        await t.expect("UPDATEACCOUNTSETTINGS new@example.test {RealName=New;}", r"200 OK")
        await t.expect("UPDATEACCOUNTDEFAULTS example.test {MaxAccountSize=1M;}", r"200 OK")
        await t.expect("POSTDOMAINALERT example.test notice", r"200 OK")
        assert "new" in await t.data("LISTACCOUNTS example.test")
        assert "new" in await t.data("LISTACCOUNTS")  # its own domain by default
        # but not beyond its domain, and not server settings
        await t.expect("CREATEACCOUNT x@other.test", r"520 ")
        await t.expect("GETACCOUNTSETTINGS z@other.test", r"520 ")
        await t.expect("LISTACCOUNTS other.test", r"520 ")
        await t.expect("CREATEDOMAIN mine.test", r"520 ")
        await t.expect("UPDATEDOMAINSETTINGS example.test {MaxAccounts=#1;}", r"520 ")
        await t.expect("SETACCOUNTRIGHTS postmaster ()", r"520 ")
        await t.expect("GETSERVERACCOUNTDEFAULTS", r"520 ")

    asyncio.run(main())


def test_monitors_right_reads_but_does_not_write(ctx: Any) -> None:
    import asyncio

    from .conftest import Transcript

    async def main() -> None:
        admin = Transcript(ctx)
        await _setup(admin)
        await admin.expect("CREATEACCOUNT watcher {Password=wpw;}", r"200 OK")
        await admin.expect("SETACCOUNTRIGHTS watcher (Monitors)", r"200 OK")
        t = Transcript(ctx)
        await t.login("watcher", "wpw")
        assert "example.test" in await t.data("LISTDOMAINS")
        assert "alice" in await t.data("LISTACCOUNTS example.test")
        await t.expect("GETSERVERALERTS", r"200 data follow")
        await t.expect("CREATEDOMAIN x.test", r"520 ")
        await t.expect("UPDATEACCOUNTSETTINGS alice@example.test {RealName=x;}", r"520 ")
        await t.expect("POSTSERVERALERT x", r"520 ")

    asyncio.run(main())


# -- hostile names --------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        'CREATEDOMAIN "../escape"',
        'CREATEDOMAIN "a/b"',
        'CREATEDOMAIN ".."',
        'CREATEDOMAIN "x\\000y"',
        "CREATEDOMAIN " + "a" * 300,
        'CREATEACCOUNT "../../x@example.test"',
        'CREATEACCOUNT "a/b@example.test"',
        'CREATEACCOUNT "..@example.test"',
        'CREATEACCOUNT "x\\001@example.test"',
        'CREATEACCOUNT "x\\ny@example.test"',
        "CREATEACCOUNT " + "b" * 100 + "@example.test",
        'CREATEACCOUNT "alice@../etc"',
        'RENAMEACCOUNT alice@example.test INTO "../x@example.test"',
        'GETACCOUNTSETTINGS "../../Settings/x"',
        'GETDOMAINSETTINGS "../Settings"',
    ],
)
def test_hostile_names_refused(play: Any, line: str) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        text = await t.send(line)
        assert text[:1] == "5" and text[:3] in ("501", "513"), text
        assert not t.closed
        base = t.ctx.config.base
        assert not (base.parent / "escape").exists() and not (base / "escape").exists()

    play(s)


def test_time_and_address_values_accepted_in_settings(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        await t.expect(
            "UPDATEACCOUNTSETTINGS alice@example.test {X-Since=#T02-01-2024_03:04:05; X-From=#I[10.0.0.1]:25;}",
            r"200 OK",
        )
        got = await t.data("GETACCOUNTSETTINGS alice@example.test")
        assert got["X-From"] == "[10.0.0.1]:25"
        assert "2024" in str(got["X-Since"])
        assert isinstance(datetime.datetime.now(), datetime.datetime)

    play(s)


def test_cluster_member_commands_standalone(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        members = await t.data("LISTCLUSTERMEMBERS")
        assert len(members) == 1 and members[0]["role"] == "standalone"
        assert members[0]["ready"] == "YES"
        await t.expect("SETMEMBERREADY somebody", r"502 ")  # not a cluster member
        await t.expect("SETMEMBERNONREADY somebody", r"502 ")

    play(s)


def test_cluster_member_commands_need_rights(ctx: Any) -> None:
    import asyncio

    from .conftest import Transcript

    async def main() -> None:
        admin = Transcript(ctx)
        await _setup(admin)
        t = Transcript(ctx)
        await t.login("alice@example.test", "alice-pw")
        await t.expect("LISTCLUSTERMEMBERS", r"520 ")
        await t.expect("SETMEMBERNONREADY somebody", r"520 ")
        await t.expect("GETCURRENTCONTROLLER", r"520 ")

    asyncio.run(main())


def test_aliases_forwarders_and_effective_prefs(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        await t.expect("SETACCOUNTALIASES alice@example.test (ally, a.a)", r"200 OK")
        assert sorted(await t.data("GETACCOUNTALIASES alice@example.test")) == ["a.a", "ally"]
        await t.expect('SETACCOUNTALIASES alice@example.test ("../x")', r"501 ")
        await t.expect("CREATEFORWARDER info@example.test TO someone@elsewhere.test", r"200 OK")
        assert await t.data("LISTFORWARDERS example.test") == ["info"]
        assert await t.data("GETFORWARDER info@example.test") == "someone@elsewhere.test"
        await t.expect("CREATEFORWARDER bad@example.test TO nowhere", r"501 ")
        await t.expect("DELETEFORWARDER info@example.test", r"200 OK")
        await t.expect("DELETEFORWARDER info@example.test", r"513 ")
        await t.expect("GETFORWARDER info@example.test", r"513 ")
        assert await t.data("LISTFORWARDERS example.test") == []
        await t.expect("UPDATEACCOUNTPREFS alice@example.test {Language=German;}", r"200 OK")
        eff = await t.data("GETACCOUNTEFFECTIVEPREFS alice@example.test")
        assert eff["Language"] == "German" and eff["SortOrder"] == "Date"

    play(s)
