"""The entry of a member whose wall clock the clock-step fault may step.

libfaketime (0.9.10, Debian's) with ``DONT_FAKE_MONOTONIC=1`` makes
``clock_nanosleep`` on the monotonic clock fail with EINVAL, so every
``time.sleep`` in the member would raise OSError — a fault of the tool, not
one the campaign means to inject.  A member started under libfaketime is
therefore started through this module, which puts a sleep built on a
timed lock wait (which libfaketime leaves working) in place of
``time.sleep`` and then runs the command that follows it::

    python -m dynamail.chaos.stepped PYTHON -m dynamail serve ...
"""

from __future__ import annotations

import runpy
import sys
import threading
import time
from typing import SupportsIndex


def sleep(seconds: float | SupportsIndex) -> None:
    """``time.sleep`` on the monotonic clock, through a timed lock wait."""
    delay = float(seconds) if isinstance(seconds, float | int) else float(seconds.__index__())
    if delay < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(delay)


def main(argv: list[str]) -> None:
    """Run ``argv`` (``PYTHON -m MODULE ARGS...``) in this process with
    :func:`sleep` as ``time.sleep``."""
    if len(argv) < 3 or argv[1] != "-m":
        raise SystemExit("usage: python -m dynamail.chaos.stepped PYTHON -m MODULE [ARGS...]")
    time.sleep = sleep
    sys.argv = [argv[2], *argv[3:]]
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
