"""The fault plan is a pure function of the seed."""

from __future__ import annotations

import itertools

from dynamail.chaos.schedule import (
    GAP,
    KIND_NAMES,
    KINDS,
    SLOW,
    STEP,
    STORAGE_POINTS,
    plan,
    process_state,
)


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    a = list(itertools.islice(plan(5, 1.5), 40))
    b = list(itertools.islice(plan(5, 1.5), 40))
    c = list(itertools.islice(plan(6, 1.5), 40))
    assert a == b and a != c
    assert {p.kind for p in a} == {k for k, _ in KINDS}


def test_planned_faults_respect_their_bounds() -> None:
    lease = 2.0
    for p in itertools.islice(plan(9, lease), 200):
        assert GAP[0] <= p.gap <= GAP[1]
        if p.kind == "pause":
            assert 1.5 * lease <= p.hold <= 4 * lease  # longer than the lease
        if p.kind == "storage-pause":
            assert p.point in STORAGE_POINTS and p.role in ("controller", "member")
        if p.kind == "kill-two":
            assert p.second_role and p.second > 0


def test_only_the_chosen_kinds() -> None:
    assert {p.kind for p in itertools.islice(plan(1, 1.0, ("pause",)), 30)} == {"pause"}


def test_process_state() -> None:
    import os

    assert process_state(os.getpid()) in ("R", "S")
    assert process_state(2**22 + 12345) == ""


def test_new_kinds_in_the_plan_with_their_bounds() -> None:
    lease = 1.5
    planned = list(itertools.islice(plan(3, lease, partitions=True, full=True), 400))
    assert {p.kind for p in planned} == set(KIND_NAMES)
    for p in planned:
        if p.kind in ("slow-storage", "clock-step", "partition"):
            assert 1.5 * lease <= p.hold <= 4 * lease
        if p.kind == "slow-storage":
            assert SLOW[0] <= p.delay <= SLOW[1]
        if p.kind == "clock-step":
            assert STEP[0] <= abs(p.step) <= STEP[1]
        if p.kind == "partition":
            assert p.second_role in ("controller", "backup", "member")
        if p.kind == "full-fs":
            assert 2 * lease <= p.hold <= 4 * lease
    assert not {"isolate", "partition", "full-fs"} & {p.kind for p in itertools.islice(plan(3, lease), 200)}
    only = {p.kind for p in itertools.islice(plan(4, lease, ("slow-storage", "clock-step")), 40)}
    assert only == {"slow-storage", "clock-step"}


def test_the_command_line_offers_every_kind() -> None:
    from dynamail.cli.chaos import KIND_NAMES as OFFERED

    assert OFFERED == KIND_NAMES


def test_the_command_line_refuses_a_kind_without_its_option() -> None:
    from click.testing import CliRunner

    from dynamail.cli.chaos import chaos

    for kind, option in (("partition", "--netns"), ("isolate", "--netns"), ("full-fs", "--small-fs")):
        result = CliRunner().invoke(chaos, ["--faults", f"pause,{kind}", "--seed", "1"])
        assert result.exit_code == 2 and f"{kind} needs {option}" in result.output
    result = CliRunner().invoke(chaos, ["--faults", "pause", "--small-fs", "3M"])
    assert result.exit_code == 2 and "below the smallest file system" in result.output
