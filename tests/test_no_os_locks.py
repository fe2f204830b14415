"""Nothing in dynamail takes an operating-system file lock (SPEC §1: the
cluster's account ownership is the only synchronisation).  Names in code
are checked, not words in comments or docstrings."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import dynamail

FORBIDDEN = {"flock", "lockf", "fcntl", "F_SETLK", "F_SETLKW", "F_OFD_SETLK"}


def test_no_module_uses_os_file_locks() -> None:
    root = Path(dynamail.__file__).parent
    sources = sorted(root.rglob("*.py"))
    assert len(sources) > 50
    offenders = []
    for path in sources:
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        for tok in tokens:
            if tok.type == tokenize.NAME and tok.string in FORBIDDEN:
                offenders.append(f"{path.relative_to(root)}:{tok.start[0]}")
    assert offenders == []
