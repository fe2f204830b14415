"""Sentinels shared by the sans-IO protocol cores (SMTP, POP3).

``NEED_DATA``: the core needs more bytes from the client; ``PAUSED``: the core
waits for the adapter's decision.  No I/O here.
"""

from __future__ import annotations

__all__ = ["NEED_DATA", "PAUSED", "Sentinel"]


class Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = Sentinel("NEED_DATA")
PAUSED = Sentinel("PAUSED")
