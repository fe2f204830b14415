"""Property tests: any name either is refused or stays inside its directory;
any storable settings dictionary reads back exactly."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamail.directory import BadName, Directory, NoSuchDomain, model

from .conftest import FAST_HASHER

_ROOT = Path(tempfile.mkdtemp())
atexit.register(shutil.rmtree, _ROOT, True)
_DIR = Directory(_ROOT / "base", main_domain="main.example", password_hasher=FAST_HASHER)
_DIR.create_domain("d.example")

hostile_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="./\\\x00\n\r ab.-_+@%~", max_size=40),
    st.sampled_from(["..", "../..", "a/../../b", "CON", "a..", ".a", "a.", "-a", "%2e%2e", "a\u200bb"]),
)


def _inside(path: Path) -> bool:
    base = _DIR.base.resolve()
    return base in path.resolve().parents


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_text)
def test_account_names_never_escape(name: str) -> None:
    try:
        ref = _DIR.create_account("d.example", name)
    except BadName:
        assert _DIR.find_account(f"{name}@d.example") is None
        return
    except Exception as exc:  # AlreadyExists when hypothesis repeats a name
        assert type(exc).__name__ == "AlreadyExists"
        return
    path = _DIR.account_dir(ref)
    assert _inside(path) and path.parent.parent.name == "Accounts"
    assert path.name == ref.name and "/" not in ref.name and not ref.name.startswith(".")
    _DIR.delete_account(ref)


@settings(max_examples=200, deadline=None)
@given(hostile_text)
def test_domain_names_never_escape(name: str) -> None:
    try:
        _DIR.create_domain(name)
    except BadName:
        return
    except Exception as exc:
        assert type(exc).__name__ == "AlreadyExists"
        return
    canon, shared = _DIR.locate_domain(name)
    assert not shared and _inside(_DIR.domains_dir / canon)
    assert (_DIR.domains_dir / canon).parent == _DIR.domains_dir
    if canon not in ("main.example", "d.example"):
        _DIR.delete_domain(canon, force=True)
    try:
        _DIR.locate_domain(canon)
    except NoSuchDomain:
        pass


json_scalars = st.one_of(
    st.text(max_size=30).filter(lambda s: "\x00" not in s and s != "default"),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.booleans(),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=10).filter(
        lambda k: all(ord(c) >= 32 and c != "\x7f" for c in k)), inner, max_size=4),
    max_leaves=12,
)
# Limit settings have validated values (tests/directory cover them); any
# other key stores whatever JSON value it is given.
_VALIDATED = model.SIZE_SETTINGS | model.COUNT_SETTINGS
keys = st.text(min_size=1, max_size=20).filter(
    lambda k: all(ord(c) >= 32 and c != "\x7f" for c in k) and k not in _VALIDATED
).map(lambda k: "X-" + k)  # unknown keys are refused outside the custom namespace


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=8))
def test_settings_round_trip(values: dict[str, Any]) -> None:
    values = {k: v for k, v in values.items() if k.lower() != "password"}
    _DIR.set_domain_settings("d.example", {k: v for k, v in values.items() if k != "DomainAliases"})
    expected = {k: v for k, v in values.items() if k != "DomainAliases"}
    _DIR.invalidate()
    assert _DIR.domain_settings("d.example") == expected
    _DIR.set_server_account_defaults(values)
    assert _DIR.server_account_defaults() == values
