"""Memory tracing of a running server, for measurements only.

When the environment variable ``DYNAMAIL_TRACEMALLOC`` names a file,
:func:`install` starts :mod:`tracemalloc` (``DYNAMAIL_TRACEMALLOC_FRAMES``
frames per allocation, default 1) and
makes ``SIGUSR2`` write a snapshot to that file (``bench/connections.py``
compares two of them to find where the memory of idle connections goes).
Without the variable nothing happens.  Tracing slows the server and adds
its own memory; never set it in production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tracemalloc

ENV = "DYNAMAIL_TRACEMALLOC"
_installed = False


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Start tracing when ``DYNAMAIL_TRACEMALLOC`` is set; True if active.
    Called on the loop thread (the signal handler belongs to ``loop``)."""
    global _installed
    path = os.environ.get(ENV, "")
    if not path:
        return False
    if _installed:
        return True
    tracemalloc.start(max(1, int(os.environ.get(ENV + "_FRAMES", "1") or 1)))

    def dump() -> None:
        tmp = path + ".part"
        tracemalloc.take_snapshot().dump(tmp)
        os.replace(tmp, path)

    loop.add_signal_handler(signal.SIGUSR2, dump)
    _installed = True
    return True
