"""One IMAP connection's protocol state, independent of sockets.

The adapter hands every framed command to :meth:`Session.execute`, which
looks it up in the registry (:mod:`dynamail.imap.commands`), checks that the
command is valid in the current :class:`~dynamail.imap.state.State`, runs
its handler and writes the tagged reply.  Handlers reach the network only
through :class:`Io` (write bytes, send a file, read a continuation line,
run IDLE, start TLS, relay), which the asyncio adapter implements; nothing
here imports asyncio, so a transcript test can drive it with any ``Io``.

Untagged updates of the selected mailbox (EXISTS, EXPUNGE/VANISHED, FETCH
of changed flags) are written just before the tagged reply of a command
whose registry entry does not have ``USES_SEQNUMS`` (RFC 9051 section 7.5.1:
no EXPUNGE while answering FETCH, STORE or SEARCH); for those commands the
view is not even refreshed, so sequence numbers cannot move under them.

Invariants: ``store`` is set exactly in the authenticated and selected
states; ``selected`` exactly in the selected state; the account placement
is held (``_holding``, the ``accounts.use`` context) from login until
:meth:`Session.close`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dynamail import names
from dynamail.accounts import AccountRef
from dynamail.cluster.challenge import RelayChallenge
from dynamail.cluster.locator import AccountUnavailable, Relay
from dynamail.imap import limits, response
from dynamail.imap.errors import CommandBad, CommandNo, SessionEnd
from dynamail.imap.notify import Spec as NotifySpec
from dynamail.imap.notify import deliver as deliver_notifications
from dynamail.imap.parser import Command, ParseError, ParseNo
from dynamail.imap.recent import RecentBook, book_of
from dynamail.imap.selected import Selected
from dynamail.imap.state import State, Transition, next_state
from dynamail.storage.api import (
    AccountStore,
    MailboxExists,
    NoSuchMailbox,
    QuotaExceeded,
    StorageError,
    StorageIOError,
    Unavailable,
)

if TYPE_CHECKING:
    from dynamail.server.context import ServerContext

log = logging.getLogger("dynamail.imap")

T = TypeVar("T")

VERSION = "0.1.0"


class Io(Protocol):
    """What a session may do with its connection (implemented by the adapter)."""

    @property
    def peer_host(self) -> str: ...

    @property
    def local_host(self) -> str:
        """The server address the client connected to."""

    @property
    def is_tls(self) -> bool: ...

    @property
    def can_start_tls(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def pending(self) -> int: ...

    async def flush(self) -> None: ...

    async def send_file(self, file: Any, offset: int, length: int) -> None: ...

    async def read_line(self) -> bytes:
        """The next client line (a SASL response), CRLF stripped."""

    async def start_tls(self) -> None: ...

    @property
    def compressed(self) -> bool: ...

    async def start_compress(self) -> None:
        """Deflate both directions from now on (RFC 4978)."""

    def watch_changes(self, session: Session, on: bool) -> None:
        """Follow the account's change feed into ``session.notify_pending``
        (NOTIFY, RFC 5465), or stop."""

    async def idle(self, session: Session) -> None:
        """Run IDLE until the client sends DONE (RFC 2177)."""

    async def relay(self, placement: Relay, client_reply: bytes) -> bool:
        """Relay the session to the owning member; False if it could not be
        reached (nothing was sent to the client)."""

    def set_peer(self, host: str, port: int) -> None:
        """The real client address handed over by a cluster relay."""

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def gather(self, aws: list[Awaitable[T]]) -> list[T]: ...


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """IMAP options read from the server configuration (``[imap]`` when present)."""

    # LOGINDISABLED until TLS (RFC 9051 6.2.3): True always, False never,
    # None (the default) for every client except those on a loopback address.
    login_disabled_without_tls: bool | None = None
    append_limit: int = limits.APPEND_LIMIT

    @classmethod
    def from_context(cls, ctx: ServerContext) -> ImapSettings:
        """``ctx.extras["imap.settings"]`` when set, else the configuration."""
        given = ctx.extras.get("imap.settings") if isinstance(ctx.extras, dict) else None
        if isinstance(given, ImapSettings):
            return given
        return cls.from_config(ctx.config)

    @classmethod
    def from_config(cls, config: object) -> ImapSettings:
        section = getattr(config, "imap", None)
        if section is None:
            return cls()
        flag = getattr(section, "login_disabled_without_tls", None)
        return cls(
            login_disabled_without_tls=None if flag is None else bool(flag),
            append_limit=int(getattr(section, "append_limit", limits.APPEND_LIMIT)),
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host in ("", "localhost")


class Session:
    def __init__(self, ctx: ServerContext, io: Io, settings: ImapSettings | None = None) -> None:
        self.ctx = ctx
        self.io = io
        self.settings = settings or ImapSettings.from_context(ctx)
        self.state = State.NOT_AUTHENTICATED
        self.enabled: set[str] = set()
        self.store: AccountStore | None = None
        self.ref: AccountRef | None = None
        self.selected: Selected | None = None
        self.saved_search: list[int] | None = None
        self.bad_commands = 0
        self.auth_failures = 0
        self._holding: contextlib.AbstractAsyncContextManager[Any] | None = None
        self.uidvalidity_cache: dict[str, int] = {}
        self.client_id: dict[str, str] = {}
        self.notify: NotifySpec | None = None  # NOTIFY SET in force (RFC 5465)
        self.notify_pending: set[str] = set()
        self.relay_challenge = RelayChallenge()  # XDYNAMAIL-CHALLENGE (cluster relays)

    # -- properties ------------------------------------------------------
    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def recent_book(self) -> RecentBook:
        return book_of(self.ctx.extras)

    def recent_key(self, name: str, uidvalidity: int) -> tuple[str, str, int]:
        return (str(self.ref), name, uidvalidity)

    def login_disabled(self) -> bool:
        if self.io.is_tls:
            return False
        flag = self.settings.login_disabled_without_tls
        if flag is None:  # automatic: remote clients must use TLS when it is offered
            return self.io.can_start_tls and not _is_loopback(self.io.peer_host)
        return flag

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.io.can_start_tls:
                caps.append("STARTTLS")
            if self.login_disabled():
                caps.append("LOGINDISABLED")
            else:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            caps += ["SASL-IR", "LITERAL+", "ENABLE", "ID", "IDLE", "NAMESPACE"]
            return caps
        caps += [
            "LITERAL+", "SASL-IR", "ENABLE", "ID", "IDLE", "NAMESPACE", "UNSELECT", "UIDPLUS",
            "MOVE", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE",
            "CREATE-SPECIAL-USE", "ESEARCH",
            "SEARCHRES", "SORT", "CONDSTORE", "QRESYNC", "QUOTA", "QUOTA=RES-STORAGE",
            "MULTIAPPEND", f"APPENDLIMIT={self.settings.append_limit}",
            "UTF8=ACCEPT", "BINARY", "STATUS=SIZE", "COMPRESS=DEFLATE",
            "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "OBJECTID", "PREVIEW",
            "METADATA", "METADATA-SERVER", "NOTIFY",
        ]
        return caps

    # -- state -------------------------------------------------------------
    def transition(self, t: Transition) -> None:
        self.state = next_state(self.state, t)

    def write(self, data: bytes) -> None:
        self.io.write(data)

    def need_store(self) -> AccountStore:
        if self.store is None:
            raise CommandBad("Not authenticated")
        return self.store

    def need_selected(self) -> Selected:
        if self.selected is None:
            raise CommandBad("No mailbox selected")
        return self.selected

    def mailbox_arg(self, raw: bytes, *, creating: bool = False) -> str:
        """A mailbox argument; a name no mailbox can have (not modified
        UTF-7) is NO [NONEXISTENT], or NO [CANNOT] for a name being made."""
        from dynamail.imap.parser import BadMailboxName, mailbox

        try:
            name = mailbox(raw, utf8=self.utf8)
        except BadMailboxName as exc:
            raise CommandNo(str(exc), "CANNOT" if creating else "NONEXISTENT") from None
        try:
            return names.mailbox_name(name)
        except names.BadName as exc:
            raise CommandNo(str(exc), "CANNOT") from None

    def mailbox_out(self, name: str) -> bytes:
        return response.mailbox(name, utf8=self.utf8)

    async def sync_selected(self) -> None:
        if self.selected is not None:
            await self.selected.sync(self.write, qresync=self.qresync, condstore=self.condstore)

    # -- login -------------------------------------------------------------
    async def login(self, tag: str, login: str, password: str) -> str:
        """Check credentials, open the account; returns the tagged OK text."""
        res = await self.ctx.auth.authenticate(
            login, password, protocol="imap", remote=self.io.peer_host, local=self.io.local_host
        )
        if not res.ok or res.ref is None:
            log.info("imap login refused for %r from %s: %s", login[:100], self.io.peer_host, res.reason)
            self.auth_failures += 1
            if self.auth_failures >= limits.MAX_AUTH_FAILURES:
                self.write(response.tagged(tag, "NO", "Authentication failed", "AUTHENTICATIONFAILED"))
                raise SessionEnd("Too many failed logins")
            if res.reason == "disabled":
                raise CommandNo("Access by IMAP is not enabled for this account", "CONTACTADMIN")
            if res.reason == "throttled":
                raise CommandNo("Too many failed logins; try again later", "UNAVAILABLE")
            raise CommandNo("Authentication failed", "AUTHENTICATIONFAILED")
        return await self.open_account(tag, res.ref)

    async def open_account(self, tag: str, ref: AccountRef, *, relay_ok: bool = True) -> str:
        hold = self.ctx.accounts.use(ref, relay_ok=relay_ok)
        try:
            placement = await hold.__aenter__()
        except AccountUnavailable:
            raise CommandNo("Account temporarily unavailable", "UNAVAILABLE") from None
        text = "[CAPABILITY " + " ".join(self._caps_after_login()) + "] Logged in"
        note = getattr(self.io, "note", None)  # the session's log line (dynamail.events)
        if note is not None:
            note(account=ref.address)
            if isinstance(placement, Relay):
                note(outcome=f"relayed to {placement.member}")
        if isinstance(placement, Relay):
            try:
                await self.io.flush()
                relayed = await self.io.relay(placement, response.tagged(tag, "OK", text))
            finally:
                await hold.__aexit__(None, None, None)
            if not relayed:  # nothing was sent to the client (owner unreachable)
                raise CommandNo("Account temporarily unavailable", "UNAVAILABLE")
            raise SessionEnd("")
        self._holding = hold
        log.info("imap login %s from %s", ref, self.io.peer_host)
        self.store = placement.store
        self.ref = ref
        self.transition(Transition.LOGGED_IN)
        await self._alerts(ref)
        return text

    def _caps_after_login(self) -> list[str]:
        saved = self.state
        self.state = State.AUTHENTICATED
        try:
            return self.capabilities()
        finally:
            self.state = saved

    async def _alerts(self, ref: AccountRef) -> None:
        directory = self.ctx.directory
        try:
            alerts = await self.io.run_blocking(directory.unseen_alerts, ref)
        except Exception:
            log.exception("reading alerts of %s", ref)
            return
        if not alerts:
            return
        for a in alerts:
            text = " ".join(str(a.text).split())
            self.write(f"* OK [ALERT] {text}\r\n".encode())
        try:
            admin = getattr(self.ctx, "admin", None)
            if admin is not None:
                # through the admin layer: a shared account's alerts are
                # written by the cluster's Controller (directory fencing)
                await admin.mark_alerts_seen(ref, alerts[-1].timestamp)
            else:
                await self.io.run_blocking(directory.mark_alerts_seen, ref, alerts[-1].timestamp)
        except Exception:
            log.exception("marking alerts of %s seen", ref)

    # -- running commands ------------------------------------------------
    async def execute(self, cmd: Command) -> None:
        """Run one command and write its responses; raises SessionEnd to close.
        A command not answered BAD starts the count of bad commands again."""
        bad_before = self.bad_commands
        await self._execute(cmd)
        if self.bad_commands == bad_before:
            self.bad_commands = 0

    async def _execute(self, cmd: Command) -> None:
        from dynamail.imap.commands import REGISTRY, Flags

        spec = REGISTRY.get(cmd.name)
        tag = cmd.tag
        if spec is None:
            self._bad(tag, "Unknown command")
            return
        if self.state not in spec.states:
            self._bad(tag, f"{cmd.name} not allowed in the {self.state.value} state")
            return
        try:
            if spec.flags & Flags.NEEDS_SYNC:
                await self.io.flush()  # the command talks to the wire itself
            text = await spec.handler(self, cmd)
            if text is None:  # the handler answered itself (STARTTLS)
                return
            if self.state is State.SELECTED and not (spec.flags & Flags.USES_SEQNUMS):
                await self.sync_selected()
            if self.notify is not None:
                await deliver_notifications(self)
            self.write(response.tagged(tag, "OK", text))
        except ParseNo as exc:
            self.write(response.tagged(tag, "NO", str(exc)))
        except ParseError as exc:
            self._bad(tag, str(exc) or "Syntax error")
        except CommandBad as exc:
            self._bad(tag, exc.text, exc.code)
        except CommandNo as exc:
            self.write(response.tagged(tag, "NO", exc.text, exc.code))
        except names.BadName as exc:
            self.write(response.tagged(tag, "NO", str(exc), "CANNOT"))
        except NoSuchMailbox:
            code = "TRYCREATE" if cmd.name in ("APPEND", "COPY", "MOVE", "UID COPY", "UID MOVE") else "NONEXISTENT"
            self.write(response.tagged(tag, "NO", "No such mailbox", code))
        except MailboxExists:
            self.write(response.tagged(tag, "NO", "Mailbox already exists", "ALREADYEXISTS"))
        except QuotaExceeded:
            self.write(response.tagged(tag, "NO", "Quota exceeded", "OVERQUOTA"))
        except AccountUnavailable:
            self.write(response.tagged(tag, "NO", "Account temporarily unavailable", "UNAVAILABLE"))
        except Unavailable:
            # the store was fenced by a newer owner or closed (the account is
            # moving): a temporary failure, then the session ends so that the
            # client reconnects to wherever the account is now
            self.write(response.tagged(tag, "NO", "Account temporarily unavailable, please reconnect",
                                       "UNAVAILABLE"))
            raise SessionEnd("[UNAVAILABLE] Account moved to another server; please reconnect") from None
        except StorageIOError as exc:
            # the file system refused the write (full, I/O error): nothing was
            # acknowledged, and the next attempt may succeed (RFC 5530)
            log.warning("storage write refused in %s: %s", cmd.name, exc)
            self.write(response.tagged(tag, "NO", "Storage temporarily unavailable, please try again",
                                       "UNAVAILABLE"))
        except StorageError as exc:
            log.warning("storage error in %s: %s", cmd.name, exc)
            self.write(response.tagged(tag, "NO", "Server error, please try again", "SERVERBUG"))
        except (SessionEnd, ConnectionError):
            raise
        except Exception:
            log.exception("%s failed", cmd.name)
            self.write(response.tagged(tag, "NO", "Internal server error", "SERVERBUG"))

    def _bad(self, tag: str, text: str, code: str = "") -> None:
        self.bad_commands += 1
        self.write(response.tagged(tag, "BAD", text, code))
        if self.bad_commands >= limits.MAX_BAD_COMMANDS:
            raise SessionEnd("Too many invalid commands")

    def bad_frame(self, tag: str, reply: str) -> None:
        """A command refused while framing (too long, literal too big)."""
        if reply.startswith("BAD"):
            self.bad_commands += 1
        self.write(f"{tag} {reply}\r\n".encode())
        if self.bad_commands >= limits.MAX_BAD_COMMANDS:
            raise SessionEnd("Too many invalid commands")

    async def close(self) -> None:
        if self.selected is not None:
            self.selected.close()
            self.selected = None
        self.store = None
        hold, self._holding = self._holding, None
        if hold is not None:
            try:
                await hold.__aexit__(None, None, None)
            except Exception:
                log.exception("releasing account")
