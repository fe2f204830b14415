"""dynamail.filemodes: private files and directories whatever the umask, and
the start-up check for trees others can read."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamail import filemodes


@pytest.fixture(params=[0o000, 0o022, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_helpers_create_exact_private_modes(tmp_path: Path, umask: int) -> None:
    filemodes.private_dirs(tmp_path / "a" / "b" / "c")
    for d in ("a", "a/b", "a/b/c"):
        assert mode(tmp_path / d) == 0o700, d
    filemodes.write_private(tmp_path / "a" / "f", b"x")
    assert mode(tmp_path / "a" / "f") == 0o600 and (tmp_path / "a" / "f").read_bytes() == b"x"
    filemodes.write_private(tmp_path / "a" / "f", b"y")  # a replacement too
    assert mode(tmp_path / "a" / "f") == 0o600 and (tmp_path / "a" / "f").read_bytes() == b"y"
    with filemodes.open_private(tmp_path / "a" / "log", "ab") as fh:
        fh.write(b"line\n")
    assert mode(tmp_path / "a" / "log") == 0o600
    os.close(filemodes.create_private(tmp_path / "a" / "g"))
    assert mode(tmp_path / "a" / "g") == 0o600
    with pytest.raises(FileExistsError):
        filemodes.create_private(tmp_path / "a" / "g")
    filemodes.private_mkdir(tmp_path / "d")
    assert mode(tmp_path / "d") == 0o700
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_existing_directories_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(mode=0o755)
    os.chmod(tmp_path / "open", 0o755)
    filemodes.private_dirs(tmp_path / "open" / "new")
    assert mode(tmp_path / "open") == 0o755 and mode(tmp_path / "open" / "new") == 0o700


def test_exposed_trees_are_found_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "base"
    filemodes.private_dirs(root / "Domains" / "x.test")
    filemodes.write_private(root / "Domains" / "x.test" / "Settings.json", b"{}")
    assert filemodes.find_exposed(root) == []
    (root / "Queue").mkdir(mode=0o755)
    os.chmod(root / "Queue", 0o755)
    for i in range(3):
        (root / "Queue" / f"{i}.msg").write_bytes(b"m")
        os.chmod(root / "Queue" / f"{i}.msg", 0o644)
    os.chmod(root / "Domains" / "x.test" / "Settings.json", 0o640)
    found = dict(filemodes.find_exposed(root))
    assert found == {root / "Queue": 0o755, root / "Domains" / "x.test" / "Settings.json": 0o640}
    with caplog.at_level(logging.WARNING, logger="dynamail.filemodes"):
        assert len(filemodes.warn_exposed(root)) == 2
    assert "readable by group or others" in caplog.text and "chmod -R go-rwx" in caplog.text
    assert len(filemodes.find_exposed(root, limit=1)) <= 2  # bounded
