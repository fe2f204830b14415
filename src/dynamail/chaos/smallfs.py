"""A small file system for the campaign's full-fs fault (``--small-fs``).

The shared storage lives on an ext4 image of the chosen size, loop-mounted
under the run directory (``DIR/small-fs``, the storage in its ``shared``
folder).  Filling it takes a ballast file beside that folder (never inside
the storage) as large as the free space allows, so that every member's next
write to shared storage meets ENOSPC; emptying it removes the ballast.  The
image is made with no blocks reserved for root, since the members run as
root here and would otherwise write on into the reserve.

Needs root, ``mkfs.ext4`` and ``mount``; :func:`unavailable` says why not
when it cannot be used.  :meth:`SmallFs.unmount` unmounts it and leaves the
image, with the run's shared storage, in the run directory
(``mount -o loop DIR/small-fs.img DIR/small-fs`` to read it again).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

MIN_SIZE = 16 * 1024 * 1024  # bytes: below this ext4's own metadata leaves little room for mail
CHUNK = 1024 * 1024  # bytes the ballast grows by once the large allocation is done
_SIZE = re.compile(r"^(\d+)([KMG]?)$")


def parse_size(text: str) -> int:
    """``64M``, ``1G``, ``500000K`` or a number of bytes; ValueError when
    unreadable or below MIN_SIZE."""
    m = _SIZE.match(text.strip().upper())
    if not m:
        raise ValueError(f"not a size: {text!r} (say 64M or 1G)")
    size = int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2)]
    if size < MIN_SIZE:
        raise ValueError(f"{text} is below the smallest file system, {MIN_SIZE // 1024**2}M")
    return size


def unavailable() -> str:
    """Empty when a loop-mounted image can be made here, else the reason."""
    if os.geteuid() != 0:
        return "mounting a file system image needs root"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"the {tool} command is not installed"
    return ""


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=60)


class SmallFs:
    """An ext4 image of ``size`` bytes mounted at ``directory/small-fs``."""

    def __init__(self, directory: Path, size: int) -> None:
        self.image = Path(directory) / "small-fs.img"
        self.mount = Path(directory) / "small-fs"
        self.shared = self.mount / "shared"
        self.ballast = self.mount / "ballast"
        self.mounted = False
        with open(self.image, "wb") as fh:
            fh.truncate(size)
        try:
            _run("mkfs.ext4", "-q", "-F", "-m", "0", str(self.image))
            self.mount.mkdir(parents=True, exist_ok=True)
            _run("mount", "-o", "loop", str(self.image), str(self.mount))
            self.mounted = True
            self.shared.mkdir(mode=0o700, exist_ok=True)
        except BaseException:
            self.unmount()
            raise

    def fill(self) -> int:
        """Take every free byte with the ballast file; its size."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            st = os.statvfs(self.mount)
            want = st.f_bavail * st.f_frsize
            while want > CHUNK:  # one large allocation, a little less when metadata needs room
                try:
                    os.posix_fallocate(fd, 0, want)
                    break
                except OSError:
                    want -= max(CHUNK, want // 64)
            size = os.fstat(fd).st_size
            block = b"\0" * 4096
            os.lseek(fd, size, os.SEEK_SET)
            while True:  # the last blocks, one at a time, until the file system says no
                try:
                    written = os.write(fd, block)
                    os.fsync(fd)
                except OSError:
                    break
                if written <= 0:
                    break
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def empty(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ballast.unlink()

    def free(self) -> int:
        st = os.statvfs(self.mount)
        return st.f_bavail * st.f_frsize

    def unmount(self) -> None:
        """Unmount, leaving the image (with the run's shared storage) behind."""
        if self.mounted:
            self.empty()
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                _run("umount", str(self.mount))
                self.mounted = False
            if self.mounted:  # a member still holds a file open: detach it
                with contextlib.suppress(subprocess.CalledProcessError, OSError):
                    _run("umount", "-l", str(self.mount))
                    self.mounted = False
