"""Relaying a client session to the member that owns its account.

The receiving member has authenticated the client; it connects to the
owner's IMAP or POP3 port (ManageSieve: its port, then STARTTLS) and, in
the not-authenticated state there, first asks for a challenge
(``XDYNAMAIL-CHALLENGE``: a random nonce the owner issues once per
connection, :mod:`dynamail.cluster.challenge`), then sends
``XDYNAMAIL-RELAY <ticket>`` (IMAP: with a tag).  The ticket names the
account and the client's real address, carries the owner's nonce and is
sealed with the cluster secret:

    ticket = base64url(msgpack([account, client host, client port, nonce]))
             "." base64url(HMAC-SHA256(secret, "relay-challenge|" | payload)[:16])

The owner accepts it only on the connection that issued the nonce, once.
No wall-clock time is involved, so the members' clocks may differ by any
amount (the project's rule: wall clocks do not matter to correctness or
availability).

Rolling upgrade: an owner of an earlier release answers the challenge
command with BAD (POP3 ``-ERR``, ManageSieve ``NO``); the relaying member
then sends the old, time-stamped ticket

    ticket = base64url(msgpack([account, client host, client port, time, nonce]))
             "." base64url(HMAC-SHA256(secret, "relay|" | payload)[:16])

which an owner still accepts on a connection that asked for no challenge:
valid for ``RELAY_TICKET_VALIDITY`` seconds of wall-clock time, its nonce
remembered so that it is single use.  (The two MACs are kept apart by their
prefixes, so neither form can be passed off as the other.)

Once the owner answers OK, the client is sent ``client_reply`` (the reply
to its LOGIN/PASS) and bytes are copied both ways as they arrive,
unbuffered, so IMAP IDLE notifications reach the client at once.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from dynamail.accounts import AccountRef
from dynamail.cluster import limits
from dynamail.cluster.challenge import NO_CHALLENGE, decode_nonce

MAX_TICKET = 1024
RELAY_LINE_LIMIT = 8192  # one response line of the owner before the relay is up
RELAY_EARLY_LIMIT = 256 * 1024  # all untagged lines before it (alerts)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


MAC_OLD = b"relay|"  # the time-stamped ticket of earlier releases
MAC_CHALLENGED = b"relay-challenge|"  # the ticket bound to the owner's challenge

#: how a relay ticket is made for one connection: given the owner's nonce,
#: or NO_CHALLENGE for the old form
TicketMaker = Callable[[bytes], str]


class TicketBook:
    """Makes and checks relay tickets; remembers the nonces of used
    time-stamped tickets (challenged tickets need no memory: the owner's
    session spends its nonce)."""

    def __init__(self, secret: bytes, validity: float = limits.RELAY_TICKET_VALIDITY) -> None:
        self._secret = secret
        self._validity = validity
        self._used: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def _mac(self, payload: bytes, kind: bytes = MAC_OLD) -> bytes:
        # 128 bits of HMAC-SHA256: a ticket must fit a POP3 command line
        # (RFC 2449 section 4: 255 octets)
        return hmac.new(self._secret, kind + payload, hashlib.sha256).digest()[:16]

    def make(self, ref: AccountRef, client_host: str, client_port: int,
             challenge: bytes = NO_CHALLENGE) -> str:
        """A ticket bound to the owner's ``challenge`` nonce; without one,
        the old time-stamped form (for an owner of an earlier release)."""
        account = f"{ref.domain}/{ref.name}"
        if challenge:
            payload = msgpack.packb([account, client_host, client_port, challenge])
            return _b64(payload) + "." + _b64(self._mac(payload, MAC_CHALLENGED))
        payload = msgpack.packb([account, client_host, client_port,
                                 int(time.time()), secrets.token_bytes(12)])
        return _b64(payload) + "." + _b64(self._mac(payload))

    def verify(self, ticket: str | bytes, challenge: bytes = NO_CHALLENGE
               ) -> tuple[AccountRef, str, int] | None:
        """(account, client host, client port) of a valid ticket, else None.
        ``challenge`` is the nonce this connection was issued (and has just
        spent): then only a ticket carrying exactly that nonce is valid.
        With NO_CHALLENGE only the old, time-stamped form is, under its
        wall-clock and replay checks."""
        if isinstance(ticket, bytes):
            try:
                ticket = ticket.decode("ascii")
            except UnicodeDecodeError:
                return None
        if len(ticket) > MAX_TICKET or ticket.count(".") != 1:
            return None
        body, mac = ticket.split(".")
        try:
            payload, tag = _unb64(body), _unb64(mac)
            if not hmac.compare_digest(self._mac(payload, MAC_CHALLENGED if challenge else MAC_OLD), tag):
                return None
            fields = msgpack.unpackb(payload)
            if challenge:
                account, host, port, nonce = fields
            else:
                account, host, port, stamp, nonce = fields
            domain, name = str(account).split("/", 1)
            host, port = str(host), int(port)
        except Exception:
            return None
        if challenge:
            if not isinstance(nonce, bytes) or not hmac.compare_digest(nonce, challenge):
                return None
            return AccountRef(domain, name, True), host, port
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            return None
        now = time.time()
        if abs(now - stamp) > self._validity:
            return None
        while self._used and next(iter(self._used.values())) < now - 2 * self._validity:
            self._used.popitem(last=False)
        if not isinstance(nonce, bytes) or nonce in self._used:
            return None
        self._used[nonce] = now
        return AccountRef(domain, name, True), host, port


async def _pump_client_to_owner(conn: Any, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await conn.read(65536, timeout=conn.idle_timeout)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(Exception):
        writer.write_eof()


async def _pump_owner_to_client(reader: asyncio.StreamReader, conn: Any) -> None:
    while True:
        data = await reader.read(65536)
        if not data:
            break
        await conn.send(data)


async def _managesieve_lines(reader: asyncio.StreamReader, first: bytes, timeout: float) -> bytes | None:
    """Read a ManageSieve response up to its OK/NO/BYE line; that line, or None."""
    line, total = first, 0
    while True:
        if not line:
            return None
        total += len(line)
        if total > RELAY_EARLY_LIMIT:
            return None
        if line[:2].upper() == b"OK" or line[:2].upper() == b"NO" or line[:3].upper() == b"BYE":
            return line
        line = await asyncio.wait_for(reader.readline(), timeout)


async def _imap_challenge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          timeout: float) -> bytes | None:
    """``R0 XDYNAMAIL-CHALLENGE``: the owner's nonce; NO_CHALLENGE when it
    does not know the command (an earlier release: BAD, or NO); None when
    its answer makes no sense (the relay is abandoned)."""
    writer.write(b"R0 XDYNAMAIL-CHALLENGE\r\n")
    nonce: bytes | None = None
    total = 0
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        total += len(line)
        if not line or len(line) > RELAY_LINE_LIMIT or total > RELAY_EARLY_LIMIT:
            return None
        if line.startswith(b"R0 "):
            status = line[3:].rstrip(b"\r\n").split(b" ", 1)[0].upper()
            if status == b"OK":
                return nonce
            return NO_CHALLENGE if status in (b"BAD", b"NO") else None
        words = line.rstrip(b"\r\n").split(b" ")
        if len(words) == 3 and words[0] == b"*" and words[1].upper() == b"XDYNAMAIL-CHALLENGE":
            if nonce is not None:
                return None
            nonce = decode_nonce(words[2])
            if nonce is None:
                return None


async def _pop3_challenge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          timeout: float) -> bytes | None:
    """``XDYNAMAIL-CHALLENGE`` -> ``+OK <nonce>``; ``-ERR`` from an earlier
    release: NO_CHALLENGE; None for anything else."""
    writer.write(b"XDYNAMAIL-CHALLENGE\r\n")
    line = await asyncio.wait_for(reader.readline(), timeout)
    if line.startswith(b"-ERR"):
        return NO_CHALLENGE
    words = line.rstrip(b"\r\n").split(b" ")
    if len(line) > RELAY_LINE_LIMIT or len(words) != 2 or words[0] != b"+OK":
        return None
    return decode_nonce(words[1])


_SIEVE_CHALLENGE = re.compile(rb'OK \(XDYNAMAIL-CHALLENGE "([A-Za-z0-9_-]{1,128})"\)', re.IGNORECASE)


async def _managesieve_challenge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                 timeout: float) -> bytes | None:
    """``XDYNAMAIL-CHALLENGE`` -> ``OK (XDYNAMAIL-CHALLENGE "<nonce>")``
    (the nonce in a response code, as RFC 5804 section 1.3 carries SASL
    data); ``NO`` from an earlier release: NO_CHALLENGE; None otherwise."""
    writer.write(b"XDYNAMAIL-CHALLENGE\r\n")
    end = await _managesieve_lines(reader, await asyncio.wait_for(reader.readline(), timeout), timeout)
    if end is None:
        return None
    if end[:2].upper() == b"NO":
        return NO_CHALLENGE
    m = _SIEVE_CHALLENGE.match(end)
    return decode_nonce(m.group(1)) if m is not None else None


async def _managesieve_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: bytes,
                             ticket: TicketMaker, tls: ssl.SSLContext | None, host: str, timeout: float
                             ) -> tuple[bool, asyncio.StreamReader, asyncio.StreamWriter]:
    """RFC 5804: greeting (capabilities, OK), STARTTLS when the cluster runs
    TLS (capabilities again), the challenge, then ``XDYNAMAIL-RELAY "<ticket>"``."""
    end = await _managesieve_lines(reader, greeting, timeout)
    if end is None or not end.upper().startswith(b"OK"):
        return False, reader, writer
    if tls is not None:
        writer.write(b"STARTTLS\r\n")
        end = await _managesieve_lines(reader, await asyncio.wait_for(reader.readline(), timeout), timeout)
        if end is None or not end.upper().startswith(b"OK"):
            return False, reader, writer
        await writer.start_tls(tls, server_hostname=host)
        end = await _managesieve_lines(reader, await asyncio.wait_for(reader.readline(), timeout), timeout)
        if end is None or not end.upper().startswith(b"OK"):
            return False, reader, writer
    nonce = await _managesieve_challenge(reader, writer, timeout)
    if nonce is None:
        return False, reader, writer
    writer.write(b'XDYNAMAIL-RELAY "' + ticket(nonce).encode() + b'"\r\n')
    end = await _managesieve_lines(reader, await asyncio.wait_for(reader.readline(), timeout), timeout)
    return end is not None and end.upper().startswith(b"OK"), reader, writer


async def relay(conn: Any, host: str, port: int, ticket: TicketMaker, protocol: str,
                client_reply: bytes, connect_timeout: float = 3.0,
                tls: ssl.SSLContext | None = None,
                owner_gone: Callable[[], Awaitable[None]] | None = None,
                goodbye: bytes = b"") -> bool:
    """Open the relayed session at the owner; False if the owner refused
    (the caller then answers the client with a temporary failure).
    ``ticket`` makes the ticket from the nonce the owner issues on this
    connection (NO_CHALLENGE from an owner of an earlier release).  With
    ``tls``, ``port`` is the owner's implicit-TLS port (IMAPS, POP3S).
    ``owner_gone`` returns once the owner no longer holds the account (it
    died or was paused past its lease and the account was freed): the
    client is then told ``goodbye`` and the relay ends, so that it
    reconnects to the account's next owner at once instead of waiting on a
    silent one."""
    try:
        # ManageSieve has no implicit-TLS port: its relay upgrades with STARTTLS
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=None if protocol == "managesieve" else tls),
            connect_timeout)
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    try:
        greeting = await asyncio.wait_for(reader.readline(), connect_timeout)
        if not greeting:
            return False
        early = b""  # untagged responses of the owner's login ([ALERT]s): the client's
        if protocol == "imap":
            nonce = await _imap_challenge(reader, writer, connect_timeout)
            if nonce is None:
                return False
            writer.write(b"R1 XDYNAMAIL-RELAY " + ticket(nonce).encode() + b"\r\n")
            while True:
                line = await asyncio.wait_for(reader.readline(), connect_timeout)
                if not line:
                    return False
                if line.startswith(b"R1 "):
                    ok = line[3:5].upper() == b"OK"
                    break
                if len(line) > RELAY_LINE_LIMIT or len(early) > RELAY_EARLY_LIMIT:
                    return False
                early += line
        elif protocol == "managesieve":
            ok, reader, writer = await _managesieve_relay(reader, writer, greeting, ticket, tls, host,
                                                          connect_timeout)
        else:
            nonce = await _pop3_challenge(reader, writer, connect_timeout)
            if nonce is None:
                return False
            writer.write(b"XDYNAMAIL-RELAY " + ticket(nonce).encode() + b"\r\n")
            line = await asyncio.wait_for(reader.readline(), connect_timeout)
            ok = line.startswith(b"+OK")
        if not ok:
            return False
        # untagged lines precede the tagged completion of the client's LOGIN
        await conn.send(early + client_reply)
        up = asyncio.ensure_future(_pump_client_to_owner(conn, writer))
        down = asyncio.ensure_future(_pump_owner_to_client(reader, conn))
        tasks = {up, down}
        gone = asyncio.ensure_future(owner_gone()) if owner_gone is not None else None
        if gone is not None:
            tasks.add(gone)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if gone is not None and gone.done() and not gone.cancelled() and gone.exception() is None:
                if goodbye:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.send(goodbye), 1.0)
            elif up.done() and not down.done():
                # client finished sending: let the owner's last replies through
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(down), 5.0)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return True
    except (OSError, TimeoutError, ConnectionError):
        return False
    finally:
        writer.close()
