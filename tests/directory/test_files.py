from __future__ import annotations

from pathlib import Path

import pytest

from dynamail.directory.files import CorruptFile, JsonFiles


def test_cache_is_bounded_and_validated(tmp_path: Path) -> None:
    files = JsonFiles(max_entries=3)
    paths = [tmp_path / f"f{i}.json" for i in range(5)]
    for i, p in enumerate(paths):
        files.write(p, {"i": i})
    for p in paths:
        files.read(p, {})
    assert files.reads == 5
    files.read(paths[4], {})  # still cached
    assert files.reads == 5
    files.read(paths[0], {})  # evicted: read again
    assert files.reads == 6
    # a replacement by anyone (here: plain write) is noticed
    paths[4].write_text('{"i": 40}')
    assert files.read(paths[4], {}) == {"i": 40}
    # returned values are copies
    v = files.read(paths[4], {})
    v["i"] = 0
    assert files.read(paths[4], {}) == {"i": 40}
    assert files.read(tmp_path / "missing.json", {"d": 1}) == {"d": 1}


def test_corrupt_and_wrong_shape(tmp_path: Path) -> None:
    files = JsonFiles()
    (tmp_path / "torn.json").write_bytes(b'{"a": ')
    (tmp_path / "list.json").write_bytes(b"[1, 2]")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    for name in ("torn.json", "list.json", "bad.json"):
        with pytest.raises(CorruptFile):
            files.read(tmp_path / name, {})
