"""A rights refusal does not reveal whether the account exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.admin.test_operations import World, code_of, make_world


@pytest.fixture
def w(tmp_path: Path) -> World:
    return make_world(tmp_path)


def test_missing_account_is_forbidden_to_those_without_rights(w: World) -> None:
    a = w.admin
    for address in ("bob@b.example", "ghost@b.example", "ghost@a.example"):
        assert code_of(a.get_account_settings(w.alice, address)) == "forbidden", address
        assert code_of(a.delete_account(w.alice, address)) == "forbidden", address
        assert code_of(a.get_account_rights(w.alice, address)) == "forbidden", address
        assert code_of(a.list_mailboxes(w.alice, address)) == "forbidden", address
    assert code_of(a.get_account_settings(w.dadmin, "ghost@b.example")) == "forbidden"
    # those who may see the domain's accounts still learn that it is missing
    assert code_of(a.get_account_settings(w.dadmin, "ghost@a.example")) == "not_found"
    assert code_of(a.get_account_settings(w.monitor, "ghost@b.example")) == "not_found"
    assert code_of(a.delete_account(w.other_admin, "ghost@b.example")) == "not_found"
    assert code_of(a.get_account_settings(w.master, "ghost@b.example")) == "not_found"
