"""A child process appends and is killed with SIGKILL at a random moment;
every message it had acknowledged is there after reopening.

The child is forked (no interpreter start-up), so hundreds of iterations
run in a few seconds; ``bench/storage.py --kill-iterations N`` runs the long
form.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from tests.storage.killing import run_iterations

ITERATIONS = 100
# the first write of an owner creates its own log file and names it in its
# manifest (a few fsyncs) before anything is acknowledged
MAX_DELAY = 0.08


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.xdist_group("storage")
def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    total = run_iterations(tmp_path / "acct", ITERATIONS, max_delay=MAX_DELAY)
    assert total >= ITERATIONS // 10  # the children did get work acknowledged
