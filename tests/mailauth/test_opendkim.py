"""Our DKIM signatures verified by a second implementation: OpenDKIM's
test mode (Debian ``opendkim``), with the public keys given as its
``TestDNSData``: both the RSA-2048 and the Ed25519 signature pass, and a
changed body fails both."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dynamail.directory import Directory
from dynamail.mailauth.signing import Signer

OPENDKIM = shutil.which("opendkim") or shutil.which("opendkim", path="/usr/sbin:/usr/bin")
MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@far.example\r\nSubject: hello\r\n"
    b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHello Bob.\r\n"
)

pytestmark = pytest.mark.skipif(OPENDKIM is None, reason="opendkim (Debian opendkim) is not installed")


def opendkim_results(tmp_path: Path, directory: Directory, message: bytes) -> list[str]:
    """The dkim= results OpenDKIM writes into its Authentication-Results."""
    dns = tmp_path / "dns.txt"
    dns.write_text("".join(f"{k['name']} {k['txt']}\n" for k in directory.dkim_keys("example.org")))
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"TestDNSData file:{dns}\nMode v\nSyslog no\n")
    msg = tmp_path / "msg.eml"
    msg.write_bytes(message)
    assert OPENDKIM is not None
    proc = subprocess.run([OPENDKIM, "-x", str(conf), "-t", str(msg), "-vvv"], capture_output=True, text=True,
                          timeout=30)
    out = proc.stdout + proc.stderr
    return [" ".join(m.split()) for m in re.findall(r"dkim=\w+[^;']*", out)]


def test_opendkim_verifies_our_signatures(tmp_path: Path, directory: Directory) -> None:
    directory.create_domain("example.org")
    directory.create_dkim_key("example.org", "rsa", "r1")
    directory.create_dkim_key("example.org", "ed25519", "e1")
    signed = Signer(directory).signature(MESSAGE) + MESSAGE
    results = opendkim_results(tmp_path, directory, signed)
    assert any(r.startswith("dkim=pass") and "header.a=rsa-sha256 header.s=r1" in r for r in results), results
    assert any(r.startswith("dkim=pass") and "header.a=ed25519-sha256 header.s=e1" in r for r in results), results
    changed = opendkim_results(tmp_path, directory, signed.replace(b"Hello Bob.", b"Hello Eve."))
    assert len(changed) == 2 and all(r.startswith("dkim=fail") for r in changed), changed
