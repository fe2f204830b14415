"""The full-fs fault's small file system: sizes, and (as root, with loop
devices) an image made, filled to ENOSPC, emptied and unmounted."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from dynamail.chaos import smallfs


def test_parse_size() -> None:
    assert smallfs.parse_size("64M") == 64 * 1024**2
    assert smallfs.parse_size("1g") == 1024**3
    assert smallfs.parse_size(str(32 * 1024**2)) == 32 * 1024**2
    for bad in ("", "12T", "-5M", "1M", "lots"):
        with pytest.raises(ValueError):
            smallfs.parse_size(bad)


def test_fill_makes_writes_fail_and_empty_frees_the_space(tmp_path: Path) -> None:
    why = smallfs.unavailable()
    if why:
        pytest.skip(why)
    try:
        fs = smallfs.SmallFs(tmp_path, smallfs.MIN_SIZE)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot loop-mount an image here: {exc.stderr!r}")
    try:
        assert fs.shared.is_dir() and fs.free() > smallfs.MIN_SIZE // 2
        assert fs.fill() > smallfs.MIN_SIZE // 2
        with pytest.raises(OSError) as info:
            with open(fs.shared / "mail", "wb") as fh:
                fh.write(b"x" * 65536)
                fh.flush()
        assert info.value.errno == errno.ENOSPC
        fs.empty()
        (fs.shared / "mail").write_bytes(b"x" * 65536)
    finally:
        fs.unmount()
    assert not fs.mounted and fs.image.exists()
