"""ENVID and ORCPT (RFC 3461 4): validation, decoding, canonical re-encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.smtp.fuzz_dsn import SEEDS, fuzz, fuzz_text

from dynamail.smtp.dsnparams import (
    DsnParamError,
    check_envid,
    check_orcpt,
    decode_xtext,
    encode_xtext,
    envid_for_report,
    orcpt_for_report,
)


def test_seed_corpus() -> None:
    for seed in SEEDS:
        fuzz_text(seed)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_random_text(value: str) -> None:
    fuzz_text(value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.text(alphabet=st.sampled_from("+=;\r\n\x00 aF0\u00e9"), max_size=8), st.integers(0, 40))
def test_mutated_seeds(seed: str, junk: str, at: int) -> None:
    fuzz((seed[:at] + junk + seed[at:]).encode())


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=30))
def test_round_trip(text: str) -> None:
    assert decode_xtext(encode_xtext(text)) == text


def test_canonical_forms() -> None:
    assert check_envid("env+2B1") == "env+2B1"
    assert check_envid("+41bc") == "Abc"  # an escape that need not be one is dropped
    assert check_orcpt("rfc822;a+2Bb@c") == "rfc822;a+2Bb@c"
    assert check_orcpt("utf-8;j\u00f6rg@x", utf8=True) == "utf-8;j\u00f6rg@x"
    assert envid_for_report("env+2B1") == "env+1"
    assert orcpt_for_report("rfc822;a+2Bb@c") == "rfc822;a+b@c"


@pytest.mark.parametrize("bad", ["env1\rX", "a+0D", "a+0a", "a+", "a=b", "", "x" * 101, "\u00e9"])
def test_bad_envid(bad: str) -> None:
    with pytest.raises(DsnParamError):
        check_envid(bad)
    assert envid_for_report(bad) is None  # an old queue entry cannot inject either


@pytest.mark.parametrize("bad", ["rfc822", ";a@b", "rfc822;", "rfc822;a\rb", "rfc822;a+0Ab", "rfc 822;a", "rfc822;j\u00f6rg"])
def test_bad_orcpt(bad: str) -> None:
    with pytest.raises(DsnParamError):
        check_orcpt(bad)
    assert orcpt_for_report(bad) is None or "\r" not in bad
