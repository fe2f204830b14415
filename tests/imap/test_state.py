"""The state table and the registry: every pair, every command's states."""

from __future__ import annotations

import ast
import pathlib

import pytest

from dynamail.imap import commands
from dynamail.imap.commands import REGISTRY, Flags
from dynamail.imap.state import TRANSITIONS, State, Transition, next_state


@pytest.mark.parametrize("pair", sorted(TRANSITIONS, key=str))
def test_every_transition(pair: tuple[State, Transition]) -> None:
    assert next_state(*pair) is TRANSITIONS[pair]


def test_undefined_transitions_are_errors() -> None:
    for state in State:
        for t in Transition:
            if (state, t) not in TRANSITIONS:
                with pytest.raises(KeyError):
                    next_state(state, t)
    assert not any(s is State.LOGOUT for s, _ in TRANSITIONS)


def test_registry_flags() -> None:
    for name in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "SORT"):
        assert REGISTRY[name].flags & Flags.USES_SEQNUMS
        assert not REGISTRY["UID " + name].flags & Flags.USES_SEQNUMS
    for name in ("EXPUNGE", "MOVE", "UID MOVE", "CLOSE", "UID EXPUNGE"):
        assert REGISTRY[name].flags & Flags.BREAKS_SEQNUMS
    for name in ("STARTTLS", "AUTHENTICATE", "IDLE", "LOGOUT"):
        assert REGISTRY[name].flags & Flags.NEEDS_SYNC
    assert State.LOGOUT not in set().union(*(s.states for s in REGISTRY.values()))


CORE = ["framer", "parser", "response", "session", "state", "selected", "fetch", "search",
        "limits", "errors", "utf7", "commands/__init__", "commands/connection",
        "commands/mailboxes", "commands/messages"]


@pytest.mark.parametrize("module", CORE)
def test_core_is_sans_io(module: str) -> None:
    base = pathlib.Path(commands.__file__).parent.parent
    tree = ast.parse((base / f"{module}.py").read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for n in names:
            assert n.split(".")[0] not in ("asyncio", "socket", "ssl", "selectors"), (module, n)
