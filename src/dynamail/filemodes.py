"""File modes: everything a server writes is private to its user.

Mail, indexes, queue entries, spool files, settings, secrets and logs are
created with mode 0600 (files) and 0700 (directories), whatever the umask
the server was started with: a backend's other local users, and every
client of a shared NFS/GlusterFS export, must not be able to read a
mailbox.  Three layers make that hold:

* ``dynamail serve`` sets its umask to 077 at start-up (:func:`restrict_umask`),
  so even a file created by code that names no mode is private;
* the helpers here name the mode explicitly and set it with ``fchmod`` /
  ``chmod`` after creating, so they do not depend on the umask at all (the
  same code also runs in tests and tools that keep their own umask);
* at start-up :func:`find_exposed` walks the base directory (bounded) and the
  server logs a warning for every tree left readable by group or others by
  an older version or by hand (:func:`warn_exposed`).

Nothing here takes a lock; writes are atomic and durable as in
:mod:`dynamail.durable`.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from dynamail.durable import fsync_dir

log = logging.getLogger("dynamail.filemodes")

#: The mode of every file a server creates.
PRIVATE_FILE = 0o600
#: The mode of every directory a server creates.
PRIVATE_DIR = 0o700
#: The umask ``dynamail serve`` runs with.
SERVER_UMASK = 0o077
#: Permission bits that expose a file or directory to group or others.
EXPOSING = 0o077
#: Entries looked at by the start-up check at most (a mail tree may hold
#: millions; the check must not delay the start).
SCAN_LIMIT = 5_000


def restrict_umask() -> int:
    """Set the process umask to 077; the previous one."""
    return os.umask(SERVER_UMASK)


def create_private(path: str | os.PathLike[str], flags: int = os.O_WRONLY) -> int:
    """Create ``path`` exclusively with mode 0600 whatever the umask; the
    open descriptor (``FileExistsError`` when it exists)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: str | os.PathLike[str], mode: str = "wb") -> Any:
    """``open(path, mode)`` for a new or truncated file that is 0600 from
    its first byte whatever the umask (``"wb"``, ``"ab"`` or ``"xb"``)."""
    flags = {"wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "xb": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[mode]
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably, mode 0600
    (as :func:`dynamail.durable.atomic_write`, with the mode exact)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = create_private(tmp)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
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


def private_mkdir(path: str | os.PathLike[str]) -> None:
    """``mkdir`` with mode 0700 whatever the umask (``FileExistsError`` as mkdir)."""
    os.mkdir(path, PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)


def private_dirs(path: str | os.PathLike[str]) -> None:
    """Create a directory tree, each new directory 0700 whatever the umask,
    fsyncing every parent whose entries changed (as ``durable.make_dirs``).
    Directories that exist are left as they are."""
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
            private_mkdir(p)
        except FileExistsError:
            continue
        fsync_dir(p.parent)


def find_exposed(root: str | os.PathLike[str], limit: int = SCAN_LIMIT) -> list[tuple[Path, int]]:
    """Files and directories under ``root`` (and ``root`` itself) that group
    or others may read, write or enter: ``(path, mode)``, looking at no more
    than ``limit`` entries.  An exposed directory is listed alone, not what
    it holds (``chmod -R`` of it fixes both)."""
    root = Path(root)
    try:
        st = root.stat()
    except OSError:
        return []
    if st.st_mode & EXPOSING:
        return [(root, stat.S_IMODE(st.st_mode))]
    out: list[tuple[Path, int]] = []
    stack = [root]
    seen = 0
    while stack and seen < limit:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries[: limit - seen]:
            seen += 1
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & EXPOSING:
                out.append((Path(e.path), stat.S_IMODE(st.st_mode)))
            elif stat.S_ISDIR(st.st_mode):
                stack.append(Path(e.path))
    return out


def warn_exposed(root: str | os.PathLike[str], limit: int = SCAN_LIMIT) -> list[tuple[Path, int]]:
    """Log one warning naming what :func:`find_exposed` found (at most ten
    paths and a count); the list."""
    exposed = find_exposed(root, limit)
    if exposed:
        shown = ", ".join(f"{p} ({m:04o})" for p, m in exposed[:10])
        more = f" and {len(exposed) - 10} more" if len(exposed) > 10 else ""
        log.warning(
            "%d files or directories under %s are readable by group or others: %s%s; "
            "run `chmod -R go-rwx %s` (new files are created 0600/0700)",
            len(exposed), root, shown, more, root,
        )
    return exposed
