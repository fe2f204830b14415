from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from dynamail.directory import Directory

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    return Directory(tmp_path / "base", main_domain="main.example", password_hasher=FAST_HASHER)
