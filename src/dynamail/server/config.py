"""Server configuration: ``<base>/Settings/server.toml`` merged with the command line.

Precedence, lowest first: built-in defaults, the settings file, command-line
options.  The file is TOML; unknown keys are refused with an error naming the
key (a typo must not silently leave a default in force).  Only what the first
start decides (the Main Domain name, generated certificate paths) is written
back to the file; command-line options are never persisted, so a test or a
local cluster can run the same base directory with different offsets.

Every key is documented in ``docs/configuration.md``; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from dynamail import names
from dynamail.filemodes import private_dirs, write_private
from dynamail.imap.limits import APPEND_LIMIT as IMAP_APPEND_LIMIT

SETTINGS_DIR = "Settings"
SETTINGS_FILE = "server.toml"

DEFAULT_PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "smtps": 465,
    "lmtp": 24,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "cli": 106,
    "managesieve": 4190,
    "http": 8010,
    "https": 9010,
    "cluster": 7070,
}

ROLES = ("standalone", "backend", "frontend")
MAX_WORKERS = 64
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """The settings file or an option is invalid; the message names the key."""


@dataclass
class LimitsConfig:
    max_connections: int = 60000  # per listener
    max_per_address: int = 1000  # per listener and client address
    idle_timeout: float = 1800.0  # seconds; IMAP/POP3/SMTP sessions
    cli_idle_timeout: float = 300.0  # seconds; admin CLI sessions
    login_timeout: float = 60.0  # seconds to log in after the greeting
    shutdown_grace: float = 5.0  # seconds running sessions get on SIGTERM
    account_idle_release: float = 300.0  # close an unused account after this


@dataclass
class ClusterConfig:
    role: str = "standalone"  # "standalone" | "backend" | "frontend"
    backends: list[str] = field(default_factory=list)  # addresses (host or host:port)
    frontends: list[str] = field(default_factory=list)
    secret_file: str = ""  # default: <shared_base>/cluster.secret
    shared_base: str = ""  # default: <base>/SharedDomains
    name: str = ""  # member name; default: the listen address
    heartbeat_interval: float = 0.5  # seconds between member heartbeats
    lease_seconds: float = 2.0  # account-grant and Controller lease length
    lease_margin: float = 0.5  # safety margin subtracted by lease holders
    tls: bool = True  # TLS on the cluster port and on session relays (same on every member)


@dataclass
class SmtpConfig:
    relay_host: str = ""  # send all remote mail through host[:port]; "" = direct MX
    mx: dict[str, str] = field(default_factory=dict)  # static MX map: domain -> host[:port]
    max_message_size: int = 50 * 1024 * 1024
    queue_retry_seconds: float = 300.0
    queue_expire_seconds: float = 5 * 24 * 3600.0
    allow_plaintext_auth: bool = False  # AUTH on submission (587) before STARTTLS
    allow_any_sender: bool = False  # submission: any MAIL FROM, not only the user's own addresses
    check_senders: bool = False  # port 25: SPF, DKIM, DMARC and ARC, Authentication-Results
    authserv_id: str = ""  # the Authentication-Results id; "" = the host name
    dns_resolver: str = ""  # DNS server for the sender checks: host[:port]; "" = the system's
    dns_timeout: float = 5.0  # seconds per lookup; a timeout answers 451
    rspamd_url: str = ""  # content filter on port 25: http://host:11333; "" = none
    milter: str = ""  # a milter on port 25: "host:port" (or inet:host:port); "" = none
    filter_timeout: float = 15.0  # seconds for the filter's answer
    filter_fail_open: bool = True  # filter down or slow: accept (true) or answer 451 (false)


@dataclass
class Pop3Config:
    allow_plaintext_login: bool = False  # USER/PASS, APOP, AUTH before STLS (port 110)


@dataclass
class ManageSieveConfig:
    allow_plaintext_login: bool = False  # AUTHENTICATE PLAIN before STARTTLS (port 4190)


@dataclass
class ImapConfig:
    # LOGINDISABLED until TLS (RFC 9051 6.2.3): true always, false never;
    # unset (None) for every client except those on a loopback address
    login_disabled_without_tls: bool | None = None
    append_limit: int = IMAP_APPEND_LIMIT  # APPENDLIMIT, bytes


@dataclass
class AuthConfig:
    # argon2id parameters of new hashes (RFC 9106; OWASP's minimum is
    # m=19 MiB, t=2, p=1); existing hashes verify with their own parameters
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    hash_concurrency: int = 0  # hashes computed at once; 0 = the number of usable cores
    rehash_on_login: bool = True  # replace imported or differently-tuned hashes at login
    cache_seconds: float = 300.0  # in-memory verified-credentials cache
    verifier_seconds: float = 7 * 86400.0  # keyed verifier kept with the account; 0 = none


@dataclass
class TlsConfig:
    cert: str = ""  # PEM certificate chain; "" = self-signed in Settings/
    key: str = ""  # PEM private key


@dataclass(frozen=True)
class WorkerSlot:
    """What makes a process one worker of a server run with ``--workers N``
    (never read from the file: the supervisor hands it to its workers)."""

    index: int  # 1..count
    count: int
    home: Path  # the server's base directory (``cfg.base`` is the worker's own)
    address: str  # the worker's own loopback address: relays and the cluster port

    @property
    def name(self) -> str:
        return f"w{self.index}"


@dataclass
class ServerConfig:
    base: Path
    listen: str = "127.0.0.1"
    port_offset: int = 0
    workers: int = 1  # processes serving this base; 0 = one per usable core
    main_domain: str = ""  # "" = the host name (decided on first start)
    postmaster_password: str | None = None  # first start only; never stored here
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    managesieve: ManageSieveConfig = field(default_factory=ManageSieveConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log_level: str = "INFO"
    log_format: str = "text"  # "text" or "json" (one JSON object per line; dynamail.events)
    config_file: Path | None = None  # the file read; None = <base>/Settings/server.toml
    worker: WorkerSlot | None = None  # set in the worker processes of ``serve --workers``

    # -- derived ---------------------------------------------------------
    @property
    def home(self) -> Path:
        """The server's base directory (a worker's ``base`` is its own)."""
        return self.worker.home if self.worker is not None else self.base

    @property
    def settings_dir(self) -> Path:
        return self.home / SETTINGS_DIR

    @property
    def settings_file(self) -> Path:
        return self.config_file or self.settings_dir / SETTINGS_FILE

    @property
    def shared_base(self) -> Path:
        if self.worker is not None:
            return self.worker.home / "Domains"
        if self.cluster.shared_base:
            return Path(self.cluster.shared_base)
        return self.base / "SharedDomains"

    @property
    def clustered(self) -> bool:
        return self.cluster.role != "standalone"

    def port(self, name: str) -> int:
        """The actual port number (standard or configured, plus the offset)."""
        return self.ports[name] + self.port_offset

    def cert_paths(self) -> tuple[Path, Path]:
        if self.tls.cert and self.tls.key:
            return Path(self.tls.cert), Path(self.tls.key)
        return self.settings_dir / "server.crt", self.settings_dir / "server.key"

    def to_toml(self) -> dict[str, Any]:
        """The file form (what ``save`` writes): no command-line-only values."""
        out: dict[str, Any] = {
            "listen": self.listen,
            "workers": self.workers,
            "main_domain": self.main_domain,
            "log_level": self.log_level,
            "log_format": self.log_format,
            "ports": {k: v for k, v in self.ports.items() if DEFAULT_PORTS.get(k) != v},
            "tls": dataclasses.asdict(self.tls),
            "limits": dataclasses.asdict(self.limits),
            "cluster": dataclasses.asdict(self.cluster),
            "smtp": dataclasses.asdict(self.smtp),
            "pop3": dataclasses.asdict(self.pop3),
            "managesieve": dataclasses.asdict(self.managesieve),
            # TOML has no null: an unset optional value is left out
            "imap": {k: v for k, v in dataclasses.asdict(self.imap).items() if v is not None},
            "auth": dataclasses.asdict(self.auth),
        }
        return out


def worker_count(cfg: ServerConfig) -> int:
    """How many processes serve the base: ``workers``, 0 meaning one per core."""
    if cfg.workers:
        return cfg.workers
    from dynamail.auth import usable_cores

    return min(usable_cores(), MAX_WORKERS)


def default_main_domain() -> str:
    """The host name, when it is a valid domain name; else ``localhost``."""
    for name in (socket.getfqdn(), socket.gethostname()):
        try:
            return names.domain_name(name)
        except names.BadName:
            continue
    return "localhost"


def _section(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"{where}.{key}: unknown setting")
        kwargs[key] = _coerce(value, f.type, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    t = str(typ)
    if t in ("bool", "bool | None"):
        # only TOML's true/false: "yes", 1 or "false" are refused, not guessed
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected a boolean (true or false)")
        return value
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer")
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number")
        return float(value)
    if t == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    if t == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return list(value)
    if t == "dict[str, str]":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where}: expected a table of strings")
        return dict(value)
    raise ConfigError(f"{where}: unsupported setting type {t}")


def read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def base_in_file(path: Path) -> Path | None:
    """The ``base`` setting of a settings file given with ``--config`` (so a
    host's unit can say only ``dynamail serve --config FILE``)."""
    if not Path(path).exists():
        raise ConfigError(f"{path}: no such settings file")
    value = read_file(Path(path)).get("base")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: base: expected a directory path")
    return Path(value)


def from_dict(base: Path, data: dict[str, Any], config_file: Path | None = None) -> ServerConfig:
    cfg = ServerConfig(base=base, config_file=config_file)
    sections = {
        "tls": TlsConfig, "limits": LimitsConfig, "cluster": ClusterConfig, "smtp": SmtpConfig,
        "pop3": Pop3Config, "imap": ImapConfig, "auth": AuthConfig, "managesieve": ManageSieveConfig,
    }
    for key, value in data.items():
        if key in sections:
            setattr(cfg, key, _section(sections[key], value, key))
        elif key == "ports":
            if not isinstance(value, dict):
                raise ConfigError("ports: expected a table")
            for name, port in value.items():
                if name not in DEFAULT_PORTS:
                    raise ConfigError(f"ports.{name}: unknown listener")
                if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                    raise ConfigError(f"ports.{name}: expected a port number")
                cfg.ports[name] = port
        elif key == "base":  # read by `dynamail serve --config FILE` without --base
            if not isinstance(value, str) or not value:
                raise ConfigError("base: expected a directory path")
        elif key in ("listen", "main_domain", "log_level", "log_format"):
            if not isinstance(value, str):
                raise ConfigError(f"{key}: expected a string")
            setattr(cfg, key, value)
        elif key in ("port_offset", "workers"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key}: expected an integer")
            setattr(cfg, key, value)
        else:
            raise ConfigError(f"{key}: unknown setting")
    validate(cfg)
    return cfg


def validate(cfg: ServerConfig) -> None:
    if cfg.cluster.role not in ROLES:
        raise ConfigError(f"cluster.role: must be one of {', '.join(ROLES)}")
    cfg.log_level = cfg.log_level.upper()
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}")
    if cfg.log_format not in ("text", "json"):
        raise ConfigError("log_format: must be text or json")
    if not 0 <= cfg.port_offset <= 65535:
        raise ConfigError("port_offset: must be between 0 and 65535")
    if not 0 <= cfg.workers <= MAX_WORKERS:
        raise ConfigError(f"workers: must be between 0 (one per core) and {MAX_WORKERS}")
    if cfg.workers != 1 and cfg.clustered and cfg.worker is None:
        raise ConfigError("workers: a cluster member runs one process (workers = 1)")
    for name, port in cfg.ports.items():
        if port + cfg.port_offset > 65535:
            raise ConfigError(f"ports.{name}: {port} plus the port offset {cfg.port_offset} exceeds 65535")
    if cfg.main_domain:
        try:
            cfg.main_domain = names.domain_name(cfg.main_domain)
        except names.BadName as exc:
            raise ConfigError(f"main_domain: {exc}") from None
    if bool(cfg.tls.cert) != bool(cfg.tls.key):
        raise ConfigError("tls: give both cert and key, or neither")
    _validate_auth(cfg.auth)


def _validate_auth(a: AuthConfig) -> None:
    if not 1 <= a.argon2_parallelism <= 64:
        raise ConfigError("auth.argon2_parallelism: must be between 1 and 64")
    if not 8 * a.argon2_parallelism <= a.argon2_memory_kib <= 4 * 1024 * 1024:
        raise ConfigError("auth.argon2_memory_kib: must be between 8 x parallelism and 4194304 (4 GiB)")
    if not 1 <= a.argon2_time_cost <= 100:
        raise ConfigError("auth.argon2_time_cost: must be between 1 and 100")
    if not 0 <= a.hash_concurrency <= 1024:
        raise ConfigError("auth.hash_concurrency: must be between 0 (the number of cores) and 1024")
    if a.cache_seconds < 0 or a.verifier_seconds < 0:
        raise ConfigError("auth: cache_seconds and verifier_seconds must not be negative")


def load(
    base: Path,
    *,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ServerConfig:
    """Defaults, then the settings file, then ``overrides`` (command-line options).

    ``overrides`` keys: ``listen``, ``port_offset``, ``main_domain``,
    ``postmaster_password``, ``role``, ``shared_base``, ``log_level``, ``workers``;
    ``None`` values are ignored.
    """
    base = Path(base).absolute()
    path = config_file or base / SETTINGS_DIR / SETTINGS_FILE
    cfg = from_dict(base, read_file(path), config_file)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "role":
            cfg.cluster.role = value
        elif key == "shared_base":
            cfg.cluster.shared_base = str(Path(value).absolute())
        elif key in ("listen", "port_offset", "main_domain", "postmaster_password", "log_level", "workers"):
            setattr(cfg, key, value)
        else:
            raise ConfigError(f"{key}: unknown option")
    validate(cfg)
    return cfg


def save(cfg: ServerConfig) -> None:
    """Write the file form atomically (used on first start)."""
    private_dirs(cfg.settings_file.parent)
    write_private(cfg.settings_file, tomli_w.dumps(cfg.to_toml()).encode("utf-8"))


def first_start_settings(cfg: ServerConfig) -> bool:
    """Create the settings file on first start, deciding the Main Domain.

    Returns True when this was the first start (no settings file existed).
    An existing file's ``main_domain`` wins over the option, so the Main
    Domain of a server never changes by accident.
    """
    if cfg.settings_file.exists():
        stored = read_file(cfg.settings_file).get("main_domain", "")
        if isinstance(stored, str) and stored:
            cfg.main_domain = stored
        elif not cfg.main_domain:
            cfg.main_domain = default_main_domain()
        return False
    if not cfg.main_domain:
        cfg.main_domain = default_main_domain()
    private_dirs(cfg.settings_file.parent)
    data = {"main_domain": cfg.main_domain}
    write_private(cfg.settings_file, tomli_w.dumps(data).encode("utf-8"))
    return True
