"""The sans-IO core alone: the state table, reply shapes, random input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.accounts import AccountRef
from dynamail.cliproto.core import (
    TRANSITIONS,
    Authenticate,
    CliCore,
    Execute,
    Send,
    State,
    Verb,
)

ME = AccountRef("main.test", "postmaster")

LINES = {
    Verb.USER: b"USER postmaster",
    Verb.PASS: b"PASS pw",
    Verb.APOP: b"APOP postmaster 0123456789abcdef0123456789abcdef",
    Verb.INLINE: b"INLINE",
    Verb.NOOP: b"NOOP",
    Verb.QUIT: b"QUIT",
    Verb.COMMAND: b"LISTDOMAINS",
}


def core_in(state: State) -> CliCore:
    core = CliCore("main.test", "<1.2@main.test>", version="t")
    if state is State.PASSWORD:
        assert isinstance(core.receive(b"USER postmaster\r\n"), Send)
    elif state is State.READY:
        core.receive(b"USER postmaster\r\n")
        assert isinstance(core.receive(b"PASS pw\r\n"), Authenticate)
        core.login_done(ME)
    assert core.state is state
    return core


@pytest.mark.parametrize("state", [State.LOGIN, State.PASSWORD, State.READY])
@pytest.mark.parametrize("verb", list(Verb))
def test_every_state_and_verb(state: State, verb: Verb) -> None:
    core = core_in(state)
    action = core.receive(LINES[verb] + b"\r\n")
    if (state, verb) not in TRANSITIONS:
        assert isinstance(action, Send)
        assert action.data.startswith(b"500 ") and not action.close
        assert core.state is state
        return
    if verb is Verb.QUIT:
        assert isinstance(action, Send) and action.close and core.state is State.CLOSED
    elif verb in (Verb.PASS, Verb.APOP):
        assert isinstance(action, Authenticate) and core.state is State.BUSY
        if verb is Verb.APOP:
            assert action.token == "<1.2@main.test>" and action.apop_digest
    elif verb is Verb.COMMAND:
        assert isinstance(action, Execute) and action.actor == ME
        assert action.command.name == "LISTDOMAINS"
        assert core.state is State.BUSY
        reply = core.command_done(["a", "b"])
        assert reply.data == b"200 data follow\r\n(a,b)\r\n"
        assert core.state is State.READY
    elif verb is Verb.USER:
        assert isinstance(action, Send) and action.data.startswith(b"300 ")
    else:
        assert isinstance(action, Send) and action.data == b"200 OK\r\n"


def test_busy_core_refuses_input() -> None:
    core = core_in(State.READY)
    core.receive(b"LISTDOMAINS\r\n")
    with pytest.raises(RuntimeError):
        core.receive(b"NOOP\r\n")
    core.command_failed(513, "no such thing")
    assert core.state is State.READY


def test_inline_data_and_errors() -> None:
    core = core_in(State.READY)
    core.receive(b"INLINE\r\n")
    core.receive(b"GETVERSION\r\n")
    assert core.command_done("dynamail 1").data == b'201 "dynamail 1"\r\n'
    core.receive(b"LISTDOMAINS\r\n")
    assert core.command_done([]).data == b"201 ()\r\n"
    core.receive(b"LISTDOMAINS\r\n")
    assert core.command_done({}).data == b"201 {}\r\n"
    core.receive(b"LISTDOMAINS\r\n")
    assert core.command_done("").data == b'201 ""\r\n'
    core.receive(b"LISTDOMAINS\r\n")
    assert core.command_done().data == b"200 OK\r\n"
    core.receive(b"LISTDOMAINS\r\n")
    assert core.command_failed(520, "line\r\nbreak").data == b"520 line  break\r\n"
    core.receive(b"LISTDOMAINS\r\n")
    assert core.command_failed(200, "odd").data.startswith(b"501 ")


def test_verbs_are_case_insensitive() -> None:
    core = core_in(State.LOGIN)
    assert core.receive(b"user postmaster\r\n").data.startswith(b"300 ")  # type: ignore[union-attr]
    core = core_in(State.READY)
    assert isinstance(core.receive(b"listDomains\n"), Execute)


def test_closed_core_only_closes() -> None:
    core = core_in(State.READY)
    core.receive(b"QUIT\r\n")
    action = core.receive(b"NOOP\r\n")
    assert isinstance(action, Send) and action.close


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=12))
def test_random_lines_always_get_one_well_formed_reply(lines: list[bytes]) -> None:
    core = core_in(State.READY)
    for raw in lines:
        if core.state is State.CLOSED:
            break
        action = core.receive(raw)
        if isinstance(action, Execute):
            action = core.command_done(None)
        elif isinstance(action, Authenticate):
            action = core.login_done(None)
        assert isinstance(action, Send)
        text = action.data.decode("utf-8")
        assert text.endswith("\r\n") and text[:3].isdigit() and text[3] == " "
        assert text.count("\r\n") == 1 or text.startswith("200 data follow")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='LISTDOMAINSCREATEACCOUNT {}()[]#"\\=;,@.aZ09 \t', max_size=80))
def test_command_soup_never_crashes(line: str) -> None:
    core = core_in(State.READY)
    action = core.receive(line.encode())
    if isinstance(action, Execute):
        assert action.command.name in line.upper()
    else:
        assert isinstance(action, Send)
