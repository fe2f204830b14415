"""Crash-safe file writes without operating-system locks.

Every settings file is replaced atomically: the new content goes to a
temporary file in the same directory, is fsynced, renamed over the old name,
and the directory is fsynced so the rename itself is durable.  A crash at any
instant therefore leaves either the old or the new content, never a torn
file.  Nothing here (or anywhere in dynamail) calls flock/fcntl/lockf: the
cluster's account ownership is the only synchronisation.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that entries created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def make_dirs(path: str | os.PathLike[str]) -> None:
    """Create a directory tree and fsync every parent whose entries changed."""
    target = Path(path)
    missing: list[Path] = []
    cur = target
    while not cur.exists():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    for p in reversed(missing):
        try:
            p.mkdir()
        except FileExistsError:
            pass
        fsync_dir(p.parent)


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> None:
    """Remove ``.*.tmp`` files left behind by a crash in the middle of atomic_write."""
    d = Path(directory)
    if not d.is_dir():
        return
    for entry in d.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            entry.unlink(missing_ok=True)
