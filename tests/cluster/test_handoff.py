"""Waiting for an owner to lose an account (``Handoffs.owner_gone``): the
wait that ends a relayed session or a delivery hand-off to an owner that
is cut off, paused or dead."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from dynamail.accounts import AccountRef
from dynamail.cluster.handoff import Handoffs

REF = AccountRef("chaos.test", "u1", True)


class _Member(Handoffs):
    """The acting Controller is this member; its map says who owns what."""

    def __init__(self, lease: float) -> None:
        self.s = SimpleNamespace(lease=lease)  # type: ignore[assignment]
        self._where_cache = {}
        self._owner_news = asyncio.Event()
        self.owner = "b2"
        self.asked = 0
        member = self

        class Map:
            def locate(self, key: str) -> tuple[str, int] | None:
                member.asked += 1
                return (member.owner, 7) if member.owner else None

            def in_grace(self, now: float) -> bool:
                return False

        self.controller = Map()  # type: ignore[assignment]

    def is_controller(self) -> bool:
        return True


def test_a_new_controller_is_asked_at_once_not_at_the_next_poll() -> None:
    """The lease is so long that the regular poll (T/2) never comes within
    the test: only the news of a newer Controller can end the wait."""

    async def scenario() -> None:
        m = _Member(lease=1000.0)
        waiting = asyncio.ensure_future(m.owner_gone(REF, "b2"))
        await asyncio.sleep(0.05)
        assert not waiting.done() and m.asked == 0
        m.ownership_news()  # b2 still owns it: the wait goes on
        await asyncio.sleep(0.05)
        assert not waiting.done() and m.asked == 1
        m.owner = "b3"  # a newer Controller granted it elsewhere
        m.ownership_news()
        await asyncio.wait_for(waiting, 5.0)

    asyncio.run(scenario())


def test_answers_cached_from_the_previous_controller_are_not_used() -> None:
    async def scenario() -> None:
        m = _Member(lease=1000.0)
        m._where_cache["chaos.test/u1"] = (time.monotonic(), "b2")
        m._where_cache["other"] = (time.monotonic(), "b2")
        m.ownership_news()
        assert m._where_cache == {}

    asyncio.run(scenario())


def test_without_news_the_owner_is_asked_at_the_regular_poll() -> None:
    async def scenario() -> None:
        m = _Member(lease=0.2)  # polls every 0.1 s
        m.owner = ""  # freed: open nowhere
        await asyncio.wait_for(m.owner_gone(REF, "b2"), 5.0)
        assert m.asked >= 1

    asyncio.run(scenario())
