"""Fault-injection points before every mutation of shared storage.

A process started with ``DYNAMAIL_FAULTS_DIR=DIR`` checks, at each point,
whether ``DIR/arm`` exists; when its content names the point (``write``,
``truncate``, ``rename``, ``link``, ``unlink``, ``mkdir``, ``create``, and
for settings documents ``dir-write``, ``dir-link``, ``dir-rename``,
``dir-unlink``, ``dir-move``) or is
``*``, it removes ``DIR/arm`` and stops itself with SIGSTOP, to be resumed
with SIGCONT by whoever armed it.  Tests and the fault campaign use this to
pause an owner at the worst instant: after its fencing check, before its
change reaches the file system.

While ``DIR/slow`` exists and holds a number of seconds (at most
``MAX_SLOW``), every point first sleeps that long, on the thread that
reached it: slow storage, as a congested network file system makes it.

Without the variable a point is one global lookup and a comparison: free
when unused.  With it, a point costs two failing ``open`` calls while
nothing is armed or slowed.  In-process tests may instead install a hook with
:func:`set_hook` (called with the point's name, on whatever thread reached
it).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

POINTS = ("write", "truncate", "rename", "link", "unlink", "mkdir", "create")
# the fenced writes of directory documents (dynamail.directory.files)
DIRECTORY_POINTS = ("dir-write", "dir-link", "dir-rename", "dir-unlink", "dir-move")

MAX_SLOW = 10.0  # seconds: a larger delay in DIR/slow is cut to this

_DIR = os.environ.get("DYNAMAIL_FAULTS_DIR") or None
_hook: Callable[[str], None] | None = None


def set_hook(hook: Callable[[str], None] | None) -> None:
    """Install (or remove, with None) an in-process hook called at every point."""
    global _hook
    _hook = hook


def point(name: str) -> None:
    """A mutation of shared storage named ``name`` is about to happen."""
    if _hook is not None:
        _hook(name)
    if _DIR is None:
        return
    _slow(_DIR)
    arm = os.path.join(_DIR, "arm")
    try:
        with open(arm, encoding="ascii") as f:
            wanted = f.read().strip()
    except OSError:
        return
    if wanted not in ("*", name):
        return
    try:
        os.unlink(arm)
    except OSError:
        return  # another thread took it
    # directed at this thread, so that this thread is the one that stops at
    # once (a process-directed SIGSTOP may be taken by another thread while
    # this one runs on into the very mutation the point guards)
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def _slow(directory: str) -> None:
    try:
        with open(os.path.join(directory, "slow"), encoding="ascii") as f:
            delay = float(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    if delay > 0:
        time.sleep(min(delay, MAX_SLOW))
