from __future__ import annotations

import os
from pathlib import Path

from dynamail.durable import atomic_write, make_dirs, remove_stale_temporaries


def test_atomic_write_replaces(tmp_path: Path) -> None:
    p = tmp_path / "f.toml"
    atomic_write(p, b"one")
    atomic_write(p, b"two")
    assert p.read_bytes() == b"two"
    assert [e.name for e in tmp_path.iterdir()] == ["f.toml"]


def test_mode_and_stale_cleanup(tmp_path: Path) -> None:
    p = tmp_path / "secret"
    atomic_write(p, b"x", mode=0o600)
    assert os.stat(p).st_mode & 0o777 == 0o600
    (tmp_path / ".secret.abc.tmp").write_bytes(b"torn")
    remove_stale_temporaries(tmp_path)
    assert sorted(e.name for e in tmp_path.iterdir()) == ["secret"]


def test_make_dirs(tmp_path: Path) -> None:
    make_dirs(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
