"""Keyed credentials verifiers in a real two-backend cluster: a password
set or verified on one member is accepted by the other without a hash
verification, and a password change made through one member revokes the
old password on both at once (``dynamail.auth``)."""

from __future__ import annotations

import imaplib
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.conftest import Cluster, have

pytestmark = [
    pytest.mark.xdist_group("cluster"), pytest.mark.slow, pytest.mark.timeout(180),
    pytest.mark.skipif(not have("dynamail.imap.adapter"), reason="IMAP server not built"),
]
OLD, NEW = "pw-Old-1", "pw-New-2"


def checks(c: Cluster, member: str) -> dict[str, float]:
    m = c.member(member)
    url = f"http://{m['host']}:{m['ports']['http']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {how: float(n) for how, n in re.findall(r'dynamail_auth_checks_total\{how="(\w+)"\} ([0-9.]+)', text)}


def login(c: Cluster, member: str, password: str) -> bool:
    try:
        c.imap(member, "kim@shared.test", password).logout()
    except imaplib.IMAP4.error:
        return False
    return True


def test_verifier_is_shared_and_revoked_by_a_password_change(cluster_factory: Any) -> None:
    c = cluster_factory(2)
    c.wait_controller()
    assert c.cli("b1", "CREATEDOMAIN shared.test SHARED")[0].startswith("200")
    assert c.cli("b1", f'CREATEACCOUNT kim@shared.test {{Password="{OLD}";}}')[0].startswith("200")
    (account_dir,) = Path(c.data["shared"]).glob("shared.test/Accounts/*/kim")
    assert (account_dir / "Verifier").exists()  # written with the password

    before = checks(c, "b2")
    assert login(c, "b2", OLD)  # kim's first login ever: no hash either
    after = checks(c, "b2")
    assert after.get("verifier", 0) == before.get("verifier", 0) + 1
    assert after.get("hash", 0) == before.get("hash", 0)
    assert login(c, "b1", OLD)

    out = c.cli("b2", f'SETACCOUNTPASSWORD kim@shared.test PASSWORD "{NEW}"')
    assert out[0].startswith("200"), out
    for m in ("b1", "b2"):  # no wait: the change is in effect on both at once
        assert not login(c, m, OLD), m
    before = checks(c, "b1")
    assert login(c, "b2", NEW) and login(c, "b1", NEW)
    after = checks(c, "b1")  # the new password came with its verifier too
    assert after.get("verifier", 0) == before.get("verifier", 0) + 1
    assert after.get("hash", 0) == before.get("hash", 0)


def test_imported_hash_of_a_shared_account_is_rehashed_through_the_controller(cluster_factory: Any) -> None:
    from dynamail.directory import Directory, shacrypt

    c = cluster_factory(2)
    controller = c.wait_controller()["controller"]
    other = next(n for n in c.names() if n != controller)
    assert c.cli(controller, "CREATEDOMAIN shared.test SHARED")[0].startswith("200")
    assert c.cli(controller, f'CREATEACCOUNT kim@shared.test {{Password="{OLD}";}}')[0].startswith("200")
    # an import tool puts a Dovecot hash in place (as `set_password_hash` does)
    d = Directory(c.dir / "import-tool", main_domain="tool.test", shared_base=Path(c.data["shared"]))
    ref = d.find_account("kim@shared.test")
    assert ref is not None
    imported = "{SHA512-CRYPT}" + shacrypt.sha_crypt(NEW.encode(), "$6$importedSalt")
    d.set_password_hash(ref, imported)

    assert login(c, other, NEW)  # verified as imported, then rehashed by the Controller
    assert c.wait(lambda: (d.password_hash(ref) or "").startswith("$argon2id$"), what="argon2id hash")
    assert login(c, other, NEW) and login(c, controller, NEW)
    assert not login(c, controller, OLD)
