"""Record framing of a mailbox log file (``log.<epoch>.<slot>``).

A data file is a sequence of records, each a fixed 24-byte header followed by
its payload, all little-endian whatever the host (``struct`` format ``<``):

    magic u16 = 0xD3A1 | type u8 | reserved u8 | payload length u32 |
    writer epoch u64 | CRC-32 u32 | reserved u32

The CRC (zlib's CRC-32) covers the first 16 header bytes and the payload, so
a record that was only partly written before a crash (a *torn tail*) or one
whose bytes were damaged is recognised: scanning stops at the first record
that does not check, and the file is cut there.  Every record carries the
epoch of the owner that wrote it (fencing, see ``docs/storage.md``).

Record types and payloads:

* ``MAILBOX`` (first record of every generation): uidvalidity u32,
  uidnext u32, highest modseq u64, generation u32.
* ``MESSAGE``: uid u32, modseq u64, internal date (seconds since the epoch)
  i64, time-zone offset in minutes i16, reserved u16, flags bitmap u64, body
  length u32, parse-result length u32; then the message (canonical CRLF
  form), then the parse result (msgpack of ``dynamail.mime.Parsed``).
* ``FLAGS``: modseq u64, count u32, then ``count`` × (uid u32, flags u64):
  the *resulting* flags, so replaying a record twice is harmless.
* ``EXPUNGE``: modseq u64, count u32, then ``count`` × uid u32.
* ``KEYWORD``: bit number u32, then the keyword (UTF-8).
* ``OWNER``: accepted end u64 — written by a new owner before its first
  change to the file: the offset up to which it took the log over.
* ``DELIVERY``: uid u32, then a delivery id (UTF-8): the message with that
  UID was handed over under that id (exactly-once hand-off); written in the
  same write as the message.
* ``COMMIT``: no payload.  Ends every write (one group-commit batch): the
  records since the previous COMMIT take effect together or not at all, so
  a multi-message append torn by a crash leaves none of its messages.  A
  ``MAILBOX`` record at offset 0 needs none.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = 0xD3A1
HEADER = struct.Struct("<HBBIQII")
HEADER_SIZE = HEADER.size  # 24

MAILBOX, MESSAGE, FLAGS, EXPUNGE, KEYWORD, OWNER, COMMIT, DELIVERY = 1, 2, 3, 4, 5, 6, 7, 8
RECORD_TYPES = (MAILBOX, MESSAGE, FLAGS, EXPUNGE, KEYWORD, OWNER, COMMIT, DELIVERY)

MAILBOX_BODY = struct.Struct("<IIQI")
MESSAGE_FIXED = struct.Struct("<IQqhHQII")  # 40 bytes
COUNTED = struct.Struct("<QI")
FLAG_ITEM = struct.Struct("<IQ")
UID_ITEM = struct.Struct("<I")
KEYWORD_FIXED = struct.Struct("<I")
OWNER_BODY = struct.Struct("<Q")

# The largest payload accepted when scanning: a length field beyond this is
# damage, not a message (the protocols limit messages far below it).
MAX_PAYLOAD = 1 << 31


def frame(rtype: int, epoch: int, *payload: bytes) -> bytes:
    """One record, header and payload."""
    length = sum(len(p) for p in payload)
    head16 = HEADER.pack(MAGIC, rtype, 0, length, epoch, 0, 0)[:16]
    crc = zlib.crc32(head16)
    for p in payload:
        crc = zlib.crc32(p, crc)
    return b"".join((head16, struct.pack("<II", crc, 0), *payload))


# Large payload pieces are read, checksummed and copied this many bytes at a time.
COPY_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileRange:
    """A payload piece that stays in a file (a spooled message, a message
    copied from another log) until it is written: checksummed and copied in
    ``COPY_CHUNK`` pieces, never held in memory whole."""

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def chunks(self) -> Iterator[bytes]:
        pos, end = self.offset, self.offset + self.length
        while pos < end:
            got = os.pread(self.fd, min(COPY_CHUNK, end - pos), pos)
            if not got:
                raise OSError(f"file ended {end - pos} bytes early")
            yield got
            pos += len(got)


Piece = bytes | FileRange


def frame_parts(rtype: int, epoch: int, *payload: Piece) -> list[Piece]:
    """Like :func:`frame` but as a list of buffers (and file ranges) to write."""
    length = sum(len(p) for p in payload)
    head16 = HEADER.pack(MAGIC, rtype, 0, length, epoch, 0, 0)[:16]
    crc = zlib.crc32(head16)
    for p in payload:
        if isinstance(p, FileRange):
            for chunk in p.chunks():
                crc = zlib.crc32(chunk, crc)
        else:
            crc = zlib.crc32(p, crc)
    return [head16 + struct.pack("<II", crc, 0), *payload]


@dataclass(frozen=True, slots=True)
class Header:
    rtype: int
    length: int
    epoch: int
    crc: int


def parse_header(buf: bytes | memoryview) -> Header | None:
    """The header in ``buf`` (24 bytes) or None if it cannot be one."""
    if len(buf) < HEADER_SIZE:
        return None
    magic, rtype, _r, length, epoch, crc, _r2 = HEADER.unpack_from(buf)
    if magic != MAGIC or rtype not in RECORD_TYPES or length > MAX_PAYLOAD:
        return None
    return Header(rtype, length, epoch, crc)


def check(buf: bytes | memoryview, header: Header, payload: bytes | memoryview) -> bool:
    """Whether the CRC of a record matches (``buf`` starts with its header)."""
    return zlib.crc32(payload, zlib.crc32(bytes(buf[:16]))) == header.crc


class RecordBuffer:
    """Records queued for one write: their buffers, total length, and the
    offset and CRC of the last one (relative to the start of the write)."""

    def __init__(self) -> None:
        self.bufs: list[Piece] = []
        self.length = 0
        self.last_rel = 0
        self.last_crc = 0
        self.records = 0

    def add(self, parts: list[Piece]) -> int:
        """Queue one record (from :func:`frame_parts`); returns its offset."""
        at = self.length
        self.last_rel = at
        first = parts[0]
        assert isinstance(first, bytes)
        self.last_crc = struct.unpack_from("<I", first, 16)[0]
        self.bufs.extend(parts)
        self.length += sum(len(p) for p in parts)
        self.records += 1
        return at
