"""Connection states of an IMAP session and the transitions between them
(RFC 9051 section 3, figure in 3.5), as data.

A command is valid only in the states its registry entry lists
(:mod:`dynamail.imap.commands`); a command's outcome is one of the
:class:`Transition` values and :data:`TRANSITIONS` says where it leads.  A
(state, transition) pair that is not in the table is a programming error and
raises ``KeyError`` — every pair in the table has a test.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class Transition(enum.Enum):
    LOGGED_IN = "logged in"  # LOGIN / AUTHENTICATE / relay ticket succeeded
    SELECTED = "selected"  # SELECT / EXAMINE succeeded
    SELECT_FAILED = "select failed"  # RFC 9051 6.3.2: a failed SELECT deselects
    CLOSED = "closed"  # CLOSE / UNSELECT
    LOGOUT = "logout"  # LOGOUT, BYE, relayed away, fenced


ANY_STATE = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})

TRANSITIONS: dict[tuple[State, Transition], State] = {
    (State.NOT_AUTHENTICATED, Transition.LOGGED_IN): State.AUTHENTICATED,
    (State.NOT_AUTHENTICATED, Transition.LOGOUT): State.LOGOUT,
    (State.AUTHENTICATED, Transition.SELECTED): State.SELECTED,
    (State.AUTHENTICATED, Transition.SELECT_FAILED): State.AUTHENTICATED,
    (State.AUTHENTICATED, Transition.LOGOUT): State.LOGOUT,
    (State.SELECTED, Transition.SELECTED): State.SELECTED,
    (State.SELECTED, Transition.SELECT_FAILED): State.AUTHENTICATED,
    (State.SELECTED, Transition.CLOSED): State.AUTHENTICATED,
    (State.SELECTED, Transition.LOGOUT): State.LOGOUT,
}


def next_state(state: State, transition: Transition) -> State:
    return TRANSITIONS[(state, transition)]
