"""Protocol cores are sans-IO: no module of a protocol package except its
``adapter.py`` imports asyncio, socket or ssl (STYLE.md, "Shape of the house").

The I/O modules besides the adapters are named here, one by one
(:data:`IO_MODULES`), each for a reason; every other module (parsers,
state machines, queue rules) must stay I/O-free:

- ``smtp/outbound.py``: the outbound queue's delivery loop and the client
  transport that connects to other mail servers (its decisions are made by
  the sans-IO ``smtp/client.py`` and ``smtp/queue.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dynamail

PACKAGES = ("imap", "pop3", "smtp", "cliproto", "managesieve", "sieve")
FORBIDDEN = frozenset({"asyncio", "socket", "ssl", "uvloop", "selectors"})
ROOT = Path(dynamail.__file__).parent
IO_MODULES = frozenset({"smtp/outbound.py", "sieve/filter.py"})


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
    return sorted(
        p for p in (ROOT / package).rglob("*.py")
        if p.name != "adapter.py" and p.relative_to(ROOT).as_posix() not in IO_MODULES
    )


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


def test_io_modules_are_few_and_exist() -> None:
    """The allow-list names real modules, and they really do I/O (else they
    belong under the sans-IO rule again)."""
    for name in IO_MODULES:
        path = ROOT / name
        assert path.is_file(), f"{name} is allowed I/O but does not exist"
        assert _imports(path) & FORBIDDEN, f"{name} does no I/O: remove it from IO_MODULES"
