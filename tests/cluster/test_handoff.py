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


class _SilentController:
    """A peer link to a Controller that is cut off: questions are sent and
    never answered (the request waits for its timeout)."""

    def __init__(self) -> None:
        self.asked = 0
        self.answer: asyncio.Future[object] | None = None

    def next_id(self) -> int:
        return 1

    async def request(self, msg: object, timeout: float) -> object:
        self.asked += 1
        self.answer = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(self.answer, timeout)


class _Follower(_Member):
    """A member that is not the Controller: it asks the Controller's link."""

    def __init__(self, lease: float) -> None:
        super().__init__(lease)
        self.acting = False
        self.controller_name = "b2"
        self.link = _SilentController()

    def is_controller(self) -> bool:
        return self.acting

    async def peer_to(self, name: str) -> _SilentController:
        return self.link


def test_news_abandons_a_question_out_to_a_silent_controller() -> None:
    """The question to the old Controller (cut off) would wait T/2 = 500 s;
    the news that this member became Controller ends the wait at once, with
    the new map's answer."""

    async def scenario() -> None:
        m = _Follower(lease=1000.0)
        waiting = asyncio.ensure_future(m.owner_gone(REF, "b2"))
        await asyncio.sleep(0.01)
        m.ownership_news()  # news of a Controller that is not this member: asked, silent
        await asyncio.sleep(0.05)
        assert m.link.asked == 1 and not waiting.done()
        m.acting, m.owner = True, ""  # this member took over; b2's accounts are free
        m.ownership_news()
        await asyncio.wait_for(waiting, 5.0)
        assert m.link.answer is not None and m.link.answer.cancelled()

    asyncio.run(scenario())


def test_an_answer_that_crossed_a_change_of_controller_is_not_cached() -> None:
    from dynamail.cluster import wire

    async def scenario() -> None:
        m = _Follower(lease=1000.0)
        asking = asyncio.ensure_future(m._where("chaos.test/u1", 10.0))
        await asyncio.sleep(0.05)
        m.ownership_news()  # a newer Controller, while the old one's answer is on its way
        assert m.link.answer is not None
        m.link.answer.set_result(wire.Location(1, "chaos.test/u1", "b2", 7, ("", 0, 0)))
        assert await asyncio.wait_for(asking, 5.0) == "b2"
        assert "chaos.test/u1" not in m._where_cache

    asyncio.run(scenario())


def test_until_news_passes_results_and_errors_through() -> None:
    from dynamail.cluster.handoff import NEWS

    async def boom() -> None:
        raise TimeoutError

    async def scenario() -> None:
        m = _Member(lease=1.0)
        assert await m.until_news(asyncio.sleep(0, "x")) == "x"
        try:
            await m.until_news(boom())
        except TimeoutError:
            pass
        else:
            raise AssertionError("the error was swallowed")
        pending = asyncio.ensure_future(m.until_news(asyncio.sleep(100)))
        await asyncio.sleep(0.01)
        m.ownership_news()
        assert await asyncio.wait_for(pending, 5.0) is NEWS

    asyncio.run(scenario())
