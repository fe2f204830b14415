"""Size and count limits must be readable by the code that enforces them:
an unreadable value would silently mean "unlimited"."""

from __future__ import annotations

import pytest

from dynamail.directory import BadSetting, Directory


@pytest.mark.parametrize("key,value", [
    ("MaxAccountSize", "lots"), ("MaxAccountSize", "-5"), ("MaxAccountSize", -1),
    ("MaxAccountSize", "10X"), ("MaxMessageSize", True), ("MaxMessageSize", ["1M"]),
    ("MaxMailboxes", "many"), ("MaxMailboxes", "1.5"), ("MaxAccounts", "-3"),
])
def test_unreadable_limits_refused(directory: Directory, key: str, value: object) -> None:
    ref = directory.create_account("main.example", "u")
    with pytest.raises(BadSetting, match=key):
        directory.update_account_settings(ref, {key: value})
    with pytest.raises(BadSetting, match=key):
        directory.set_account_settings(ref, {key: value})
    with pytest.raises(BadSetting, match=key):
        directory.update_domain_settings("main.example", {key: value})
    assert directory.account_settings(ref) == {}


@pytest.mark.parametrize("key,value", [
    ("MaxAccountSize", "100M"), ("MaxAccountSize", "1.5g"), ("MaxAccountSize", "10MB"),
    ("MaxAccountSize", 4096), ("MaxAccountSize", "unlimited"), ("MaxMessageSize", "Unlimited"),
    ("MaxMailboxes", "20"), ("MaxMailboxes", 0), ("MaxAccounts", "unlimited"),
])
def test_readable_limits_kept(directory: Directory, key: str, value: object) -> None:
    if key == "MaxAccounts":  # a domain setting
        directory.update_domain_settings("main.example", {key: value})
        assert directory.domain_settings("main.example")[key] == value
        return
    ref = directory.create_account("main.example", "u")
    directory.update_account_settings(ref, {key: value})
    assert directory.account_settings(ref) == {key: value}
