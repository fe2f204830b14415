"""The sans-IO ManageSieve core: transcripts of every command, literals,
limits, SASL PLAIN, STARTTLS, and random input."""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamail.cluster.challenge import decode_nonce
from dynamail.managesieve.core import (
    COMMANDS,
    NEED_DATA,
    PAUSED,
    Closing,
    Login,
    ManageSieveConfig,
    ManageSieveServer,
    ScriptOp,
    StartTls,
    State,
)
from dynamail.managesieve.limits import MAX_COMMAND_LINE, MAX_LITERAL


def server(**kw: object) -> ManageSieveServer:
    core = ManageSieveServer(ManageSieveConfig("mail.example", **kw))  # type: ignore[arg-type]
    core.greeting()
    core.data_to_send()
    return core


def feed(core: ManageSieveServer, data: bytes) -> tuple[object, bytes]:
    core.receive_data(data)
    ev = core.next_event()
    return ev, core.data_to_send()


def plain(user: str, pw: str) -> str:
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def logged_in() -> ManageSieveServer:
    core = server(tls_active=True)
    ev, _ = feed(core, f'AUTHENTICATE "PLAIN" "{plain("bob", "pw")}"\r\n'.encode())
    assert ev == Login("plain", "bob", "pw", "")
    core.login_succeeded("bob")
    core.data_to_send()
    return core


def test_greeting_lists_capabilities() -> None:
    core = ManageSieveServer(ManageSieveConfig("mail.example", tls_available=True))
    core.greeting()
    out = core.data_to_send()
    assert out.startswith(b'"IMPLEMENTATION" "dynamail"\r\n"SIEVE" "fileinto reject ereject envelope')
    assert b'"SASL" ""\r\n' in out  # no plaintext mechanism before TLS
    assert b'"STARTTLS"\r\n' in out and b'"VERSION" "1.0"\r\n' in out
    assert out.endswith(b'OK "mail.example ManageSieve ready"\r\n')


def test_starttls_then_capabilities_again() -> None:
    core = server(tls_available=True)
    ev, out = feed(core, b"AUTHENTICATE \"PLAIN\" \"x\"\r\n")
    assert out == b'NO (ENCRYPT-NEEDED) "Authentication requires TLS"\r\n'
    ev, out = feed(core, b"STARTTLS\r\n")
    assert isinstance(ev, StartTls) and out == b'OK "Begin TLS negotiation now"\r\n'
    assert core.next_event() is PAUSED
    core.tls_started()
    out = core.data_to_send()
    assert b'"SASL" "PLAIN"' in out and b"STARTTLS" not in out and out.endswith(b'OK "TLS active"\r\n')


def test_authenticate_with_challenge_cancel_and_failures() -> None:
    core = server(tls_active=True)
    ev, out = feed(core, b'AUTHENTICATE "PLAIN"\r\n')
    assert ev is NEED_DATA and out == b'""\r\n' and core.state is State.SASL
    ev, out = feed(core, b'"*"\r\n')
    assert out == b'NO "Authentication cancelled"\r\n'
    feed(core, b'AUTHENTICATE "PLAIN"\r\n')
    resp = plain("bob", "pw").encode()
    ev, _ = feed(core, b"{%d+}\r\n" % len(resp) + resp + b"\r\n")
    assert ev == Login("plain", "bob", "pw", "")
    core.login_failed()
    assert core.data_to_send() == b'NO "Authentication failed"\r\n'
    for _ in range(2):
        ev, _ = feed(core, f'AUTHENTICATE "PLAIN" "{plain("bob", "x")}"\r\n'.encode())
        core.login_failed()
    assert core.data_to_send() == b'BYE "Too many failed authentications"\r\n' and core.state is State.CLOSED


def test_script_commands() -> None:
    core = logged_in()
    script = b'require "fileinto";\r\nfileinto "x";\r\n'
    ev, out = feed(core, b'PUTSCRIPT "main" {%d+}\r\n' % len(script) + script + b"\r\n")
    assert ev == ScriptOp("put", ("main", script.decode())) and out == b""
    core.op_done()
    assert core.data_to_send() == b"OK\r\n"
    ev, _ = feed(core, b"LISTSCRIPTS\r\n")
    assert ev == ScriptOp("list", ())
    core.op_done([("main", True), ('we"ird', False)])
    assert core.data_to_send() == b'"main" ACTIVE\r\n"we\\"ird"\r\nOK\r\n'
    ev, _ = feed(core, b'GETSCRIPT "main"\r\n')
    core.op_done("keep;")
    assert core.data_to_send() == b"{5}\r\nkeep;\r\nOK\r\n"
    ev, _ = feed(core, b'GETSCRIPT "nope"\r\n')
    core.op_failed("NONEXISTENT", "No such script")
    assert core.data_to_send() == b'NO (NONEXISTENT) "No such script"\r\n'
    assert feed(core, b'SETACTIVE ""\r\n')[0] == ScriptOp("activate", ("",))
    core.op_done()
    assert feed(core, b'DELETESCRIPT "main"\r\n')[0] == ScriptOp("delete", ("main",))
    core.op_done()
    assert feed(core, b'RENAMESCRIPT "a" "b"\r\n')[0] == ScriptOp("rename", ("a", "b"))
    core.op_done()
    core.data_to_send()
    assert feed(core, b'HAVESPACE "a" 100\r\n')[1] == b"OK\r\n"
    assert feed(core, b'HAVESPACE "a" 99999999\r\n')[1] == b'NO (QUOTA/MAXSIZE) "Script too large"\r\n'
    assert feed(core, b'CHECKSCRIPT "keep;"\r\n')[1] == b"OK\r\n"
    assert feed(core, b'CHECKSCRIPT "fileinto \\"x\\";"\r\n')[1] == \
        b'NO "line 1: fileinto requires the \'fileinto\' extension"\r\n'
    assert feed(core, b'PUTSCRIPT "bad" "frob;"\r\n')[1] == b'NO "line 1: unknown command \'frob\'"\r\n'
    assert feed(core, b'PUTSCRIPT "" "keep;"\r\n')[1] == b'NO "Bad script name length"\r\n'
    assert feed(core, b'NOOP "t1"\r\n')[1] == b'OK (TAG "t1") "Done"\r\n'
    assert feed(core, b"AUTHENTICATE \"PLAIN\"\r\n")[1] == b'NO "Not allowed now"\r\n'
    ev, out = feed(core, b"LOGOUT\r\n")
    assert isinstance(ev, Closing) and out == b'OK "Logout"\r\n'


def test_state_table() -> None:
    core = server()
    for name, cmd in COMMANDS.items():
        if State.NONAUTH not in cmd.states:
            assert feed(core, name.encode() + b"\r\n")[1] == b'NO "Not allowed now"\r\n'
    assert feed(core, b"XDYNAMAIL-RELAY \"t\"\r\n")[1] == b'NO "Unknown command"\r\n'
    assert feed(core, b"FROB\r\n")[1] == b'NO "Unknown command"\r\n'
    assert feed(core, b'HAVESPACE\r\n')[1] == b'NO "Not allowed now"\r\n'
    assert feed(core, b"XDYNAMAIL-CHALLENGE\r\n")[1] == b'NO "Unknown command"\r\n'
    relay = server(relay_command=True)
    assert feed(relay, b'XDYNAMAIL-RELAY "ticket"\r\n')[0] == Login("relay", "", "ticket")


def _challenge(core: ManageSieveServer) -> bytes:
    ev, out = feed(core, b"XDYNAMAIL-CHALLENGE\r\n")
    assert ev is NEED_DATA
    m = re.fullmatch(rb'OK \(XDYNAMAIL-CHALLENGE "([^"]+)"\)\r\n', out)
    assert m is not None, out
    nonce = decode_nonce(m.group(1))
    assert nonce is not None and len(nonce) >= 12
    return nonce


def test_relay_challenge_transcript() -> None:
    core = server(tls_active=True, relay_command=True)
    nonce = _challenge(core)
    assert feed(core, b"XDYNAMAIL-CHALLENGE\r\n")[1] == b'NO "Challenge already issued on this connection"\r\n'
    assert feed(core, b'XDYNAMAIL-CHALLENGE "x"\r\n')[1] == b'NO "Wrong number of arguments to XDYNAMAIL-CHALLENGE"\r\n'
    ev, _ = feed(core, b'XDYNAMAIL-RELAY "bad"\r\n')
    assert ev == Login("relay", "", "bad", challenge=nonce)
    core.login_failed("Invalid relay ticket")
    assert core.data_to_send() == b'NO "Invalid relay ticket"\r\n'
    ev, out = feed(core, b'XDYNAMAIL-RELAY "ticket"\r\n')
    assert ev is NEED_DATA and out == b'NO "Relay challenge already used on this connection"\r\n'
    # another connection: its own nonce; after login the command is out of state
    other = server(tls_active=True, relay_command=True)
    second = _challenge(other)
    assert second != nonce
    ev, _ = feed(other, b'XDYNAMAIL-RELAY "ticket"\r\n')
    assert ev == Login("relay", "", "ticket", challenge=second)
    other.login_succeeded("alice")
    other.data_to_send()
    assert feed(other, b"XDYNAMAIL-CHALLENGE\r\n")[1] == b'NO "Not allowed now"\r\n'
    # a relaying member of an earlier release asks for none: the old ticket, no nonce
    old = server(tls_active=True, relay_command=True)
    assert feed(old, b'XDYNAMAIL-RELAY "ticket"\r\n')[0] == Login("relay", "", "ticket", challenge=b"")


def test_limits_and_bad_input() -> None:
    core = logged_in()
    huge = MAX_LITERAL + 1
    core.receive_data(b'PUTSCRIPT "big" {%d+}\r\n' % huge)
    for _ in range(huge // 65536 + 1):
        core.receive_data(b"x" * min(65536, huge))
        assert core.next_event() is NEED_DATA
        huge -= min(65536, huge)
        if huge <= 0:
            break
    core.receive_data(b"\r\n")
    assert core.next_event() is NEED_DATA
    assert core.data_to_send() == b'NO (QUOTA/MAXSIZE) "Literal too large"\r\n'
    assert len(core._in) == 0 and len(core._literal) == 0
    assert feed(core, b"x" * (MAX_COMMAND_LINE + 10))[1] == b'NO "Line too long"\r\n'
    assert feed(core, b"more\r\nNOOP\r\n")[1] == b'OK "Done"\r\n'
    assert feed(core, b'PUTSCRIPT "a" "b" "c" "d" "e" "f"\r\n')[1] == b'NO "Too many arguments"\r\n'
    assert feed(core, b'GETSCRIPT "unterminated\r\n')[1] == b'NO "Unterminated string"\r\n'
    assert feed(core, b"GETSCRIPT {x}\r\n")[1] == b'NO "Bad literal"\r\n'
    assert feed(core, b"HAVESPACE 1 \"a\"\r\n")[1] == b'NO "Bad arguments to HAVESPACE"\r\n'
    assert feed(core, b"\xff\r\n")[1] == b'NO "Command is not UTF-8"\r\n'


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_random_input_never_crashes(chunks: list[bytes]) -> None:
    core = server(tls_active=True, relay_command=True)
    for chunk in chunks:
        core.receive_data(chunk)
        for _ in range(50):
            ev = core.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                break
            if isinstance(ev, Login):
                core.login_failed()
            elif isinstance(ev, ScriptOp):
                core.op_failed("", "no")
            elif isinstance(ev, StartTls):
                core.tls_started()
            elif isinstance(ev, Closing):
                break
        assert len(core._in) <= MAX_COMMAND_LINE + 64 + MAX_LITERAL
        core.data_to_send()


def test_only_ascii_digits_are_numbers() -> None:
    core = logged_in()
    assert feed(core, 'HAVESPACE "a" ²8\r\n'.encode())[1] == b'NO "Bad arguments to HAVESPACE"\r\n'
    assert feed(core, 'GETSCRIPT {²}\r\n'.encode())[1] == b'NO "Bad literal"\r\n'
