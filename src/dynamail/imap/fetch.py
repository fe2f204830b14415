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
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dynamail.imap import limits, objectid, response
from dynamail.imap.errors import CommandNo
from dynamail.imap.parser import FetchAtt
from dynamail.imap.selected import flags_of, modseq_of
from dynamail.storage.api import MessageInfo

if TYPE_CHECKING:
    from dynamail.imap.selected import Selected

T = TypeVar("T")
SEEN = frozenset({"\\Seen"})
SMALL_MESSAGE = 32 * 1024  # header/text of smaller messages come from one read
_SETS_SEEN = frozenset({"BODY", "BINARY", "RFC822", "RFC822.TEXT"})


class Output(Protocol):
    def write(self, data: bytes) -> None: ...

    async def flush(self) -> None: ...

    async def send_file(self, file: object, offset: int, length: int) -> None: ...

    def pending(self) -> int: ...

    async def gather(self, aws: list[Awaitable[T]]) -> list[T]:
        """Await several storage reads at once (their thread hops overlap)."""

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking file reads in a worker thread."""


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
        return decode_qp(body)
    raise CommandNo("Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")


_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_qp(body: bytes) -> bytes:
    """Quoted-printable as RFC 2045 section 6.7 decodes it: trailing
    whitespace of each line is transport padding and goes (rule 3), ``=`` at
    the end of a line (after that padding) is a soft line break (rule 5),
    ``=XX`` in either case of hex is the octet, and an ``=`` not followed by
    two hex digits stays as it is (the robust reading of section 6.7 note 1).
    Line ends stay CRLF."""
    lines = body.split(b"\n")
    out = bytearray()
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if line.endswith(b"\r"):
            line = line[:-1]
        line = line.rstrip(b" \t")
        soft = line.endswith(b"=") and not _QP_ESCAPE.search(line[-3:])
        if soft:
            line = line[:-1]
        out += _QP_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), line)
        if not soft and i < last:
            out += b"\r\n"
    return bytes(out)


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
        condstore_on: bool = False,
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
        self.condstore_on = condstore_on  # a CONDSTORE enabling command was given
        self.seen_set: set[int] = set()
        self.missing = False  # some message data could no longer be read
        self._small: dict[int, bytes] = {}  # prefetched whole small messages
        self._reads_small = any(
            a.name in ("RFC822.HEADER", "RFC822.TEXT")
            or (a.section is not None and not a.section.parts and a.section.text)
            for a in self.atts
        )
        self._reads_parsed = any(
            a.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY", "EMAILID")
            or (a.section is not None and bool(a.section.parts))
            for a in self.atts
        )

    async def prefetch(self, uids: Sequence[int]) -> None:
        """Read what the next messages need concurrently, before writing them."""
        view = self.sel.view
        self._small.clear()
        if self._reads_small:
            small = [u for u in uids if view.info(u).size <= SMALL_MESSAGE]
            if len(small) > 1:
                # one worker-thread job reads them all (instead of one hand-off each)
                spans = []
                files = []
                for u in small:
                    fh, offset, length = await view.open_body(u)
                    files.append(fh)
                    spans.append((fh.fileno(), offset, length))
                if all(f is files[0] and not f.closed for f in files):  # one data file for all
                    datas = await self.out.run_blocking(_pread_all, spans)
                else:  # the data file was replaced meanwhile (compaction)
                    datas = await self.out.gather([view.read(u) for u in small])
                self._small = dict(zip(small, datas, strict=True))
        if self._reads_parsed and len(uids) > 1:
            await self.out.gather([view.envelope(u) for u in uids])

    async def mark_seen(self, uids: Sequence[int]) -> None:
        if self.sel.read_only or not sets_seen(self.atts):
            return
        view = self.sel.view
        need = [u for u, fl in zip(uids, flags_of(view, uids), strict=True) if "\\Seen" not in fl]
        if need:
            res = await view.store(need, "add", SEEN)
            self.seen_set = set(res.modified)
            for u in res.modified:
                self.sel.reported[u] = modseq_of(view, u)
            names = {a.name for a in self.atts}
            wanted = ("FLAGS", "UID", "MODSEQ") if self.condstore_on else ("FLAGS",)  # RFC 7162 3.2.4
            self.atts += [FetchAtt(n) for n in wanted if n not in names]

    @property
    def wants_flags(self) -> bool:
        return any(a.name == "FLAGS" for a in self.atts)

    @property
    def flags_only(self) -> bool:
        """Only FLAGS, UID and MODSEQ requested: answered from the index alone."""
        return all(a.section is None and a.name in ("FLAGS", "UID", "MODSEQ") for a in self.atts)

    def flags_batch(self, uids: Sequence[int]) -> None:
        """Write the responses of a FLAGS/UID/MODSEQ-only FETCH for ``uids``."""
        sel = self.sel
        view = sel.view
        write = self.out.write
        names = [a.name for a in self.atts]
        for u, fl in zip(uids, flags_of(view, uids), strict=True):
            parts = []
            for name in names:
                if name == "FLAGS":
                    parts.append(b"FLAGS " + sel.flags_out(u, fl))
                elif name == "UID":
                    parts.append(b"UID %d" % u)
                else:
                    parts.append(b"MODSEQ (%d)" % modseq_of(view, u))
            write(b"* %d FETCH (" % sel.seq_of(u) + b" ".join(parts) + b")\r\n")

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
            try:
                name = att.name
                if att.section is None:
                    if name == "FLAGS":
                        out.write(b"FLAGS " + sel.flags_out(uid, info.flags))
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
                        out.write(b"RFC822.HEADER " + response.literal(await self._header(uid, info)))
                    elif name == "RFC822.TEXT":
                        out.write(b"RFC822.TEXT " + response.literal(await self._text(uid, info)))
                    elif name == "SAVEDATE":
                        out.write(b"SAVEDATE NIL")
                    elif name == "EMAILID":  # RFC 8474 section 5.1
                        eid = objectid.email_id(info.internal_date, await view.digest(uid))
                        out.write(b"EMAILID (" + eid.encode() + b")")
                    elif name == "PREVIEW":  # RFC 8970
                        out.write(b"PREVIEW " + response.value(await self._preview(uid), utf8=self.utf8))
                    else:  # THREADID: NIL, no thread identifiers (RFC 8474 5.2)
                        out.write(name.encode() + b" NIL")
                else:
                    await self._section(uid, info, att)
            except KeyError:  # expunged by another session and already gone
                self.missing = True
                out.write(att.response_name().encode() + b" NIL")
            if out.pending() >= limits.OUTPUT_FLUSH:
                await out.flush()
        out.write(b")\r\n")

    async def _preview(self, uid: int) -> str:
        view = self.sel.view
        found = objectid.first_text_part(await view.bodystructure(uid, True))
        if found is None:
            return ""
        path, subtype, charset = found
        body = await view.part(uid, path, "")
        mime = await view.part(uid, path, "MIME")
        raw = body[: objectid.PREVIEW_SOURCE * 4]
        if b"base64" in mime.lower():
            raw = b"".join(raw.split())
            raw = raw[: len(raw) - len(raw) % 4]
        try:
            data = decode_cte(mime, raw)
        except CommandNo:
            return ""
        return objectid.preview_text(data[: objectid.PREVIEW_SOURCE], subtype, charset)

    async def _whole(self, uid: int, info: MessageInfo, label: bytes) -> None:
        view = self.sel.view
        out = self.out
        if info.size >= limits.SENDFILE_MIN:
            fh, offset, length = await view.open_body(uid)
            out.write(label + b" {%d}\r\n" % length)
            await out.send_file(fh, offset, length)
        else:
            out.write(label + b" " + response.literal(_no_nul(await view.read(uid))))

    async def _split(self, uid: int, info: MessageInfo) -> tuple[bytes, bytes] | None:
        """Header and text of a small message from one read (one storage
        round trip instead of three); None for large messages."""
        if info.size > SMALL_MESSAGE:
            return None
        data = self._small.get(uid)
        if data is None:
            data = await self.sel.view.read(uid)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return data, b""
        return data[: end + 4], data[end + 4 :]

    async def _header(self, uid: int, info: MessageInfo) -> bytes:
        split = await self._split(uid, info)
        if split is not None:
            return split[0]
        return await self.sel.view.header(uid)

    async def _text(self, uid: int, info: MessageInfo) -> bytes:
        split = await self._split(uid, info)
        if split is not None:
            return split[1]
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
            out.write(label + b" " + response.literal(_no_nul(data)))
            return
        if not sec.parts:
            if sec.text == "TEXT":
                data = await self._text(uid, info)
            else:
                data = await self._header(uid, info)
        else:
            what = "HEADER" if sec.text.startswith("HEADER") else sec.text
            data = await view.part(uid, sec.parts, what)
        if sec.fields:
            data = header_fields(data, sec.fields, exclude=sec.text.endswith(".NOT"))
        data = _partial(data, att.partial)
        out.write(label + b" " + response.literal(_no_nul(data)))


def _no_nul(data: bytes) -> bytes:
    """A BODY[...] literal may not carry NUL (RFC 9051 section 4.3, CHAR8);
    like Dovecot we send 0x80 in its place (BINARY[...] sends the octets as
    they are, in a literal8)."""
    return data.replace(b"\x00", b"\x80") if b"\x00" in data else data


def _pread_all(spans: list[tuple[int, int, int]]) -> list[bytes]:
    """Read several (fd, offset, length) spans; runs in a worker thread."""
    return [os.pread(fd, length, offset) for fd, offset, length in spans]


def _partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    off, length = partial
    return data[off : off + length]
