"""JSON settings files: fenced, atomic replacement and a validated read cache.

Every settings file of the directory is one JSON document (UTF-8, LF line
ends, sorted keys), so servers on different operating systems can share it.
A reader (or a server restarted after a crash) sees either the old or the
new document, never a torn one.  No operating-system lock is ever taken.

**Fencing.**  On the shared storage of a cluster a document has one writer,
the Controller; a Controller that was paused (SIGSTOP, a VM freeze, a slow
NFS call) may wake after a newer Controller has taken over and acknowledged
changes.  The invariant: *a write of a superseded writer never replaces a
document that a newer writer acknowledged.*  A writer with epoch ``E > 0``
(see :class:`Writer`) never replaces the document in place:

1. it writes the new content to the version file ``NAME.e<E>`` (atomic
   write and rename; only writers of epoch ``E`` ever touch that name);
2. it hard-links the version to a temporary name and renames it over
   ``NAME``, the *pointer*, which plain readers (older servers, backups,
   operators) read and whose identity validates the read cache;
3. it fsyncs the directory and asks the writer whether epoch ``E`` is still
   current (:meth:`Writer.check`); only then is the write acknowledged;
4. it unlinks the versions below ``E``.

A reader whose cache entry does not match the pointer's identity reads the
*highest* version (the plain ``NAME`` when there is none).  A stale writer
(epoch ``E' < E``) that resumes at any step therefore writes only
``NAME.e<E'>``, which no reader chooses while ``NAME.e<E>`` exists; if it
renames its version over the pointer, the pointer is wrong until the next
write, but the versioned read and the cache (keyed on the pointer's new
identity) are not; it fails the check, so its write is never acknowledged,
and it never deletes ``NAME.e<E>`` (step 4 removes only lower versions).  A
version unlinked under a stale writer's step 2 ends its write with
:class:`Superseded`.  The one thing a stale write can do is become visible
late when no newer writer has written that document yet: a change nobody
acknowledged, never the loss of one that was.

Writes with epoch 0 (a standalone server, and a member's local files)
replace ``NAME`` directly and drop any versions.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from dynamail.directory.layout import rename_new
from dynamail.directory.model import AlreadyExists, DirectoryError, Superseded
from dynamail.durable import atomic_write, fsync_dir
from dynamail.filemodes import PRIVATE_FILE, write_private
from dynamail.storage import faults

Identity = tuple[int, int, int]
__all__ = ["CorruptFile", "JsonFiles", "Superseded", "Unfenced", "Writer", "versions"]

MAX_CACHED_FILES = 20_000  # least recently used documents beyond this are dropped
_RESOLVE_TRIES = 16


class CorruptFile(DirectoryError):
    """A settings file that is not valid JSON of the expected shape."""


class Writer(Protocol):
    """Who writes a document, and whether it still may."""

    def epoch(self, path: Path) -> int:
        """The epoch to write ``path`` under (0: unfenced); raises
        :class:`Superseded` when this process may not write it at all."""
        ...

    def check(self, path: Path, epoch: int) -> None:
        """Raise :class:`Superseded` unless ``epoch`` is still current."""
        ...


class Unfenced:
    """The writer of a standalone server: every write has epoch 0."""

    def epoch(self, path: Path) -> int:
        return 0

    def check(self, path: Path, epoch: int) -> None:
        return None


def _identity(st: os.stat_result) -> Identity:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def encode(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def version_path(path: Path, epoch: int) -> Path:
    return path.with_name(f"{path.name}.e{epoch}")


def versions(path: Path) -> list[tuple[int, Path]]:
    """The versions ``NAME.e<N>`` of ``path``, highest epoch first."""
    prefix = path.name + ".e"
    found: list[tuple[int, Path]] = []
    try:
        with os.scandir(path.parent) as it:
            for entry in it:
                n = entry.name
                if n.startswith(prefix):
                    digits = n[len(prefix):]
                    if digits.isdigit() and digits.isascii() and digits[0] != "0":
                        found.append((int(digits), path.parent / n))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found.sort(reverse=True)
    return found


def _put(path: Path, data: bytes, mode: int) -> None:
    if mode == PRIVATE_FILE:
        write_private(path, data)
    else:
        atomic_write(path, data, mode)


class JsonFiles:
    """Fenced writes, and a cache of parsed documents keyed by path and the
    identity of the pointer file."""

    def __init__(self, max_entries: int = MAX_CACHED_FILES, writer: Writer | None = None) -> None:
        self.max_entries = max_entries
        self.writer: Writer = writer if writer is not None else Unfenced()
        self._cache: OrderedDict[Path, tuple[Identity, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by forget(): reads begun earlier are not cached
        self.reads = 0  # documents actually parsed from disk (tests watch it)

    def read(self, path: Path, default: Any) -> Any:
        """The document at ``path`` (a deep copy), or ``default`` when absent."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            with self._lock:
                self._cache.pop(path, None)
            return copy.deepcopy(default)
        ident = _identity(st)
        with self._lock:
            generation = self._generation
            hit = self._cache.get(path)
            if hit is not None and hit[0] == ident:
                self._cache.move_to_end(path)
        if hit is not None and hit[0] == ident:
            return copy.deepcopy(hit[1])
        raw = self._load(path)
        if raw is None:
            return copy.deepcopy(default)
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptFile(f"{path}: {exc}") from exc
        if type(value) is not type(default) and default is not None:
            raise CorruptFile(f"{path}: expected {type(default).__name__}")
        self.reads += 1
        with self._lock:
            if generation == self._generation:
                self._cache[path] = (ident, value)
                self._cache.move_to_end(path)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return copy.deepcopy(value)

    def _load(self, path: Path) -> bytes | None:
        """The bytes of the highest version of ``path`` (or of ``path``)."""
        for _ in range(_RESOLVE_TRIES):
            found = versions(path)
            target = found[0][1] if found else path
            try:
                with open(target, "rb") as fh:
                    return fh.read()
            except (FileNotFoundError, NotADirectoryError):
                if not found:
                    return None
                # a newer write removed it after our listing: list again
        raise DirectoryError(f"{path}: versions keep changing under the reader")

    def write(self, path: Path, value: Any, mode: int = PRIVATE_FILE) -> None:
        """Replace the document at ``path``; raises :class:`Superseded` when
        this writer's epoch ended (the change is then not acknowledged)."""
        data = encode(value)
        epoch = self.writer.epoch(path)
        try:
            if epoch <= 0:
                for _, old in versions(path):
                    faults.point("dir-unlink")
                    old.unlink(missing_ok=True)
                faults.point("dir-write")
                _put(path, data, mode)
                return
            mine = version_path(path, epoch)
            faults.point("dir-write")
            _put(mine, data, mode)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            faults.point("dir-link")
            try:
                os.link(mine, tmp)
            except FileNotFoundError:
                raise Superseded(f"{path}: a newer writer removed epoch {epoch}'s version") from None
            try:
                faults.point("dir-rename")
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(path.parent)
            self.writer.check(path, epoch)
            for e, old in versions(path):
                if e < epoch:
                    faults.point("dir-unlink")
                    old.unlink(missing_ok=True)
        finally:
            with self._lock:
                self._cache.pop(path, None)

    def move(self, src: Path, dst: Path, exists_message: str) -> None:
        """Rename the directory ``src`` to the new name ``dst`` (never over an
        existing one) under the writer's fence.  The rename is checked after
        it reached the disk; a superseded writer moves it back and raises
        :class:`Superseded`, so a Controller paused before the rename cannot
        delete or rename what its successor has changed since.  When the old
        name was taken again meanwhile, ``dst`` is left where it is (nothing
        is removed) and the error says where."""
        epoch = self.writer.epoch(dst)
        faults.point("dir-move")
        rename_new(src, dst, exists_message)
        fsync_dir(dst.parent)
        if src.parent != dst.parent:
            fsync_dir(src.parent)
        self.forget(src)
        if epoch <= 0:
            return
        try:
            self.writer.check(dst, epoch)
        except Superseded as exc:
            try:
                rename_new(dst, src, "")
                fsync_dir(src.parent)
            except (OSError, AlreadyExists) as undo:
                raise Superseded(f"{exc}; {src} was taken again meanwhile, so "
                                 f"{dst} is kept as it is ({undo})") from None
            raise

    def forget(self, prefix: Path | None = None) -> None:
        """Drop cached documents (all, or those under ``prefix``)."""
        with self._lock:
            self._generation += 1
            if prefix is None:
                self._cache.clear()
                return
            for p in [p for p in self._cache if p == prefix or prefix in p.parents]:
                del self._cache[p]
