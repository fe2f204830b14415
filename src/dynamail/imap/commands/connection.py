"""Commands of any state and of the not-authenticated state
(RFC 9051 sections 6.1 and 6.2; RFC 2971 ID, RFC 5161 ENABLE, RFC 2177 IDLE,
RFC 4959 SASL-IR)."""

from __future__ import annotations

import base64
import binascii
import inspect
from typing import TYPE_CHECKING

from dynamail.cluster.challenge import ChallengeRefused
from dynamail.imap import response
from dynamail.imap.errors import CommandBad, CommandNo, SessionEnd
from dynamail.imap.parser import Args, Command
from dynamail.imap.session import VERSION
from dynamail.imap.state import State, Transition

if TYPE_CHECKING:
    from dynamail.imap.session import Session


async def capability(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    s.write(response.untagged("CAPABILITY " + " ".join(s.capabilities())))
    return "CAPABILITY completed"


async def noop(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    return f"{cmd.name} completed"


async def logout(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    s.write(b"* BYE Logging out\r\n")
    if s.selected is not None:
        s.selected.close()
        s.selected = None
    s.transition(Transition.LOGOUT)
    return "LOGOUT completed"


async def id_(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    t = args.next("ID parameters")
    args.end()
    if isinstance(t, list):
        if len(t) % 2 or len(t) > 60:
            raise CommandBad("Bad ID parameter list")
        for k, v in zip(t[::2], t[1::2], strict=True):
            if isinstance(k, list) or isinstance(v, list):
                raise CommandBad("Bad ID parameter list")
            key = k.decode("utf-8", "replace") if isinstance(k, bytes) else k
            val = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            s.client_id[key[:30]] = val[:1024]
    elif not (isinstance(t, str) and t.upper() == "NIL"):
        raise CommandBad("ID takes a list or NIL")
    s.write(b'* ID ("name" "dynamail" "version" "' + VERSION.encode() + b'")\r\n')
    return "ID completed"


_ENABLE_OK = {"CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2"}


async def enable(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    if not args.more():
        raise CommandBad("ENABLE needs capability names")
    newly = []
    while args.more():
        cap = args.atom("capability").upper()
        if cap in _ENABLE_OK and cap not in s.enabled:
            if cap == "QRESYNC" and "CONDSTORE" not in s.enabled:
                s.enabled.add("CONDSTORE")
            s.enabled.add(cap)
            newly.append("IMAP4rev2" if cap == "IMAP4REV2" else cap)
    s.write(response.untagged("ENABLED" + "".join(" " + c for c in newly)))
    return "ENABLE completed"


async def starttls(s: Session, cmd: Command) -> str | None:
    Args(cmd.args).end()
    if not s.io.can_start_tls:
        raise CommandBad("TLS is already active or not available")
    s.write(response.tagged(cmd.tag, "OK", "Begin TLS negotiation now"))
    await s.io.flush()
    await s.io.start_tls()
    return None


async def login(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    user = args.astring("user name")
    password = args.astring("password")
    args.end()
    if s.login_disabled():
        raise CommandNo("Use STARTTLS first", "PRIVACYREQUIRED")
    return await s.login(cmd.tag, _text(user), _text(password))


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandNo("Credentials must be UTF-8", "AUTHENTICATIONFAILED") from None


def _b64(data: bytes) -> bytes:
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise CommandBad("Invalid base64 in SASL response") from None


async def _sasl_step(s: Session, challenge: bytes) -> bytes:
    s.write(b"+ " + base64.b64encode(challenge) + b"\r\n")
    await s.io.flush()
    line = await s.io.read_line()
    if line.strip() == b"*":
        raise CommandBad("Authentication cancelled")
    return _b64(line.strip())


async def authenticate(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    mech = args.atom("mechanism").upper()
    initial: bytes | None = None
    if args.more():
        initial = _b64(args.astring("initial response"))
    args.end()
    if s.login_disabled():
        raise CommandNo("Use STARTTLS first", "PRIVACYREQUIRED")
    if mech == "PLAIN":
        data = initial if initial is not None else await _sasl_step(s, b"")
        parts = data.split(b"\x00")
        if len(parts) != 3:
            raise CommandBad("Malformed PLAIN response")
        authz, user, password = (_text(p) for p in parts)
        if authz and authz.lower() != user.lower():
            raise CommandNo("Proxy authorization is not supported", "AUTHORIZATIONFAILED")
        return await s.login(cmd.tag, user, password)
    if mech == "LOGIN":
        user_b = initial if initial is not None else await _sasl_step(s, b"Username:")
        password_b = await _sasl_step(s, b"Password:")
        return await s.login(cmd.tag, _text(user_b), _text(password_b))
    raise CommandNo("Unsupported authentication mechanism", "CANNOT")


async def relay_challenge(s: Session, cmd: Command) -> str:
    """``tag XDYNAMAIL-CHALLENGE``: the owner issues this connection's relay
    nonce (``* XDYNAMAIL-CHALLENGE <nonce>``), once (cluster/challenge.py)."""
    if s.ctx.cluster is None:
        raise CommandBad("Unknown command")
    Args(cmd.args).end()
    try:
        nonce = s.relay_challenge.issue()
    except ChallengeRefused as exc:
        raise CommandNo(str(exc), "CLIENTBUG") from None
    s.write(response.untagged("XDYNAMAIL-CHALLENGE " + nonce))
    return "XDYNAMAIL-CHALLENGE completed"


async def relay_ticket(s: Session, cmd: Command) -> str:
    """``tag XDYNAMAIL-RELAY <ticket>``: the owner side of a cluster relay.
    After a challenge the ticket must carry its nonce, and only one ticket
    is looked at; without one, the old time-stamped form."""
    cluster = s.ctx.cluster
    if cluster is None:
        raise CommandBad("Unknown command")
    args = Args(cmd.args)
    ticket = args.astring("ticket").decode("ascii", "replace")
    args.end()
    try:
        challenge = s.relay_challenge.take()
    except ChallengeRefused as exc:
        raise CommandNo(str(exc), "AUTHENTICATIONFAILED") from None
    verdict = cluster.verify_relay_ticket(ticket, challenge)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    if verdict is None:
        raise CommandNo("Invalid relay ticket", "AUTHENTICATIONFAILED")
    ref, host, port = verdict
    s.io.set_peer(host, port)
    return await s.open_account(cmd.tag, ref, relay_ok=False)


async def compress(s: Session, cmd: Command) -> str | None:
    """RFC 4978: ``COMPRESS DEFLATE``; the OK is the last uncompressed output."""
    args = Args(cmd.args)
    mech = args.atom("compression mechanism").upper()
    args.end()
    if mech != "DEFLATE":
        raise CommandBad("Unknown compression mechanism")
    if s.io.compressed:
        raise CommandNo("DEFLATE is active already", "COMPRESSIONACTIVE")
    s.write(response.tagged(cmd.tag, "OK", "DEFLATE active"))
    await s.io.flush()
    await s.io.start_compress()
    return None


async def notify_(s: Session, cmd: Command) -> str:
    """RFC 5465: ``NOTIFY NONE`` or ``NOTIFY SET [STATUS] (filter events)...``."""
    from dynamail.imap import notify

    spec = notify.parse(s, list(cmd.args))
    if spec is not None and spec.wants_lists:  # sections 5.4, 5.5: changes from now on
        spec.boxes = await notify.picture(s)
    s.notify = spec
    s.notify_pending.clear()
    s.io.watch_changes(s, spec is not None)
    if spec is not None and spec.status:  # section 5.1: the current STATUS first
        s.notify_pending.update(m.name for m in await s.need_store().list_mailboxes())
    return "NOTIFY completed"


async def idle(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    if s.state is State.LOGOUT:
        raise SessionEnd("")
    await s.sync_selected()
    s.write(b"+ idling\r\n")
    await s.io.flush()
    await s.io.idle(s)
    return "IDLE terminated"
