"""The admin CLI's DKIM key commands (dynamail extensions) through a real Admin
and directory: create (both algorithms), show with the DNS records, rotate, rights."""

from __future__ import annotations

from typing import Any

from .test_commands import _setup


def test_domain_dkim(play: Any) -> None:
    async def s(t: Any) -> None:
        await _setup(t)
        assert await t.data("GETDOMAINDKIM example.test") == {}
        made = await t.data("CREATEDOMAINDKIM example.test ALGORITHM ed25519 SELECTOR e1")
        assert made["e1"]["Active"] == "YES" and made["e1"]["Algorithm"] == "ed25519"
        assert made["e1"]["Name"] == "e1._domainkey.example.test"
        assert made["e1"]["TXT"].startswith("v=DKIM1; k=ed25519; p=")
        await t.expect("CREATEDOMAINDKIM example.test ALGORITHM dsa", r"5\d\d ")
        await t.expect("CREATEDOMAINDKIM example.test ALGORITHM ed25519 SELECTOR e1", r"5\d\d ")
        rotated = await t.data("ROTATEDOMAINDKIM example.test")
        assert rotated["e1"]["Active"] == "NO"
        assert [k for k, v in rotated.items() if v["Active"] == "YES"] != ["e1"]
        assert await t.data("GETDOMAINDKIM example.test") == rotated

    play(s)
