"""Issue 17: what an outside probe of a standalone server found, each checked
through the real ports of a real ``dynamail serve`` process."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import ACCOUNTS, DOMAIN, PM_PASSWORD, Server, free_host, source

pytestmark = pytest.mark.slow

LOGIN_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with short login and idle timeouts."""
    base = tmp_path_factory.mktemp("security") / "base"
    (base / "Settings").mkdir(parents=True)
    (base / "Settings" / "server.toml").write_text(
        f"[limits]\nlogin_timeout = {LOGIN_TIMEOUT}\nidle_timeout = {IDLE_TIMEOUT}\ncli_idle_timeout = {IDLE_TIMEOUT}\n"
    )
    srv = Server(base, free_host())
    srv.start()
    replies = srv.cli("postmaster", PM_PASSWORD, [
        f'CREATEACCOUNT {name}@{DOMAIN} {{Password="{pw}";}}' for name, pw in ACCOUNTS.items()
    ])
    assert all(r == "200 OK" for r in replies), replies
    try:
        yield srv
    finally:
        srv.stop()


# ---- finding 3: the time to log in counts from the connection ---------------------------


def _trickle(srv: Server, port: str, opening: list[bytes], drip: bytes, cap: float = 25.0) -> float:
    """Connect, send ``opening`` (one item per reply awaited), then one piece
    of ``drip`` every 0.4 s (cycling); the seconds until the server closes."""
    with socket.create_connection((srv.host, srv.port(port)), timeout=cap) as s:
        start = time.monotonic()
        f = s.makefile("rb")
        f.readline()  # greeting
        for line in opening:
            s.sendall(line)
            f.readline()
        s.settimeout(0.4)
        i = 0
        while time.monotonic() - start < cap:
            try:
                s.sendall(drip[i % len(drip) : i % len(drip) + 1] if len(drip) > 1 else drip)
            except OSError:
                return time.monotonic() - start
            i += 1
            try:
                while True:
                    got = s.recv(4096)
                    if not got:
                        return time.monotonic() - start
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - start
        return cap


def test_trickling_clients_are_cut_off_at_the_deadline(strict: Server) -> None:
    """Issue 17 finding 3: NOOP every second, an unfinished literal or a line
    trickled a byte at a time kept a client that never logs in connected for
    minutes (IMAP, admin CLI; submission before AUTH likewise); after login,
    a trickled line is bounded too."""
    alice = f"alice@{DOMAIN}"
    pre_login = {
        "imap NOOP": ("imap", [], b"a NOOP\r\n"),
        "imap literal": ("imap", [b"a LOGIN {999999999+}\r\n"], b"x"),
        "imap line": ("imap", [], b"a LOGIN alice"),
        "cli NOOP": ("cli", [], b"NOOP\r\n"),
        "cli line": ("cli", [], b"USER postmaster"),
        "pop3 line": ("pop3", [], b"USER alice"),
        "submission NOOP": ("submission", [b"EHLO c.example\r\n"], b"NOOP\r\n"),
    }
    after_login = {
        "imap line after login": ("imap", [f"l LOGIN {alice} {ACCOUNTS['alice']}\r\n".encode()], b"b SELECT INBOX"),
        "imap literal after login": ("imap", [f"l LOGIN {alice} {ACCOUNTS['alice']}\r\n".encode(),
                                              b"b APPEND INBOX {9999}\r\n"], b"x"),
        "cli line after login": ("cli", [b"USER postmaster\r\n", f"PASS {PM_PASSWORD}\r\n".encode()], b"GETDOMAIN"),
    }
    cases = {**pre_login, **after_login}
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(_trickle, strict, port, opening, drip) for name, (port, opening, drip) in cases.items()}
        held = {name: f.result() for name, f in futures.items()}
    slack = 4.0  # the server's timer granularity and a busy machine
    for name in pre_login:
        assert held[name] < LOGIN_TIMEOUT + slack, (name, held)
    for name in after_login:
        assert held[name] < LOGIN_TIMEOUT + IDLE_TIMEOUT + slack, (name, held)


# ---- findings 4 and 7: settings are typed at write time, security settings fail closed ---


def test_settings_are_validated_and_unknown_keys_refused(strict: Server) -> None:
    """Issue 17 findings 4 and 7, through the JSON API and the admin CLI."""
    path = f"/domains/{DOMAIN}/accounts/bob/settings"
    refused = [
        {"AccessModes": False}, {"AccessModes": 0}, {"AccessModes": {"IMAP": True}}, {"AccessModes": ["IMAP", "Telnet"]},
        {"MaxAccountSize": True}, {"MaxAccountSize": "lots"}, {"MaxAccountSize": -1}, {"AllowAPOP": "maybe"},
        {"RealName": ["a"]}, {"RealName": "a\nb"},
        {"Rights": ["Master"]}, {"PasswordHash": "x"}, {"Domain": "other.test"}, {"MaxAcountSize": "1M"},
        {"MaxAccounts": 5},  # a domain setting, not an account one
    ]
    for body in refused:
        status, answer = strict.api("postmaster", PM_PASSWORD, "PATCH", path, body)
        assert status == 400 and answer["error"]["code"] == "bad_request", (body, answer)
        assert next(iter(body)) in answer["error"]["message"], answer
    status, answer = strict.api("postmaster", PM_PASSWORD, "PATCH", path,
                                {"AccessModes": "imap, POP", "AllowAPOP": False, "X-Billing-Plan": {"tier": 2}})
    assert status == 200, answer
    status, own = strict.api("postmaster", PM_PASSWORD, "GET", path)
    assert own == {"AccessModes": ["IMAP", "POP"], "AllowAPOP": "NO", "X-Billing-Plan": {"tier": 2}}
    status, effective = strict.api("postmaster", PM_PASSWORD, "GET", path + "/effective")
    assert not {"Rights", "PasswordHash", "Domain"} & set(effective)
    status, answer = strict.api("postmaster", PM_PASSWORD, "PATCH", f"/domains/{DOMAIN}/settings", {"MailToUnknown": "Maybe"})
    assert status == 400, answer
    replies = strict.cli("postmaster", PM_PASSWORD, [
        f"UPDATEACCOUNTSETTINGS bob@{DOMAIN} {{AccessModes=#0;}}",
        f"UPDATEACCOUNTSETTINGS bob@{DOMAIN} {{Rights=(Master);}}",
        f"UPDATEACCOUNTSETTINGS bob@{DOMAIN} {{MaxAccountSize=lots;}}",
        f"SETACCOUNTDEFAULTS {DOMAIN} {{PasswordHash=x;}}",
        "UPDATESERVERACCOUNTPREFS {MessagesPerPage=#0;}",
        f"UPDATEACCOUNTSETTINGS bob@{DOMAIN} {{AccessModes=All; X-Note=\"kept\";}}",
    ])
    assert [r[:1] for r in replies] == ["5", "5", "5", "5", "5", "2"], replies
    assert "unknown account setting 'Rights'" in replies[1] and "X-" in replies[1]


def test_an_unparsable_stored_access_mode_denies(strict: Server) -> None:
    """Issue 17 finding 4: a value stored before these checks (or by hand)
    that the reader cannot parse denies; it used to mean "All"."""
    import imaplib
    import json

    [account_file] = strict.base.glob(f"Domains/{DOMAIN}/Accounts/*/alice/Account.json")
    imap = imaplib.IMAP4(strict.host, strict.port("imap"), timeout=20)
    imap.login(f"alice@{DOMAIN}", ACCOUNTS["alice"])
    imap.logout()
    record = json.loads(account_file.read_text())
    try:
        for bad in (False, 0, {"IMAP": True}, 1.5):
            record["settings"]["AccessModes"] = bad
            tmp = account_file.with_name(".Account.json.test.tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, account_file)
            imap = imaplib.IMAP4(strict.host, strict.port("imap"), timeout=20)
            with pytest.raises(imaplib.IMAP4.error):
                imap.login(f"alice@{DOMAIN}", ACCOUNTS["alice"])
            imap.shutdown()
    finally:
        record["settings"].pop("AccessModes", None)
        tmp = account_file.with_name(".Account.json.test.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, account_file)


# ---- findings 2 and 9: private files whatever the umask; no password on argv -----------


class UmaskServer(Server):
    """``dynamail serve`` started under ``umask``, the postmaster password
    given by ``--postmaster-password-file`` or by the environment."""

    umask: int = 0o022
    password_file: Path | None = None
    config: Path | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "dynamail", "serve", "--base", str(self.base), "--listen", self.host,
               "--port-offset", str(self.offset), "--main-domain", DOMAIN]
        env = dict(os.environ)
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if self.password_file is not None:
            cmd += ["--postmaster-password-file", str(self.password_file)]
        else:
            env["DYNAMAIL_POSTMASTER_PASSWORD"] = PM_PASSWORD
        umask = self.umask
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=lambda: os.umask(umask))
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                for name in ("smtp", "submission", "cli", "http"):
                    socket.create_connection((self.host, self.port(name)), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _modes(base: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            found[str(path.relative_to(base))] = stat.S_IMODE(os.lstat(path).st_mode)
    found["."] = stat.S_IMODE(os.stat(base).st_mode)
    return found


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_every_file_a_server_creates_is_private(tmp_path: Path, umask: int) -> None:
    """Issue 17 finding 2 (files 0600, directories 0700 under umask 022 and
    000) and finding 9 (the postmaster password from a file or the
    environment, never on the command line)."""
    base = tmp_path / "base"  # created by the server: every file and directory in it is its own
    srv = UmaskServer(base, free_host())
    srv.umask = umask
    if umask:
        srv.password_file = tmp_path / "pm.secret"
        srv.password_file.write_text(PM_PASSWORD + "\n")
        srv.password_file.chmod(0o600)
    srv.config = tmp_path / "server.toml"  # outside the base: a queue entry stays (its MX is down)
    srv.config.write_text('[smtp]\nqueue_retry_seconds = 60\nmx = { "remote.example" = "127.0.0.1:9" }\n')
    srv.start()
    try:
        assert PM_PASSWORD.encode() not in Path(f"/proc/{srv.pid}/cmdline").read_bytes()
        replies = srv.cli("postmaster", PM_PASSWORD, [  # the password from the file / environment works
            f'CREATEACCOUNT alice@{DOMAIN} {{Password="alice-pw-1"; RealName="Alice";}}',
            f'SETACCOUNTALIASES alice@{DOMAIN} (al)',
            f'SETACCOUNTRIGHTS alice@{DOMAIN} (DomainAdmin)',
            'UPDATEDOMAINSETTINGS e2e.test {MaxAccounts=50;}',
        ])
        assert all(r.startswith("200") for r in replies), replies
        with smtplib.SMTP(srv.host, srv.port("smtp"), timeout=30) as s:  # mail for an account
            assert s.sendmail("x@outside.example", [f"alice@{DOMAIN}"], b"Subject: one\r\n\r\nbody\r\n") == {}
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP(srv.host, srv.port("submission"), timeout=30) as s:  # a queue entry (MX down)
            s.starttls(context=tls)
            s.login(f"alice@{DOMAIN}", "alice-pw-1")
            assert s.sendmail(f"alice@{DOMAIN}", ["far@remote.example"], b"Subject: out\r\n\r\nbody\r\n") == {}
        # a spool file: a message bigger than what is held in memory, still arriving
        with socket.create_connection((srv.host, srv.port("smtp")), source_address=(source(3), 0), timeout=30) as raw:
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(f"EHLO c.example\r\nMAIL FROM:<x@outside.example>\r\nRCPT TO:<alice@{DOMAIN}>\r\nDATA\r\n".encode())
            while not f.readline().startswith(b"354"):
                pass
            raw.sendall(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1500)
            deadline = time.monotonic() + 20
            while not list((base).rglob("*.eml")) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert list(base.rglob("*.eml")), "no spool file while DATA arrives"
            deadline = time.monotonic() + 20
            while not list(base.rglob("*.env")) and time.monotonic() < deadline:
                time.sleep(0.1)
            modes = _modes(base)
        assert any(name.endswith(".eml") for name in modes) and any(name.endswith(".env") for name in modes)
        assert any(name.endswith("server.key") or name.endswith(".key") for name in modes), sorted(modes)
        assert len(modes) > 15, sorted(modes)
        wrong = {}
        for name, mode in modes.items():
            is_dir = (base / name).is_dir()
            if mode != (0o700 if is_dir else 0o600):
                wrong[name] = oct(mode)
        assert not wrong, wrong
    finally:
        srv.stop()
