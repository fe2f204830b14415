"""JSON settings files: atomic replacement and a stat-validated read cache.

Every settings file of the directory is one JSON document (UTF-8, LF line
ends, sorted keys), so servers on different operating systems can share it.
Writes go through :func:`dynamail.durable.atomic_write`, so a reader (or a
server restarted after a crash) sees either the old or the new document,
never a torn one.

Reads are cached per path and the cache entry is only trusted while the
file's identity — ``(st_ino, st_mtime_ns, st_size)`` — is unchanged.  An
atomic replacement always creates a new inode, so a change made by another
process (another cluster member writing to the shared storage) is noticed
on the next read even when the modification time did not move.  No
operating-system lock is ever taken.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from dynamail.directory.model import DirectoryError
from dynamail.durable import atomic_write
from dynamail.filemodes import PRIVATE_FILE, write_private

Identity = tuple[int, int, int]
MAX_CACHED_FILES = 20_000  # least recently used documents beyond this are dropped


class CorruptFile(DirectoryError):
    """A settings file that is not valid JSON of the expected shape."""


def _identity(st: os.stat_result) -> Identity:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def encode(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


class JsonFiles:
    """Cache of parsed JSON documents keyed by path and file identity."""

    def __init__(self, max_entries: int = MAX_CACHED_FILES) -> None:
        self.max_entries = max_entries
        self._cache: OrderedDict[Path, tuple[Identity, Any]] = OrderedDict()
        self._lock = threading.Lock()
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
            hit = self._cache.get(path)
            if hit is not None and hit[0] == ident:
                self._cache.move_to_end(path)
        if hit is not None and hit[0] == ident:
            return copy.deepcopy(hit[1])
        try:
            with open(path, "rb") as fh:
                st2 = os.fstat(fh.fileno())
                raw = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return copy.deepcopy(default)
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptFile(f"{path}: {exc}") from exc
        if type(value) is not type(default) and default is not None:
            raise CorruptFile(f"{path}: expected {type(default).__name__}")
        self.reads += 1
        with self._lock:
            self._cache[path] = (_identity(st2), value)
            self._cache.move_to_end(path)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return copy.deepcopy(value)

    def write(self, path: Path, value: Any, mode: int = PRIVATE_FILE) -> None:
        if mode == PRIVATE_FILE:
            write_private(path, encode(value))
        else:
            atomic_write(path, encode(value), mode)
        with self._lock:
            self._cache.pop(path, None)

    def forget(self, prefix: Path | None = None) -> None:
        """Drop cached documents (all, or those under ``prefix``)."""
        with self._lock:
            if prefix is None:
                self._cache.clear()
                return
            for p in [p for p in self._cache if p == prefix or prefix in p.parents]:
                del self._cache[p]
