"""Where the account lives: relay tickets, fencing, unavailable accounts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace

from tests.imap.conftest import DOMAIN, PASSWORD, Harness
from tests.imap.test_commands import MSG1, append, tagged

from dynamail.accounts import AccountRef
from dynamail.cluster.challenge import decode_nonce
from dynamail.cluster.locator import AccountUnavailable, Placement, Relay
from dynamail.cluster.relay import TicketBook
from dynamail.storage import FileMailStore


def test_relay_ticket_opens_the_account(imap) -> None:
    async def go(h: Harness) -> None:
        book = TicketBook(b"k" * 32)
        h.ctx.cluster = SimpleNamespace(verify_relay_ticket=book.verify)
        try:
            ref = h.ctx.directory.ref(DOMAIN, "alice")
            c = await h.connect()
            assert tagged(await c.cmd("XDYNAMAIL-RELAY bogus.ticket")).startswith("NO")
            ticket = book.make(ref, "192.0.2.7", 5555)
            lines = await c.ok(f"XDYNAMAIL-RELAY {ticket}")
            assert "Logged in" in lines[-1]
            assert c.conn.peer_host == "192.0.2.7"
            await c.ok("SELECT INBOX")
            d = await h.login()
            assert tagged(await d.cmd(f"XDYNAMAIL-RELAY {ticket}")).startswith("BAD")
        finally:
            h.ctx.cluster = None
    imap(go)


def _nonce(lines: list[str]) -> bytes:
    found = [x.split(" ")[2] for x in lines if x.startswith("* XDYNAMAIL-CHALLENGE ")]
    assert len(found) == 1, lines
    nonce = decode_nonce(found[0])
    assert nonce is not None
    return nonce


def test_relay_challenge_binds_the_ticket_to_its_connection(imap) -> None:
    async def go(h: Harness) -> None:
        book = TicketBook(b"k" * 32)
        h.ctx.cluster = SimpleNamespace(verify_relay_ticket=book.verify)
        try:
            ref = h.ctx.directory.ref(DOMAIN, "alice")
            c = await h.connect()
            lines = await c.ok("XDYNAMAIL-CHALLENGE")
            assert lines[-1].endswith("OK XDYNAMAIL-CHALLENGE completed")
            nonce = _nonce(lines)
            # one challenge per connection
            assert tagged(await c.cmd("XDYNAMAIL-CHALLENGE")).startswith("NO [CLIENTBUG]")
            assert tagged(await c.cmd("XDYNAMAIL-CHALLENGE extra")).startswith("BAD")
            ticket = book.make(ref, "192.0.2.7", 5555, nonce)
            # captured and presented on another connection, with or without its own challenge
            d = await h.connect()
            assert tagged(await d.cmd(f"XDYNAMAIL-RELAY {ticket}")).startswith("NO")
            e = await h.connect()
            _nonce(await e.ok("XDYNAMAIL-CHALLENGE"))
            assert tagged(await e.cmd(f"XDYNAMAIL-RELAY {ticket}")).startswith("NO [AUTHENTICATIONFAILED]")
            # the connection that issued the nonce accepts it
            lines = await c.ok(f"XDYNAMAIL-RELAY {ticket}")
            assert "Logged in" in lines[-1]
            assert c.conn.peer_host == "192.0.2.7"
            await c.ok("SELECT INBOX")
            assert tagged(await c.cmd("XDYNAMAIL-CHALLENGE")).startswith("BAD")  # authenticated now
        finally:
            h.ctx.cluster = None
    imap(go)


def test_relay_challenge_is_spent_by_the_first_ticket(imap) -> None:
    async def go(h: Harness) -> None:
        book = TicketBook(b"k" * 32)
        h.ctx.cluster = SimpleNamespace(verify_relay_ticket=book.verify)
        try:
            ref = h.ctx.directory.ref(DOMAIN, "alice")
            c = await h.connect()
            nonce = _nonce(await c.ok("XDYNAMAIL-CHALLENGE"))
            for bad in ("bogus.ticket", "!!!.???", '"%%%%.&&&&"', book.make(ref, "h", 1)):  # old form: no downgrade
                c2 = await h.connect()
                _nonce(await c2.ok("XDYNAMAIL-CHALLENGE"))
                assert tagged(await c2.cmd(f"XDYNAMAIL-RELAY {bad}")).startswith("NO"), bad
            assert tagged(await c.cmd("XDYNAMAIL-RELAY bogus.ticket")).startswith("NO")
            # a wrong ticket spent the nonce: the right one no longer opens the account
            lines = await c.cmd(f"XDYNAMAIL-RELAY {book.make(ref, 'h', 1, nonce)}")
            assert tagged(lines).startswith("NO [AUTHENTICATIONFAILED] Relay challenge already used")
            assert tagged(await c.cmd("XDYNAMAIL-CHALLENGE")).startswith("NO")
            # the old time-stamped form still works on a connection that asked for no challenge
            d = await h.connect()
            assert "Logged in" in (await d.ok(f"XDYNAMAIL-RELAY {book.make(ref, 'h', 2)}"))[-1]
        finally:
            h.ctx.cluster = None
    imap(go)


class _Elsewhere:
    """A locator whose accounts live on another member, or nowhere."""

    def __init__(self, unavailable: bool) -> None:
        self.unavailable = unavailable

    @contextlib.asynccontextmanager
    async def use(self, ref: AccountRef, *, relay_ok: bool = True) -> AsyncIterator[Placement]:
        if self.unavailable:
            raise AccountUnavailable(ref)
        yield Relay(ref, "member2", "127.0.4.99", 0)

    def open_accounts(self) -> list[AccountRef]:
        return []

    async def close(self) -> None:
        pass


def test_unavailable_and_unreachable_owner(imap) -> None:
    async def go(h: Harness) -> None:
        real = h.ctx.accounts
        try:
            h.ctx.accounts = _Elsewhere(unavailable=True)  # type: ignore[assignment]
            c = await h.connect()
            assert tagged(await c.cmd(f"LOGIN alice {PASSWORD}")) == "NO [UNAVAILABLE] Account temporarily unavailable"
            relayed: list[bytes] = []

            async def relay_session(conn: object, placement: Relay, protocol: str, client_reply: bytes) -> bool:
                relayed.append(client_reply)
                return False

            h.ctx.cluster = SimpleNamespace(relay_session=relay_session)
            h.ctx.accounts = _Elsewhere(unavailable=False)  # type: ignore[assignment]
            lines = await c.cmd(f"LOGIN alice {PASSWORD}", tag="r1")
            assert lines == ["r1 NO [UNAVAILABLE] Account temporarily unavailable"]
            assert relayed and relayed[0].startswith(b"r1 OK [CAPABILITY ")
            await c.ok("NOOP")
        finally:
            h.ctx.accounts = real
            h.ctx.cluster = None
    imap(go)


def test_fenced_store_ends_the_session(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1)
        await c.ok("SELECT INBOX")
        ref = h.ctx.directory.ref(DOMAIN, "alice")
        newer = await FileMailStore().open_account(h.ctx.directory.account_mail_path(ref), 1000)
        try:
            lines = await c.cmd("STORE 1 +FLAGS (\\Seen)", tag="f1")
            rest = lines + ([await c.line()] if not any(x.startswith("* BYE") for x in lines) else [])
            assert any(x.startswith("* BYE [UNAVAILABLE]") for x in rest), rest
            assert any(x.startswith("f1 NO [UNAVAILABLE]") for x in rest), rest
        finally:
            await newer.close()
    imap(go)


def test_closed_store_is_a_temporary_failure_not_a_server_bug(imap) -> None:
    """The store closed under a session (the member lost the account):
    ``NO [UNAVAILABLE]`` and the session ends with ``* BYE [UNAVAILABLE]``,
    never ``[SERVERBUG]``."""
    async def go(h: Harness) -> None:
        c = await h.login()
        await append(c, MSG1)
        await c.ok("SELECT INBOX")
        ref = h.ctx.directory.ref(DOMAIN, "alice")
        async with h.ctx.accounts.use(ref) as placement:
            await placement.store.close()  # type: ignore[union-attr]
        lines = await c.cmd("FETCH 1 (BODY[])", tag="x1")
        rest = lines + ([await c.line()] if not any(x.startswith("* BYE") for x in lines) else [])
        assert not any("SERVERBUG" in x for x in rest), rest
        assert any(x.startswith("x1 NO [UNAVAILABLE]") for x in rest), rest
        assert any(x.startswith("* BYE [UNAVAILABLE]") for x in rest), rest
    imap(go)


def test_relayed_session_gets_pipelined_commands(imap) -> None:
    async def go(h: Harness) -> None:
        real = h.ctx.accounts
        seen: list[bytes] = []

        async def relay_session(conn, placement: Relay, protocol: str, client_reply: bytes) -> bool:  # type: ignore[no-untyped-def]
            conn.write(client_reply)
            seen.append(await conn.read(1000))
            return True

        try:
            h.ctx.cluster = SimpleNamespace(relay_session=relay_session)
            h.ctx.accounts = _Elsewhere(unavailable=False)  # type: ignore[assignment]
            c = await h.connect()
            await c.raw(f"r1 LOGIN alice {PASSWORD}\r\nr2 SELECT INBOX\r\n".encode())
            assert (await c.until_tagged("r1"))[-1].startswith("r1 OK [CAPABILITY")
            await h.tasks[-1]
            assert seen == [b"r2 SELECT INBOX\r\n"]
        finally:
            h.ctx.accounts = real
            h.ctx.cluster = None
    imap(go)
