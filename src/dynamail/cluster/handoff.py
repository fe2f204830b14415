"""Working through the owner and the Controller (Single Service Image).

A mixin of :class:`dynamail.cluster.member.ClusterMember`: everything a
member does *for* another member or *through* one — delivery hand-offs
(answered only once durable at the owner), session relays with tickets,
administrative operations of shared data executed by the Controller (then
pushed to every member as ``Changed``) and mailbox operations executed by
the account's owner, and the cluster information Admin, the API and the
launcher show.  A hand-off is served with ``LOCAL_ONLY`` set, so it never
relays a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dynamail.accounts import AccountRef
from dynamail.cluster import image, wire
from dynamail.cluster.challenge import NO_CHALLENGE
from dynamail.cluster.locator import AccountUnavailable, Relay
from dynamail.cluster.ownership import LOCAL_ONLY, account_key, goodbye_for
from dynamail.cluster.peer import PeerClosed
from dynamail.cluster.relay import TicketBook, relay
from dynamail.storage import faults

if TYPE_CHECKING:
    from dynamail.cluster.controller import Controller
    from dynamail.cluster.member import ClusterSettings
    from dynamail.cluster.ownership import ClusterLocator
    from dynamail.cluster.peer import Peer

log = logging.getLogger("dynamail.cluster")

T = TypeVar("T")


class _News(enum.Enum):
    NEWS = "news"


NEWS = _News.NEWS  # until_news(): a newer Controller became known first

NO_ADDRESS: tuple[str, int, int] = ("", 0, 0)
MAILBOX_OPS_SET = image.MAILBOX_OPS
DEFAULT_RELAY_PORTS = {"imap": 143, "pop3": 110, "imaps": 993, "pop3s": 995, "managesieve": 4190}
HANDOFF_TIMEOUT = 60.0  # a hand-off to an owner that keeps the account but stays silent


class Handoffs:
    # state owned by ClusterMember
    ctx: Any
    s: ClusterSettings
    relay_tls: Any  # ssl.SSLContext for relays to owners (when [cluster] tls)
    name: str
    controller: Controller | None
    controller_name: str
    controller_epoch: int
    backup_name: str
    addresses: dict[str, tuple[str, int, int]]
    peers: dict[str, Peer]
    locator: ClusterLocator
    tickets: TicketBook
    _inbound: set[Peer]
    _where_cache: dict[str, tuple[float, str | None]]
    _owner_news: asyncio.Event

    # provided by ClusterMember
    def is_controller(self) -> bool:
        raise NotImplementedError

    def _learn(self, name: str, address: Any) -> None:
        raise NotImplementedError

    def _all_peers(self) -> list[Peer]:
        raise NotImplementedError

    async def peer_to(self, name: str) -> Peer | None:
        raise NotImplementedError

    async def _io(self, fn: Any, *args: Any) -> Any:
        raise NotImplementedError

    async def _forward(self, msg: Any) -> wire.Message:
        raise NotImplementedError

    async def _set_ready(self, msg: wire.SetReady | wire.Drain) -> wire.Message:
        raise NotImplementedError

    def _status_reply(self, rid: int) -> wire.StatusReply:
        raise NotImplementedError

    async def remote_deliver(self, placement: Relay, message: Path | bytes, mailbox: str,
                             sender: str | None = None, delivery_id: str | None = None) -> Any:
        """``ctx.delivery.remote``: hand a message to the owner; it answers
        only once the message is durable there.  ``delivery_id`` (the copy's
        id) goes with it: an owner that already stored it answers with the
        first copy's UID, so a hand-off repeated after a lost answer stores
        nothing twice (an owner speaking only protocol version 1 gets no id:
        at least once, as before)."""
        from dynamail.delivery import DeliveryResult, temporary_failure

        ref = placement.ref
        self._learn(placement.member, (placement.host, placement.port_offset,
                                       self.addresses.get(placement.member, NO_ADDRESS)[2]
                                       or self.s.ports.get("cluster", 7070) + placement.port_offset))
        peer = await self.peer_to(placement.member)
        if peer is None:
            return temporary_failure(ref, f"owner {placement.member} not reachable", "4.4.1")
        data = message if isinstance(message, bytes) else await self._io(Path(message).read_bytes)
        try:
            handoff = asyncio.ensure_future(peer.request(
                wire.Deliver(peer.next_id(), account_key(ref), mailbox, (), data, delivery_id or "",
                             sender=sender),
                timeout=HANDOFF_TIMEOUT))
            gone = asyncio.ensure_future(self.owner_gone(ref, placement.member))
            try:
                await asyncio.wait({handoff, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                if not handoff.done():
                    # the owner is dead or paused past its lease: the copy
                    # goes to the next owner
                    handoff.cancel()
                # let the cancellation land before the outcome is read
                await asyncio.gather(gone, handoff, return_exceptions=True)
            if handoff.cancelled():
                return temporary_failure(ref, f"owner {placement.member} lost the account", "4.4.1")
            reply = handoff.result()
        except (PeerClosed, TimeoutError):
            return temporary_failure(ref, f"owner {placement.member} did not answer", "4.4.1")
        if isinstance(reply, wire.Delivered):
            return DeliveryResult(ref, True, 250, "2.0.0", "delivered", reply.uid or None, member=placement.member)
        if isinstance(reply, wire.Error):
            code = int(reply.code) if reply.code.isdigit() else 451
            return DeliveryResult(ref, False, code, "4.3.0" if code < 500 else "5.0.0", reply.text)
        return temporary_failure(ref, "unexpected reply from owner")

    async def _deliver_here(self, msg: wire.Deliver) -> wire.Message:
        delivery = getattr(self.ctx, "delivery", None)
        if delivery is None:
            return wire.Error(msg.id, "451", "delivery unavailable")
        domain, _, name = msg.account.partition("/")
        ref = AccountRef(domain, name, True)
        token = LOCAL_ONLY.set(True)
        try:
            sender = msg.sender if isinstance(msg.sender, str) else None  # None before version 4
            r = await delivery.deliver_copy(ref, msg.data, mailbox=msg.mailbox, flags=frozenset(msg.flags),
                                            sender=sender, copy=msg.delivery_id or None)
        finally:
            LOCAL_ONLY.reset(token)
        if r.ok:
            # fault injection (DYNAMAIL_FAULTS_DIR): stop here, the copy
            # durable and its answer not yet sent
            faults.point("handoff-answer")
            return wire.Delivered(msg.id, r.uid or 0)
        return wire.Error(msg.id, str(r.code), r.text)

    def make_relay_ticket(self, ref: AccountRef, client_host: str, client_port: int) -> str:
        return self.tickets.make(ref, client_host, client_port)

    def verify_relay_ticket(self, ticket: str | bytes, challenge: bytes = NO_CHALLENGE
                            ) -> tuple[AccountRef, str, int] | None:
        """``challenge``: the nonce the session issued and has just spent
        (NO_CHALLENGE when it issued none: the old, time-stamped ticket)."""
        return self.tickets.verify(ticket, challenge)

    async def relay_session(self, conn: Any, placement: Relay, protocol: str,
                            client_reply: bytes) -> bool:
        """Relay an authenticated client session to the owner.  False when the
        owner could not be reached or refused (nothing was sent to the client;
        answer it with a temporary failure)."""
        tls = self.relay_tls if self.s.tls else None
        # over TLS: the owner's implicit-TLS port (IMAPS 993, POP3S 995 plus its offset)
        name = protocol + "s" if tls is not None and protocol != "managesieve" else protocol
        port = self.s.ports.get(name, DEFAULT_RELAY_PORTS[name]) + placement.port_offset

        def ticket(challenge: bytes) -> str:
            return self.tickets.make(placement.ref, conn.peer_host, conn.peer_port, challenge)

        return await relay(conn, placement.host, port, ticket, protocol, client_reply, tls=tls,
                           owner_gone=lambda: self.owner_gone(placement.ref, placement.member),
                           goodbye=goodbye_for(protocol))

    async def owner_gone(self, ref: AccountRef, member: str) -> None:
        """Return once the Controller says, definitely, that ``member`` no
        longer holds ``ref`` (it was declared dead and the account freed or
        moved).  Asked every T/2; answers for one account are shared between
        concurrent waiters for T/4; a Controller that cannot answer (an
        election, a resynchronisation) proves nothing and is asked again.
        When a newer Controller becomes known (:meth:`ownership_news`) it is
        asked at once and then every T/8 for a lease: a member cut off with
        its accounts is replaced by a new Controller, whose answer ends the
        sessions relayed to it without waiting for the next slow poll.  News
        that arrives while a question is out (to a Controller that may be
        the one cut off, and answers nothing for T/2) abandons it and asks
        the new Controller at once."""
        key = account_key(ref)
        quick_until = 0.0
        news = self._owner_news
        while True:
            quick = time.monotonic() < quick_until
            if not news.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(news.wait(), self.s.lease / 8 if quick else self.s.lease / 2)
            if news.is_set():
                news = self._owner_news
                quick_until = time.monotonic() + self.s.lease
                quick = True
            answer = await self.until_news(self._where(key, self.s.lease / 8 if quick else self.s.lease / 4))
            if answer is NEWS:
                continue  # a newer Controller came first: ask it
            if answer is not None and answer != member:
                return

    async def until_news(self, aw: Awaitable[T]) -> T | _News:
        """``aw``'s result, or :data:`NEWS` (``aw`` cancelled) when a newer
        Controller becomes known first: a question out to a Controller that
        may be cut off is then asked again of the new one at once."""
        news = self._owner_news
        task = asyncio.ensure_future(aw)
        woken = asyncio.ensure_future(news.wait())
        try:
            await asyncio.wait({task, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, woken):
                if not t.done():
                    t.cancel()
            await asyncio.gather(task, woken, return_exceptions=True)
        if task.cancelled():
            return NEWS
        return task.result()

    def ownership_news(self) -> None:
        """A newer Controller is known (or this member became it): owners
        cached from the previous one are forgotten, and every
        :meth:`owner_gone` asks again now."""
        self._where_cache.clear()
        news, self._owner_news = self._owner_news, asyncio.Event()
        news.set()

    async def _where(self, key: str, max_age: float) -> str | None:
        """The account's owner ("" when open nowhere) as the acting
        Controller knows it, None when it cannot say now; an answer up to
        ``max_age`` seconds old is shared."""
        now = time.monotonic()
        hit = self._where_cache.get(key)
        if hit is not None and now - hit[0] < max_age:
            return hit[1]
        owner: str | None = None
        generation = self._owner_news
        if self.is_controller():
            assert self.controller is not None
            loc = self.controller.locate(key)
            owner = loc[0] if loc else None if self.controller.in_grace(now) else ""
        else:
            peer = await self.peer_to(self.controller_name)
            if peer is not None:
                with contextlib.suppress(PeerClosed, TimeoutError):
                    reply = await peer.request(wire.Locate(peer.next_id(), key), timeout=self.s.lease / 2)
                    if isinstance(reply, wire.Location):
                        owner = reply.owner
        if generation is not self._owner_news:
            return owner  # a newer Controller became known meanwhile: not cached
        if len(self._where_cache) > 10_000:
            self._where_cache.clear()
        self._where_cache[key] = (time.monotonic(), owner)
        return owner

    def changed(self, kind: str, key: str) -> None:
        """A shared object changed here: tell every member (through the Controller)."""
        msg = wire.Changed(kind, key, self.name)
        if self.controller is not None:
            for each in self._all_peers():
                with contextlib.suppress(Exception):
                    each.send(msg)
            return
        target: Peer | None = self.peers.get(self.controller_name)
        if target is None:
            for q in self._inbound:
                if q.name == self.controller_name and not q.closed:
                    target = q
        if target is not None and not target.closed:
            with contextlib.suppress(Exception):
                target.send(msg)

    def _apply_change(self, msg: wire.Changed) -> None:
        directory = getattr(self.ctx, "directory", None)
        inv = getattr(directory, "invalidate", None)
        if inv is None:
            return
        domain = msg.key.split("/", 1)[0] if msg.kind in ("domain", "account") and msg.key else None
        try:
            inv(domain)
        except Exception:
            inv(None)

    async def _admin_call(self, msg: wire.AdminCall) -> wire.Message:
        kind, _, op = msg.operation.partition(":")
        try:
            if kind == "directory" and op in image.DIRECTORY_OPS:
                if not self.is_controller():
                    return wire.AdminResult(msg.id, False, None, "AccountUnavailable",
                                            "not the controller")
                args, kwargs = image.unpack_value(msg.args[0])
                value = await self._run_directory_op(op, args, kwargs)
            elif kind == "mailbox" and op in MAILBOX_OPS_SET:
                key, args = msg.args[0], image.unpack_value(list(msg.args[1:]))
                domain, _, name = str(key).partition("/")
                async with self.locator.use(AccountRef(domain, name, True), relay_ok=False) as p:
                    assert not isinstance(p, Relay)
                    value = await getattr(p.store, op)(*args)
            else:
                return wire.AdminResult(msg.id, False, None, "BadRequest",
                                        f"{msg.operation} is not a routed operation")
        except Exception as exc:
            code = image.error_code(exc)
            if code == "AdminError":
                code = f"AdminError:{getattr(exc, 'code', 'unavailable')}"
            return wire.AdminResult(msg.id, False, None, code, str(exc))
        return wire.AdminResult(msg.id, True, image.pack_value(value), "", "")

    async def _run_directory_op(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        directory = self.ctx.directory
        value = await asyncio.to_thread(getattr(directory, op), *args, **kwargs)
        self.changed("directory", "")
        return value

    async def forward_directory_op(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Admin seam: run a shared-data mutation on the Controller."""
        if op not in image.DIRECTORY_OPS:
            raise ValueError(f"{op} is not a shared-data operation")
        deadline = time.monotonic() + 2 * self.s.lease + 2.0
        while True:
            if self.is_controller():
                return await self._run_directory_op(op, list(args), dict(kwargs))
            peer = await self.peer_to(self.controller_name)
            if peer is not None:
                call = wire.AdminCall(peer.next_id(), f"directory:{op}", "",
                                      (image.pack_value([list(args), dict(kwargs)]),))
                try:
                    reply = await peer.request(call, timeout=30.0)
                except (PeerClosed, TimeoutError):
                    # the Controller died or stalled with the call in flight: it
                    # may or may not have run; the caller gets a temporary failure
                    raise AccountUnavailable("the controller did not answer") from None
                if isinstance(reply, wire.AdminResult):
                    if reply.ok:
                        self._apply_change(wire.Changed("directory", "", self.name))
                        return image.unpack_value(reply.value)
                    if reply.code != "AccountUnavailable" or reply.text != "not the controller":
                        raise image.rebuild_error(reply.code, reply.text)
            if time.monotonic() > deadline:
                raise AccountUnavailable("no controller reachable for a shared-data operation")
            await asyncio.sleep(0.05)

    async def forward_mailbox_op(self, placement: Relay, op: str, args: tuple[Any, ...]) -> Any:
        """Admin seam: run a mailbox operation on the account's owner."""
        if op not in MAILBOX_OPS_SET:
            raise ValueError(f"{op} is not a routed mailbox operation")
        self._learn(placement.member, (placement.host, placement.port_offset,
                                       self.s.ports.get("cluster", 7070) + placement.port_offset))
        peer = await self.peer_to(placement.member)
        if peer is None:
            raise AccountUnavailable(f"owner {placement.member} not reachable")
        call = wire.AdminCall(peer.next_id(), f"mailbox:{op}", "",
                              (account_key(placement.ref), *image.pack_value(list(args))))
        try:
            reply = await peer.request(call, timeout=30.0)
        except (PeerClosed, TimeoutError):
            raise AccountUnavailable(f"owner {placement.member} did not answer") from None
        if isinstance(reply, wire.AdminResult) and reply.ok:
            return image.unpack_value(reply.value)
        if isinstance(reply, wire.AdminResult):
            raise image.rebuild_error(reply.code, reply.text)
        raise AccountUnavailable("unexpected reply from the owner")

    def current_controller(self) -> str:
        return self.controller_name

    async def members_status(self) -> list[dict[str, Any]]:
        """Every member with its role in the cluster (Controller, Backup,
        backend, frontend), ready state, load, open accounts and version."""
        st = await self.status()
        rows = []
        for m in st["members"]:
            row = dict(m)
            row["cluster_role"] = ("Controller" if m["name"] == st["controller"] else
                                   "Backup" if m["name"] == st["backup"] else m["role"])
            rows.append(row)
        return rows

    async def status(self) -> dict[str, Any]:
        """``{"controller", "backup", "members": [...]}`` as SPEC section 6 shows."""
        if self.is_controller():
            reply: wire.Message = self._status_reply(0)
        else:
            peer = await self.peer_to(self.controller_name)
            if peer is None:
                return {"controller": self.controller_name, "backup": self.backup_name,
                        "controller_epoch": self.controller_epoch, "members": []}
            try:
                reply = await peer.request(wire.StatusRequest(peer.next_id()))
            except (PeerClosed, TimeoutError):
                return {"controller": self.controller_name, "backup": self.backup_name,
                        "controller_epoch": self.controller_epoch, "members": []}
        return status_dict(reply)

    async def set_ready(self, member: str, ready: bool, drain: float | None = None) -> bool:
        """Make ``member`` Ready or Non-Ready (Admin, API); ``drain`` (a
        grace period in seconds, with Non-Ready) also moves its open accounts
        away.  Raises AdminError ("not_found", "unavailable") when that cannot
        be done."""
        msg: wire.SetReady | wire.Drain = (
            wire.Drain(0, member, int(drain * 1000)) if drain is not None and not ready
            else wire.SetReady(0, member, ready))
        reply = await self._set_ready(msg)
        if isinstance(reply, wire.Ok):
            return True
        from dynamail.admin.errors import AdminError

        text = getattr(reply, "text", "") or "no answer"
        code = "not_found" if getattr(reply, "code", "") == "not-found" else "unavailable"
        raise AdminError(code, text)

    async def locate(self, ref: AccountRef) -> str:
        key = account_key(ref)
        if self.is_controller():
            assert self.controller is not None
            loc = self.controller.locate(key)
            return loc[0] if loc else ""
        reply = await self._forward(wire.Locate(0, key))
        return reply.owner if isinstance(reply, wire.Location) else ""


def status_dict(reply: wire.Message) -> dict[str, Any]:
    if not isinstance(reply, wire.StatusReply):
        return {"controller": "", "backup": "", "members": [], "error": getattr(reply, "text", "")}
    members = []
    for name, role, alive, ready, load, open_accounts, sessions, version, host in reply.members:
        members.append({"name": name, "role": role, "alive": alive, "ready": ready, "load": load,
                        "open_accounts": open_accounts, "sessions": sessions, "version": version,
                        "host": host})
    return {"controller": reply.controller, "backup": reply.backup,
            "controller_epoch": reply.controller_epoch, "members": members}
