from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.imap.fuzz_parser import SEEDS, fuzz


def test_seed_corpus() -> None:
    for seed in SEEDS:
        fuzz(seed)


@given(st.sampled_from(SEEDS), st.binary(max_size=40), st.integers(0, 200))
@settings(max_examples=300)
def test_mutated_seeds(seed: bytes, junk: bytes, at: int) -> None:
    at = min(at, len(seed))
    fuzz(seed[:at] + junk + seed[at:])
