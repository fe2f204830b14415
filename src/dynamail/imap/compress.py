"""COMPRESS=DEFLATE (RFC 4978): raw deflate (RFC 1951) in both directions
once the client asks for it, with bounded memory.

* Output: one deflate stream, ``Z_SYNC_FLUSH`` at every flush so the client
  can decode each batch of responses at once (RFC 4978 section 4).  The
  window and the internal state are kept small (:data:`limits.DEFLATE_WBITS`,
  :data:`limits.DEFLATE_MEMLEVEL`): about 16 KiB + 16 KiB per session
  instead of zlib's default 256 KiB, at a small cost in ratio.
* Input: the client may use any window up to 32 KiB, so the inflater has
  one (32 KiB).  Each read is inflated in pieces of at most
  :data:`limits.INFLATE_CHUNK` octets, so a small hostile input cannot make
  one step allocate much (a deflate bomb is cut into bounded pieces that go
  through the framer and its line and literal limits like plain input).

Pure: the adapter calls :meth:`Deflate.compress` on its output and
:meth:`Deflate.decompress` on what it reads.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from dynamail.imap import limits


class CompressError(Exception):
    """The client's compressed stream is corrupt."""


class Deflate:
    __slots__ = ("_in", "_out")

    def __init__(self) -> None:
        self._out = zlib.compressobj(
            limits.DEFLATE_LEVEL, zlib.DEFLATED, -limits.DEFLATE_WBITS, limits.DEFLATE_MEMLEVEL
        )
        self._in = zlib.decompressobj(-15)

    def compress(self, data: bytes) -> bytes:
        """``data`` compressed and flushed (the peer can decode all of it)."""
        return self._out.compress(data) + self._out.flush(zlib.Z_SYNC_FLUSH)

    def decompress(self, data: bytes) -> Iterator[bytes]:
        """The plain octets of ``data``, in pieces of bounded size."""
        pending = data
        try:
            while pending:
                out = self._in.decompress(pending, limits.INFLATE_CHUNK)
                pending = self._in.unconsumed_tail
                if out:
                    yield out
                if self._in.eof:
                    raise CompressError("the client ended its deflate stream")
        except zlib.error as exc:
            raise CompressError(str(exc)) from None
