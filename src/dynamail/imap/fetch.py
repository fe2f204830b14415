"""Answering FETCH (RFC 9051 section 6.4.5 and 7.5.2; RFC 3516 BINARY;
RFC 7162 MODSEQ).

Everything a FETCH needs without the message text comes from the index
(``MessageInfo``); ENVELOPE and BODYSTRUCTURE were computed once at append
time by the storage engine.  Large whole-message literals are streamed from
the message file with ``sendfile``; everything else is read into memory one
item at a time, so a FETCH of many messages holds at most one body at once.
Non-PEEK body items set ``\\Seen`` first, in one storage call for all the
messages, and the response then carries the new FLAGS (RFC 9051 6.4.5).
"""

from __future__ import annotations

import base64
import binascii
import quopri
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from dynamail.imap import limits, response
from dynamail.imap.errors import CommandNo
from dynamail.imap.parser import FetchAtt
from dynamail.storage.api import MessageInfo

if TYPE_CHECKING:
    from dynamail.imap.selected import Selected

SEEN = frozenset({"\\Seen"})
_SETS_SEEN = frozenset({"BODY", "BINARY", "RFC822", "RFC822.TEXT"})


class Output(Protocol):
    def write(self, data: bytes) -> None: ...

    async def flush(self) -> None: ...

    async def send_file(self, file: object, offset: int, length: int) -> None: ...

    def pending(self) -> int: ...


def sets_seen(atts: Sequence[FetchAtt]) -> bool:
    for a in atts:
        if a.name in _SETS_SEEN and (a.section is not None or a.name.startswith("RFC822")):
            return True
    return False


def header_fields(block: bytes, names: Sequence[str], *, exclude: bool) -> bytes:
    """The named header fields of ``block`` (RFC 9051 6.4.5 HEADER.FIELDS[.NOT]),
    followed by the blank line."""
    wanted = {n.lower() for n in names}
    out: list[bytes] = []
    keep = False
    for line in block.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().decode("latin-1").lower()
        keep = (name in wanted) != exclude
        if keep:
            out.append(line)
    return b"\r\n".join(out) + (b"\r\n\r\n" if out else b"\r\n")


def decode_cte(mime_header: bytes, body: bytes) -> bytes:
    """Undo the part's Content-Transfer-Encoding (RFC 3516 BINARY)."""
    cte = b""
    for line in mime_header.split(b"\r\n"):
        if line.lower().startswith(b"content-transfer-encoding:"):
            cte = line.split(b":", 1)[1].strip().lower()
    if cte in (b"", b"7bit", b"8bit", b"binary"):
        return body
    if cte == b"base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=False)
        except (binascii.Error, ValueError):
            raise CommandNo("Invalid base64 in message part", "PARSE") from None
    if cte == b"quoted-printable":
        return quopri.decodestring(body)
    raise CommandNo("Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")


class FetchWriter:
    """Writes the FETCH responses of one command."""

    def __init__(
        self,
        sel: Selected,
        out: Output,
        atts: Sequence[FetchAtt],
        *,
        uid_mode: bool,
        condstore: bool,
        utf8: bool,
    ) -> None:
        self.sel = sel
        self.out = out
        names = [a.name for a in atts]
        extra: list[FetchAtt] = []
        if uid_mode and "UID" not in names:
            extra.append(FetchAtt("UID"))
        if condstore and "MODSEQ" not in names:
            extra.append(FetchAtt("MODSEQ"))
        self.atts = [*extra, *atts]
        self.utf8 = utf8
        self.seen_set: set[int] = set()

    async def mark_seen(self, uids: Sequence[int]) -> None:
        if self.sel.read_only or not sets_seen(self.atts):
            return
        view = self.sel.view
        need = [u for u in uids if "\\Seen" not in view.info(u).flags]
        if need:
            res = await view.store(need, "add", SEEN)
            self.seen_set = set(res.modified)
            for u in res.modified:
                self.sel.reported[u] = view.info(u).modseq
            if not any(a.name == "FLAGS" for a in self.atts):
                self.atts.append(FetchAtt("FLAGS"))

    async def message(self, uid: int) -> None:
        sel = self.sel
        view = sel.view
        seq = sel.seq_of(uid)
        try:
            info = view.info(uid)
        except KeyError:
            return
        out = self.out
        out.write(b"* %d FETCH (" % seq)
        first = True
        for att in self.atts:
            if not first:
                out.write(b" ")
            first = False
            name = att.name
            if att.section is None:
                if name == "FLAGS":
                    out.write(b"FLAGS " + response.flags(info.flags))
                elif name == "UID":
                    out.write(b"UID %d" % uid)
                elif name == "RFC822.SIZE":
                    out.write(b"RFC822.SIZE %d" % info.size)
                elif name == "INTERNALDATE":
                    out.write(b"INTERNALDATE " + response.date_time(info.internal_date))
                elif name == "MODSEQ":
                    out.write(b"MODSEQ (%d)" % info.modseq)
                elif name == "ENVELOPE":
                    out.write(b"ENVELOPE " + response.value(await view.envelope(uid), utf8=self.utf8))
                elif name == "BODYSTRUCTURE":
                    bs = await view.bodystructure(uid, True)
                    out.write(b"BODYSTRUCTURE " + response.value(bs, utf8=self.utf8))
                elif name == "BODY":
                    bs = await view.bodystructure(uid, False)
                    out.write(b"BODY " + response.value(bs, utf8=self.utf8))
                elif name == "RFC822":
                    await self._whole(uid, info, b"RFC822")
                elif name == "RFC822.HEADER":
                    out.write(b"RFC822.HEADER " + response.literal(await view.header(uid)))
                elif name == "RFC822.TEXT":
                    out.write(b"RFC822.TEXT " + response.literal(await self._text(uid, info)))
                elif name == "SAVEDATE":
                    out.write(b"SAVEDATE NIL")
                else:  # EMAILID/THREADID are not advertised
                    out.write(name.encode() + b" NIL")
            else:
                await self._section(uid, info, att)
            if out.pending() >= limits.OUTPUT_FLUSH:
                await out.flush()
        out.write(b")\r\n")

    async def _whole(self, uid: int, info: MessageInfo, label: bytes) -> None:
        view = self.sel.view
        out = self.out
        if info.size >= limits.SENDFILE_MIN:
            fh, offset, length = await view.open_body(uid)
            out.write(label + b" {%d}\r\n" % length)
            await out.send_file(fh, offset, length)
        else:
            out.write(label + b" " + response.literal(await view.read(uid)))

    async def _text(self, uid: int, info: MessageInfo) -> bytes:
        view = self.sel.view
        hlen = len(await view.header(uid))
        return await view.read_range(uid, hlen, max(0, info.size - hlen))

    async def _section(self, uid: int, info: MessageInfo, att: FetchAtt) -> None:
        view = self.sel.view
        sec = att.section
        assert sec is not None
        label = att.response_name().encode()
        out = self.out
        if att.name.startswith("BINARY"):
            if sec.parts:
                body = await view.part(uid, sec.parts, "")
                mime = await view.part(uid, sec.parts, "MIME")
                data = decode_cte(mime, body)
            else:
                data = await view.read(uid)
            if att.name == "BINARY.SIZE":
                out.write(b"BINARY.SIZE[%s] %d" % (str(sec).encode(), len(data)))
                return
            data = _partial(data, att.partial)
            if b"\x00" in data:  # literal8 (RFC 3516 section 4.2)
                out.write(label + b" ~{%d}\r\n" % len(data) + data)
            else:
                out.write(label + b" " + response.literal(data))
            return
        if not sec.parts and not sec.text:
            if att.partial is None:
                await self._whole(uid, info, label)
                return
            off, length = att.partial
            data = b"" if off >= info.size else await view.read_range(uid, off, min(length, info.size - off))
            out.write(label + b" " + response.literal(data))
            return
        if not sec.parts:
            if sec.text == "TEXT":
                data = await self._text(uid, info)
            else:
                data = await view.header(uid)
        else:
            what = "HEADER" if sec.text.startswith("HEADER") else sec.text
            data = await view.part(uid, sec.parts, what)
        if sec.fields:
            data = header_fields(data, sec.fields, exclude=sec.text.endswith(".NOT"))
        data = _partial(data, att.partial)
        out.write(label + b" " + response.literal(data))


def _partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    off, length = partial
    return data[off : off + length]
