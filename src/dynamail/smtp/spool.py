"""Where a message being received is kept until it is stored.

Up to ``SPOOL_IN_MEMORY`` bytes stay in one buffer (most mail: no file
system work per message); beyond that the content moves to a file under
``<base>/Spool/`` and every further chunk is appended there, so a large
message is held on disk, never in memory (a 50 MB message is never held in
memory twice).  Spool files are never acknowledged mail: whatever a crash
leaves there is removed at the next start.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from dynamail.filemodes import open_private, private_dirs

#: Messages up to this size are received into memory, larger ones into a file.
SPOOL_IN_MEMORY = 1024 * 1024


def clean_spool(directory: Path) -> None:
    """Remove partial messages left by a crash (none of them was acknowledged)."""
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)



HEAD_LIMIT = 256 * 1024  # header sections longer than this are only partly rewritten


def _head_end(data: bytes) -> int:
    """Where the header section ends (after its last field's line break)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return i + len(sep) // 2
    return len(data)


class Spool:
    """The message being received: in memory while small, else a file under Spool/.

    Up to ``SPOOL_IN_MEMORY`` bytes stay in one buffer (most mail; no file
    system work per message); beyond that the content moves to a file and
    every further chunk is appended there, so a large message is held on
    disk, never in memory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.buffer = bytearray()
        self.path: Path | None = None
        self.fh: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self.fh is not None:
            self.fh.write(data)
            return
        self.buffer += data
        if len(self.buffer) > SPOOL_IN_MEMORY:
            private_dirs(self.directory)
            self.path = self.directory / f"{int(time.time())}.{secrets.token_hex(8)}.eml"
            self.fh = open_private(self.path, "xb")
            self.fh.write(self.buffer)
            self.buffer = bytearray()

    def finish(self) -> Path | bytes:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.path is not None:
            return self.path
        return bytes(self.buffer)

    def prepend(self, data: bytes) -> Path | bytes:
        """Put ``data`` (trace or signature fields) in front of the finished
        message; returns the content as :meth:`finish` does."""
        if self.path is None:
            self.buffer[:0] = data
            return bytes(self.buffer)
        old = self.path
        self.path = self.directory / f"{int(time.time())}.{secrets.token_hex(8)}.eml"
        with open_private(self.path, "xb") as out, open(old, "rb") as src:
            out.write(data)
            shutil.copyfileobj(src, out, 1024 * 1024)
        old.unlink(missing_ok=True)
        return self.path

    def rewrite_head(self, change: Callable[[bytes], bytes], limit: int = HEAD_LIMIT) -> Path | bytes:
        """Replace the header section (at most ``limit`` bytes of it) of the
        finished message by ``change(header)``; the body is copied, never
        held in memory when the message is in a file."""
        if self.path is None:
            data = bytes(self.buffer)
            end = _head_end(data[:limit])
            self.buffer = bytearray(change(data[:end]) + data[end:])
            return bytes(self.buffer)
        old = self.path
        self.path = self.directory / f"{int(time.time())}.{secrets.token_hex(8)}.eml"
        with open_private(self.path, "xb") as out, open(old, "rb") as src:
            head = src.read(limit)
            end = _head_end(head)
            out.write(change(head[:end]))
            out.write(head[end:])
            shutil.copyfileobj(src, out, 1024 * 1024)
        old.unlink(missing_ok=True)
        return self.path

    def discard(self) -> None:
        self.buffer = bytearray()
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
            self.fh = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None
