"""The campaign's clock-step fault: one member's wall clock, stepped.

Linux offers no per-process CLOCK_REALTIME (time namespaces cover only the
monotonic clocks), and stepping the machine's clock would hit every process
on it, the campaign's own history included.  libfaketime does it for one
process: preloaded into a member, it adds the offset written in that
member's timestamp file (``+0`` normally, ``+300`` or ``-45`` while stepped)
to every wall-clock reading, and with ``DONT_FAKE_MONOTONIC=1`` leaves the
monotonic clock alone — which is what a real step of an NTP-less host does.

``FAKETIME_FORCE_MONOTONIC_FIX=0`` turns off libfaketime's rework of
waits on monotonic condition variables, which is not needed when the
monotonic clock is not faked and, measured here, delayed a member's event
loop by up to 0.1-0.3 s now and then (an asyncio sleep plus a thread-pool
round trip: worst 115-330 ms with it, 6-14 ms without, like no preload) —
enough to cost a Controller its tenure on a loaded machine.
``NO_FAKE_STAT=1`` keeps file times as the file system gives them: on shared
storage the times of files come from elsewhere, not from the stepped clock.
The offset file is re-read at most every ``CACHE_SECONDS``, so a step takes
effect within that time; the fault waits that long before it counts as
injected.

With the monotonic clock left alone, this libfaketime (0.9.10) makes
``time.sleep`` fail with EINVAL; members are started through
:mod:`dynamail.chaos.stepped`, which gives them a working one.

Only when the library is installed (Debian package ``faketime``);
:func:`library` is empty otherwise and the fault is recorded as not
available.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

CACHE_SECONDS = 1  # libfaketime re-reads the offset file at most this often
NAMES = ("libfaketimeMT.so.1", "libfaketime.so.1")  # the thread-safe build first
PLACES = ("/usr/lib/*/faketime", "/usr/lib/faketime", "/usr/lib64/faketime", "/usr/local/lib/faketime",
          "/usr/local/lib")


def library() -> str:
    """The path of libfaketime, or empty when it is not installed."""
    for name in NAMES:
        for place in PLACES:
            for path in sorted(glob.glob(os.path.join(place, name))):
                if os.path.isfile(path):
                    return path
    return ""


def offset_file(faults_dir: Path) -> Path:
    return Path(faults_dir) / "clock"


def environment(lib: str, faults_dir: Path) -> list[str]:
    """``NAME=VALUE`` words (for ``env``) that start a member under ``lib``
    with its offset read from ``faults_dir``; the member itself is then
    started through :func:`entry`."""
    return [f"LD_PRELOAD={lib}", "DONT_FAKE_MONOTONIC=1", "FAKETIME_FORCE_MONOTONIC_FIX=0", "NO_FAKE_STAT=1",
            f"FAKETIME_TIMESTAMP_FILE={offset_file(faults_dir)}",
            f"FAKETIME_CACHE_DURATION={CACHE_SECONDS}"]


def spec(seconds: float) -> str:
    """libfaketime's relative offset for ``seconds`` (``+0``, ``+312``, ``-45``)."""
    whole = round(seconds)
    return f"+{whole}" if whole >= 0 else str(whole)


def step(faults_dir: Path, seconds: float) -> None:
    """Set the member's wall-clock offset to ``seconds`` (0 heals it); the
    file is replaced whole, so libfaketime never reads half of it."""
    path = offset_file(faults_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(spec(seconds) + "\n")
    os.replace(tmp, path)


def entry() -> list[str]:
    """The command prefix a member under libfaketime is started through
    (:mod:`dynamail.chaos.stepped`: ``time.sleep`` fails under libfaketime
    with the monotonic clock left alone)."""
    return [sys.executable, "-m", "dynamail.chaos.stepped"]
