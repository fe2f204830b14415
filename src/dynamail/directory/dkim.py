"""DKIM keys of a domain (RFC 6376, RFC 8463), kept with the domain.

A domain's private keys live in its directory, in ``DKIM.json`` (mode 0600):
``{"keys": {selector: {"algorithm", "private", "created"}}}``, PEM (PKCS#8)
private keys made here with ``cryptography``.  For a shared domain that
directory is on the shared storage, so every cluster member signs with the
same keys.  Which keys sign is the domain setting ``DKIMSelectors`` (a list
of selectors); the keys not named there are kept, *retired*, so the DNS
records of mail still in flight can stay published until the operator
removes them.

``create_dkim_key`` adds a key of one algorithm (RSA-2048 or Ed25519) and
makes it active; ``rotate_dkim_keys`` replaces every active key by a new
one of the same algorithm under a new selector (the old ones are retired);
``dkim_keys`` describes every key with the DNS TXT record to publish.
Mutations of a shared domain reach this code on the Controller (see
``dynamail.admin``), like every other shared-domain change.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dynamail.directory.model import AlreadyExists, BadSetting, DirectoryError, LimitReached
from dynamail.directory.parts import DirectoryParts
from dynamail.names import BadName

DKIM_FILE = "DKIM.json"
SELECTORS_SETTING = "DKIMSelectors"
ALGORITHMS = ("rsa", "ed25519")
RSA_BITS = 2048
MAX_KEYS = 32  # active and retired keys of one domain
MAX_SELECTOR = 63


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One active key, as the signer needs it."""

    domain: str
    selector: str
    algorithm: str  # "rsa" | "ed25519"
    private: bytes  # PEM (rsa) or base64 of the 32-byte seed (ed25519), as dkimpy takes it


def check_selector(selector: str) -> str:
    """A selector is one or more DNS labels (RFC 6376 3.1)."""
    s = selector.strip().lower()
    labels = s.split(".")
    if not s or len(s) > MAX_SELECTOR or not all(
        label and len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) and label.isascii()
        and not label.startswith("-") and not label.endswith("-") for label in labels
    ):
        raise BadName(f"bad DKIM selector {selector!r}")
    return s


def generate_private_key(algorithm: str) -> bytes:
    """A new private key as PKCS#8 PEM."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise BadSetting(f"DKIM algorithm must be one of {', '.join(ALGORITHMS)}")
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def dns_value(algorithm: str, private_pem: bytes) -> str:
    """The TXT record value that publishes the public key (RFC 6376 3.6.1, RFC 8463 4.2)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if algorithm == "ed25519":
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    assert isinstance(key, rsa.RSAPrivateKey)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def zone_line(name: str, value: str) -> str:
    """``name IN TXT ( "…" "…" )``: strings of at most 255 octets (RFC 1035 3.3.14)."""
    parts = [value[i:i + 250] for i in range(0, len(value), 250)]
    return f'{name}. IN TXT ( {" ".join(chr(34) + p + chr(34) for p in parts)} )'


def signing_form(algorithm: str, private_pem: bytes) -> bytes:
    if algorithm == "rsa":
        return private_pem
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return base64.b64encode(seed)


class DkimMixin(DirectoryParts):
    """Part of :class:`dynamail.directory.Directory`."""

    if TYPE_CHECKING:
        def domain_settings(self, name: str) -> dict[str, Any]: ...
        def update_domain_settings(self, name: str, changes: Mapping[str, Any]) -> None: ...

    def _dkim_store(self, domain: str) -> tuple[str, dict[str, dict[str, Any]]]:
        canon, shared = self._locate_domain(domain)
        data = self.files.read(self._domain_dir(canon, shared) / DKIM_FILE, {})
        keys = data.get("keys") if isinstance(data, dict) else None
        return canon, dict(keys) if isinstance(keys, dict) else {}

    def _dkim_write(self, canon: str, keys: dict[str, dict[str, Any]]) -> None:
        _, shared = self._locate_domain(canon)
        self.files.write(self._domain_dir(canon, shared) / DKIM_FILE, {"keys": keys}, mode=0o600)

    def _active_selectors(self, canon: str) -> list[str]:
        value = self.domain_settings(canon).get(SELECTORS_SETTING, [])
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        return [str(v).lower() for v in value if str(v).strip()] if isinstance(value, list) else []

    def _new_selector(self, algorithm: str, taken: set[str]) -> str:
        stem = f"{'rsa' if algorithm == 'rsa' else 'ed'}{datetime.datetime.now(datetime.UTC):%Y%m%d}"
        selector, n = stem, 1
        while selector in taken:
            n += 1
            selector = f"{stem}-{n}"
        return selector

    def _add_key(self, keys: dict[str, dict[str, Any]], algorithm: str, selector: str | None) -> str:
        if algorithm not in ALGORITHMS:
            raise BadSetting(f"DKIM algorithm must be one of {', '.join(ALGORITHMS)}")
        sel = check_selector(selector) if selector else self._new_selector(algorithm, set(keys))
        if sel in keys:
            raise AlreadyExists(f"DKIM selector {sel} exists")
        if len(keys) >= MAX_KEYS:
            raise LimitReached(f"at most {MAX_KEYS} DKIM keys per domain; remove retired ones first")
        keys[sel] = {
            "algorithm": algorithm,
            "private": generate_private_key(algorithm).decode("ascii"),
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return sel

    def create_dkim_key(self, domain: str, algorithm: str = "rsa", selector: str | None = None) -> list[dict[str, Any]]:
        """Add a key and make it sign (replacing an active key of the same
        algorithm, which is retired); returns :meth:`dkim_keys`."""
        with self._lock:
            canon, keys = self._dkim_store(domain)
            sel = self._add_key(keys, algorithm, selector)
            self._dkim_write(canon, keys)
            active = [s for s in self._active_selectors(canon)
                      if s in keys and keys[s].get("algorithm") != algorithm]
            self.update_domain_settings(canon, {SELECTORS_SETTING: [*active, sel]})
        return self.dkim_keys(canon)

    def rotate_dkim_keys(self, domain: str) -> list[dict[str, Any]]:
        """A new key under a new selector for every active one; the old ones retire."""
        with self._lock:
            canon, keys = self._dkim_store(domain)
            active = [s for s in self._active_selectors(canon) if s in keys]
            if not active:
                raise BadSetting(f"domain {canon} has no active DKIM key to rotate")
            fresh = [self._add_key(keys, str(keys[s]["algorithm"]), None) for s in active]
            self._dkim_write(canon, keys)
            self.update_domain_settings(canon, {SELECTORS_SETTING: fresh})
        return self.dkim_keys(canon)

    def remove_dkim_key(self, domain: str, selector: str) -> list[dict[str, Any]]:
        """Forget a retired key (an active one must be rotated away first)."""
        with self._lock:
            canon, keys = self._dkim_store(domain)
            sel = check_selector(selector)
            if sel not in keys:
                raise BadSetting(f"no DKIM selector {sel} in {canon}")
            if sel in self._active_selectors(canon):
                raise BadSetting(f"DKIM selector {sel} is active; rotate first")
            del keys[sel]
            self._dkim_write(canon, keys)
        return self.dkim_keys(canon)

    def dkim_keys(self, domain: str) -> list[dict[str, Any]]:
        """Every key of the domain (no private material) with its DNS record."""
        canon, keys = self._dkim_store(domain)
        active = self._active_selectors(canon)
        out = []
        for sel in sorted(keys, key=lambda s: (s not in active, s)):
            k = keys[sel]
            name = f"{sel}._domainkey.{canon}"
            value = dns_value(str(k["algorithm"]), str(k["private"]).encode("ascii"))
            out.append({
                "selector": sel, "algorithm": k["algorithm"], "created": k.get("created", ""),
                "active": sel in active, "name": name, "txt": value, "zone": zone_line(name, value),
            })
        return out

    def dkim_signing_keys(self, domain: str) -> list[SigningKey]:
        """The active keys of ``domain`` ([] when it has none or is not ours)."""
        try:
            canon, keys = self._dkim_store(domain)
        except (DirectoryError, BadName):
            return []
        out = []
        for sel in self._active_selectors(canon):
            k = keys.get(sel)
            if k is None:
                continue
            algorithm = str(k.get("algorithm"))
            out.append(SigningKey(canon, sel, algorithm, signing_form(algorithm, str(k["private"]).encode("ascii"))))
        return out
