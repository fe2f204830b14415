"""TLS contexts: the configured certificate, or a self-signed one made on first start."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from pathlib import Path

from dynamail.filemodes import private_dirs, write_private


def ensure_self_signed(
    cert_path: Path, key_path: Path, hostname: str, addresses: Iterable[str] = ()
) -> None:
    """Create a self-signed certificate for ``hostname`` unless one exists.

    It also names ``localhost``, 127.0.0.1 and every IP address or host name
    in ``addresses`` (the listen address), so clients that check the name
    against the address they connect to accept it once they trust the file."""
    if cert_path.exists() and key_path.exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    ips = [ipaddress.ip_address("127.0.0.1")]
    for extra in addresses:
        try:
            ip = ipaddress.ip_address(extra)
        except ValueError:
            if extra and x509.DNSName(extra) not in alt:
                alt.append(x509.DNSName(extra))
            continue
        if not ip.is_unspecified and ip not in ips:
            ips.append(ip)
    alt.extend(x509.IPAddress(ip) for ip in ips)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_dirs(cert_path.parent)
    write_private(key_path, key_bytes)
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


def client_context_insecure() -> ssl.SSLContext:
    """For tests and local tools talking to a self-signed server."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
