"""Nothing in the storage engine takes an operating-system file lock."""

from __future__ import annotations

import re
from pathlib import Path

import dynamail.storage

FORBIDDEN = re.compile(r"\b(flock|lockf|fcntl)\b")


def test_storage_never_uses_os_locks() -> None:
    root = Path(dynamail.storage.__file__).parent
    sources = [*sorted(root.glob("*.py")), root.parent / "mime.py"]
    assert len(sources) >= 8
    offenders = [f"{p.name}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert offenders == []
