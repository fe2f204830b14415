"""Sentinels shared by the sans-IO protocol cores (SMTP, POP3).

``NEED_DATA``: the core needs more bytes from the client; ``PAUSED``: the core
waits for the adapter's decision.  No I/O here.
"""

from __future__ import annotations

__all__ = ["NEED_DATA", "PAUSED", "ByteBuffers", "Sentinel"]


class Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = Sentinel("NEED_DATA")
PAUSED = Sentinel("PAUSED")


class ByteBuffers:
    """The byte interface of a core: input buffer, output buffer, end of input.

    The core's ``__init__`` sets ``_in``, ``_out`` and ``_eof``.
    """

    _in: bytearray
    _out: bytearray
    _eof: bool

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means the client closed."""
        if data:
            self._in += data
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out
