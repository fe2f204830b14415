"""The content-filter hook, second kind: any milter (the Sendmail/Postfix
milter protocol, version 6) before the final answer at the end of DATA on
port 25 (``[smtp] milter = "host:port"``).

The server plays the MTA's part: option negotiation, then CONNECT, HELO,
MAIL, RCPT, the header fields, end of header, the body in chunks and end of
message, honouring the steps the filter asks to skip.  The filter's answers:

* ``accept`` / ``continue``: accept, with the header fields the filter
  added (``h``) or inserted (``i``) at the end of message;
* ``reject`` → ``550 5.7.1``, ``tempfail`` → ``451 4.7.1``, a reply code of
  its own (``y``) → that reply (only 4xx/5xx are taken);
* ``discard`` → accepted and not stored (the filter's decision).

Changes to other header fields, the body or the recipients, and quarantine,
are not applied (logged).  A filter that is down, slow or breaks the
protocol fails open or closed like Rspamd (``[smtp] filter_fail_open``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamail.mailauth.signing import read_head

__all__ = ["MilterFilter", "MilterVerdict"]

log = logging.getLogger("dynamail.filter")

VERSION = 6
# actions offered (SMFIF_ADDHDRS … SMFIF_SETSYMLIST): libmilter refuses a
# negotiation that lacks one its filter declares; only added and inserted
# header fields are applied, the rest is logged
ACTIONS = 0x1FF
# steps we can leave out when the filter asks (SMFIP_NO*: connect … data, no NR flags)
PROTOCOL = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200
NOCONNECT, NOHELO, NOMAIL, NORCPT, NOBODY, NOHDRS, NOEOH, NODATA = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x200
MAX_PACKET = 1024 * 1024
BODY_CHUNK = 65535
HEAD_LIMIT = 256 * 1024


class MilterError(Exception):
    pass


@dataclass
class MilterVerdict:
    action: str  # "accept" | "reject" | "defer" | "discard"
    code: int = 0
    status: str = ""
    text: str = ""
    added: list[tuple[str, str]] = field(default_factory=list)  # fields to put in front


def parse_address(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("inet:"):  # Postfix notation inet:host:port
        text = text[5:]
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def header_fields(head: bytes) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + "\r\n" + line.decode("utf-8", "replace"))
            continue
        fname, colon, fvalue = line.partition(b":")
        if colon:
            fields.append((fname.decode("utf-8", "replace"), fvalue.decode("utf-8", "replace").lstrip(" ")))
    return fields


def _head_end(data: bytes) -> int:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return i + len(sep)
    return len(data)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, cmd: bytes, data: bytes = b"") -> None:
        self.writer.write(struct.pack("!I", len(data) + 1) + cmd + data)
        await self.writer.drain()

    async def read(self) -> tuple[bytes, bytes]:
        (size,) = struct.unpack("!I", await self.reader.readexactly(4))
        if not 1 <= size <= MAX_PACKET:
            raise MilterError(f"bad packet size {size}")
        packet = await self.reader.readexactly(size)
        return packet[:1], packet[1:]


class MilterFilter:
    def __init__(self, address: str, *, timeout: float = 15.0, fail_open: bool = True) -> None:
        self.host, self.port = parse_address(address)
        self.timeout = timeout
        self.fail_open = fail_open

    @classmethod
    def for_context(cls, ctx: Any) -> MilterFilter | None:
        smtp = ctx.config.smtp
        address = getattr(smtp, "milter", "")
        if not address:
            return None
        flt: MilterFilter | None = ctx.extras.get("milter")
        if flt is None:
            flt = cls(address, timeout=float(getattr(smtp, "filter_timeout", 15.0)),
                      fail_open=bool(getattr(smtp, "filter_fail_open", True)))
            ctx.extras["milter"] = flt
        return flt

    async def scan(self, content: Path | bytes, *, ip: str, helo: str, mail_from: str,
                   rcpts: Sequence[str], hostname: str, queue_id: str) -> MilterVerdict:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._session(content, ip, helo, mail_from, rcpts, hostname, queue_id)
        except (TimeoutError, OSError, MilterError, asyncio.IncompleteReadError, struct.error, ValueError) as exc:
            log.warning("milter %s:%d unavailable (%s); failing %s", self.host, self.port,
                        str(exc) or type(exc).__name__, "open" if self.fail_open else "closed")
            if self.fail_open:
                return MilterVerdict("accept")
            return MilterVerdict("defer", 451, "4.7.1", "Content filter unavailable; try again later")

    async def _session(self, content: Path | bytes, ip: str, helo: str, mail_from: str,
                       rcpts: Sequence[str], hostname: str, queue_id: str) -> MilterVerdict:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        conn = _Conn(reader, writer)
        try:
            await conn.send(b"O", struct.pack("!III", VERSION, ACTIONS, PROTOCOL))
            cmd, data = await conn.read()
            if cmd != b"O" or len(data) < 12:
                raise MilterError("no option negotiation")
            _version, _actions, skip = struct.unpack("!III", data[:12])
            macros = b"j\x00" + hostname.encode() + b"\x00i\x00" + queue_id.encode() + b"\x00"
            steps: list[tuple[int, bytes, bytes]] = []
            family = b"6" if ":" in ip else b"4"
            steps.append((NOCONNECT, b"C", b"[" + ip.encode() + b"]\x00" + family + struct.pack("!H", 0)
                          + ip.encode() + b"\x00"))
            steps.append((NOHELO, b"H", helo.encode() + b"\x00"))
            steps.append((NOMAIL, b"M", f"<{mail_from}>".encode() + b"\x00"))
            steps += [(NORCPT, b"R", f"<{r}>".encode() + b"\x00") for r in rcpts]
            for flag, cmd_, payload in steps:
                if skip & flag:
                    continue
                if cmd_ == b"C":
                    await conn.send(b"D", b"C" + macros)
                verdict = await self._answer(conn, cmd_, payload)
                if verdict is not None:
                    return verdict
            if not skip & NODATA:
                verdict = await self._answer(conn, b"T", b"")
                if verdict is not None:
                    return verdict
            head = read_head(content)
            end = _head_end(head)
            if not skip & NOHDRS:
                for name, value in header_fields(head[:end]):
                    verdict = await self._answer(conn, b"L", name.encode() + b"\x00" + value.encode() + b"\x00")
                    if verdict is not None:
                        return verdict
            if not skip & NOEOH:
                verdict = await self._answer(conn, b"N", b"")
                if verdict is not None:
                    return verdict
            if not skip & NOBODY:
                verdict = await self._body(conn, content, end)
                if verdict is not None:
                    return verdict
            return await self._end(conn)
        finally:
            writer.close()

    async def _answer(self, conn: _Conn, cmd: bytes, payload: bytes) -> MilterVerdict | None:
        """Send one step; None to go on, or the filter's final verdict."""
        await conn.send(cmd, payload)
        while True:
            reply, data = await conn.read()
            if reply == b"p":  # progress: keep waiting
                continue
            if reply == b"c":
                return None
            return self._final(reply, data, [])

    async def _body(self, conn: _Conn, content: Path | bytes, start: int) -> MilterVerdict | None:
        if isinstance(content, bytes):
            for i in range(start, len(content), BODY_CHUNK):
                verdict = await self._answer(conn, b"B", content[i:i + BODY_CHUNK])
                if verdict is not None:
                    return verdict
            return None
        with open(content, "rb") as fh:
            fh.seek(start)
            while chunk := fh.read(BODY_CHUNK):
                verdict = await self._answer(conn, b"B", chunk)
                if verdict is not None:
                    return verdict
        return None

    async def _end(self, conn: _Conn) -> MilterVerdict:
        await conn.send(b"E")
        added: list[tuple[str, str]] = []
        while True:
            reply, data = await conn.read()
            if reply in (b"h", b"i"):
                if reply == b"i":
                    data = data[4:]
                name, _, rest = data.partition(b"\x00")
                added.append((name.decode("utf-8", "replace"), rest.rstrip(b"\x00").decode("utf-8", "replace")))
            elif reply in (b"p",):
                continue
            elif reply in (b"m", b"b", b"+", b"-", b"q", b"e", b"2"):
                log.info("milter asked for a change that is not applied (%r)", reply)
            else:
                return self._final(reply, data, added)

    def _final(self, reply: bytes, data: bytes, added: list[tuple[str, str]]) -> MilterVerdict:
        if reply in (b"a", b"c"):
            return MilterVerdict("accept", added=added)
        if reply == b"r":
            return MilterVerdict("reject", 550, "5.7.1", "Message rejected by the content filter")
        if reply == b"t":
            return MilterVerdict("defer", 451, "4.7.1", "Try again later")
        if reply == b"d":
            return MilterVerdict("discard")
        if reply == b"y":
            text = data.rstrip(b"\x00").decode("utf-8", "replace")
            code_text, _, rest = text.partition(" ")
            if code_text.isdigit() and code_text[0] in "45" and len(code_text) == 3:
                status, _, message = rest.partition(" ")
                if not (len(status) >= 5 and status[0] == code_text[0] and status[1] == "."):
                    status, message = f"{code_text[0]}.7.1", rest
                action = "reject" if code_text[0] == "5" else "defer"
                return MilterVerdict(action, int(code_text), status, message.strip()[:200] or "Refused")
            return MilterVerdict("defer", 451, "4.7.1", "Try again later")
        raise MilterError(f"unexpected milter reply {reply!r}")

    @staticmethod
    def fields(verdict: MilterVerdict) -> bytes:
        out = b""
        for name, value in verdict.added:
            clean = value.replace("\r\n", "\n").replace("\n", "\r\n")
            out += f"{name}: {clean}\r\n".encode("utf-8", "replace")
        return out
