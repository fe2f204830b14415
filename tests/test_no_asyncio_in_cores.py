"""Protocol cores are sans-IO: no module of a protocol package except its
``adapter.py`` imports asyncio, socket or ssl (STYLE.md, "Shape of the house")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dynamail

PACKAGES = ("imap", "pop3", "smtp", "cliproto")
FORBIDDEN = frozenset({"asyncio", "socket", "ssl", "uvloop", "selectors"})
ROOT = Path(dynamail.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _core_modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if p.name != "adapter.py")


@pytest.mark.parametrize("package", PACKAGES)
def test_protocol_cores_do_not_import_io(package: str) -> None:
    if not (ROOT / package).is_dir():
        pytest.skip(f"dynamail.{package} is not built yet")
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN)
        for p in _core_modules(package)
        if _imports(p) & FORBIDDEN
    }
    assert not offenders, f"sans-IO modules importing I/O: {offenders}"


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os\nfrom asyncio import sleep\nimport socket as s\n")
    assert _imports(sample) & FORBIDDEN == {"asyncio", "socket"}
