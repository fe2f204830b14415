"""DKIM signing in a real ``dynamail serve``: keys made with ``dynamail admin
domain dkim``, submitted mail signed once before it is queued, verified with
dkimpy against the published records; notices (DSNs) signed too."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from click.testing import CliRunner
from tests.smtp.live import LiveServer, Sink, client_tls, next_host, prepare, wait_port
from tests.smtp.test_live import message, pop3_messages

from dynamail.cli.admin import admin

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mailauth-sign")]

ALICE, PW = "alice@example.org", "alice-pw"
SINK_PORT = 2526


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink(next_host(), SINK_PORT)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("sign") / "base"
    host = sink.server_address[0]
    toml = f'[smtp]\nqueue_retry_seconds = 0.3\nmx = {{ "remote.example" = "{host}:{SINK_PORT}" }}\n'
    prepare(base, {ALICE: PW}, toml)
    srv = LiveServer(base, next_host())
    srv.start()
    wait_port(srv.host, srv.port("http"))
    yield srv
    srv.stop()


def cli(server: LiveServer, *args: str) -> dict:  # type: ignore[type-arg]
    result = CliRunner().invoke(
        admin, ["--server", f"{server.host}:{server.port('http')}", "--user", "postmaster",
                "--password", "postmaster-pw", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict = json.loads(result.output)  # type: ignore[type-arg]
    return data


def dnsfunc_for(keys: list[dict]):  # type: ignore[no-untyped-def,type-arg]
    records = {k["name"] + ".": k["txt"].encode() for k in keys}
    return lambda name, timeout=5: records.get(name.decode())


@pytest.fixture(scope="module")
def keys(server: LiveServer) -> list[dict]:  # type: ignore[type-arg]
    cli(server, "domain", "dkim", "create", "example.org", "--algorithm", "rsa", "--selector", "r1")
    made: list[dict] = cli(server, "domain", "dkim", "create", "example.org", "--algorithm", "ed25519",  # type: ignore[type-arg]
                           "--selector", "e1")["keys"]
    assert {k["selector"] for k in made if k["active"]} == {"r1", "e1"}
    return made


def current(server: LiveServer) -> list[dict]:  # type: ignore[type-arg]
    got: list[dict] = cli(server, "domain", "dkim", "show", "example.org")["keys"]  # type: ignore[type-arg]
    return got


def test_submitted_mail_is_signed_and_verifies(server: LiveServer, sink: Sink, keys: list[dict]) -> None:  # type: ignore[type-arg]
    shown = CliRunner().invoke(admin, ["--server", f"{server.host}:{server.port('http')}", "--user", "postmaster",
                                       "--password", "postmaster-pw", "domain", "dkim", "show", "example.org"])
    assert '._domainkey.example.org. IN TXT ( "v=DKIM1; k=rsa; p=' in shown.output
    assert '._domainkey.example.org. IN TXT ( "v=DKIM1; k=ed25519; p=' in shown.output

    before = len(sink.messages)
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), timeout=20) as s:
        s.login(ALICE, PW)
        msg = message("friend@remote.example", "signed mail")
        del msg["From"]
        msg["From"] = f"Alice <{ALICE}>"
        assert s.send_message(msg, from_addr=ALICE, to_addrs=["friend@remote.example", ALICE]) == {}
    _, _, data = sink.wait_messages(before + 1)[-1]
    assert data.startswith(b"DKIM-Signature: ")
    dnsfunc = dnsfunc_for(current(server))
    d = dkim.DKIM(data)
    assert d.verify(idx=0, dnsfunc=dnsfunc) and d.verify(idx=1, dnsfunc=dnsfunc)
    # the local copy carries the same signatures
    [local] = [m for m in pop3_messages(server, ALICE, PW) if b"Subject: signed mail" in m]
    assert dkim.verify(local, dnsfunc=dnsfunc)
    assert not dkim.verify(data.replace(b"Hello.", b"Hullo."), dnsfunc=dnsfunc)


def test_signed_once_before_the_first_attempt(server: LiveServer, sink: Sink, keys: list[dict]) -> None:  # type: ignore[type-arg]
    """A recipient that answers 451 keeps the entry queued: its stored
    message is the signed one that every retry sends."""
    with smtplib.SMTP_SSL(server.host, server.port("smtps"), context=client_tls(), timeout=20) as s:
        s.login(ALICE, PW)
        msg = message("later@remote.example", "retried mail")
        del msg["From"]
        msg["From"] = ALICE
        assert s.send_message(msg, from_addr=ALICE, to_addrs=["later@remote.example"]) == {}
    queue = Path(server.base) / "Queue"
    [entry] = [p for p in queue.glob("*.msg") if b"Subject: retried mail" in p.read_bytes()]
    stored = entry.read_bytes()
    assert stored.startswith(b"DKIM-Signature: ") and stored.count(b"DKIM-Signature: ") == 2
    assert dkim.verify(stored, dnsfunc=dnsfunc_for(current(server)))


def test_rotation_through_the_cli(server: LiveServer, keys: list[dict]) -> None:  # type: ignore[type-arg]
    before = {k["selector"] for k in current(server) if k["active"]}
    keys = cli(server, "domain", "dkim", "rotate", "example.org")["keys"]
    after = {k["selector"] for k in keys if k["active"]}
    assert len(after) == 2 and not after & before
    assert {k["selector"] for k in keys if not k["active"]} >= before
