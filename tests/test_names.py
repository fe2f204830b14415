from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamail import names


@pytest.mark.parametrize(
    "bad", ["", "..", ".", "a/b", "a\\b", "a\x00b", "a\nb", "x" * 300, "-a.com", "a..b"]
)
def test_domain_rejects_hostile(bad: str) -> None:
    with pytest.raises(names.BadName):
        names.domain_name(bad)


def test_domain_canonical() -> None:
    assert names.domain_name("Example.COM.") == "example.com"


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "a\x00", "a b", "x" * 65, ".a", "a..b"])
def test_account_rejects_hostile(bad: str) -> None:
    with pytest.raises(names.BadName):
        names.account_name(bad)


@pytest.mark.parametrize("bad", ["", "../x", "a/../b", "a//b", "/a", "a/", "a\x00", "a\\b", "x" * 1001])
def test_mailbox_rejects_hostile(bad: str) -> None:
    with pytest.raises(names.BadName):
        names.mailbox_name(bad)


def test_mailbox_inbox_canonical() -> None:
    assert names.mailbox_name("inbox/Sub") == "INBOX/Sub"


@given(st.text(max_size=80))
def test_accepted_names_never_escape(s: str) -> None:
    for fn in (names.domain_name, names.account_name, names.mailbox_name):
        try:
            out = fn(s)
        except names.BadName:
            continue
        assert "\x00" not in out
        assert ".." not in out.split("/")
        assert not out.startswith("/")
