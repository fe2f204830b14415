"""ServerConfig: defaults, the settings file, command-line overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamail.server import config as config_mod
from dynamail.server.config import DEFAULT_PORTS, ConfigError


def test_defaults(tmp_path: Path) -> None:
    cfg = config_mod.load(tmp_path)
    assert cfg.listen == "127.0.0.1"
    assert cfg.port_offset == 0
    assert cfg.ports == DEFAULT_PORTS
    assert cfg.port("cli") == 106 and cfg.port("imaps") == 993 and cfg.port("cluster") == 7070
    assert cfg.cluster.role == "standalone" and not cfg.clustered
    assert cfg.shared_base == tmp_path / "SharedDomains"
    assert cfg.cert_paths() == (tmp_path / "Settings/server.crt", tmp_path / "Settings/server.key")


def test_file_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "Settings").mkdir()
    (tmp_path / "Settings/server.toml").write_text(
        """
listen = "127.0.2.9"
main_domain = "mail.example"
log_level = "debug"
[ports]
imap = 1143
smtp = 2525
[limits]
max_per_address = 7
cli_idle_timeout = 12
[cluster]
role = "backend"
backends = ["127.0.0.1", "127.0.0.2:7071"]
lease_seconds = 1.5
[smtp]
relay_host = "smarthost:25"
mx = { "example.org" = "127.0.0.5:2525" }
[tls]
cert = "/x/c.pem"
key = "/x/k.pem"
"""
    )
    cfg = config_mod.load(tmp_path, overrides={"port_offset": 100, "listen": None, "role": "frontend"})
    assert cfg.listen == "127.0.2.9"  # None override ignored
    assert cfg.main_domain == "mail.example"
    assert cfg.log_level == "DEBUG"
    assert cfg.port("imap") == 1243 and cfg.port("smtp") == 2625 and cfg.port("pop3") == 210
    assert cfg.limits.max_per_address == 7 and cfg.limits.cli_idle_timeout == 12.0
    assert cfg.cluster.role == "frontend" and cfg.clustered
    assert cfg.cluster.backends == ["127.0.0.1", "127.0.0.2:7071"]
    assert cfg.cluster.lease_seconds == 1.5
    assert cfg.smtp.relay_host == "smarthost:25"
    assert cfg.smtp.mx == {"example.org": "127.0.0.5:2525"}
    assert cfg.cert_paths() == (Path("/x/c.pem"), Path("/x/k.pem"))


def test_shared_base_option(tmp_path: Path) -> None:
    cfg = config_mod.load(tmp_path, overrides={"shared_base": tmp_path / "shared"})
    assert cfg.shared_base == tmp_path / "shared"


def test_explicit_config_file(tmp_path: Path) -> None:
    f = tmp_path / "elsewhere.toml"
    f.write_text('listen = "127.0.2.3"\n')
    cfg = config_mod.load(tmp_path / "base", config_file=f)
    assert cfg.listen == "127.0.2.3"
    assert cfg.settings_file == f


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lisen = '1.2.3.4'\n", "lisen: unknown setting"),
        ("[ports]\nimapp = 1\n", "ports.imapp: unknown listener"),
        ("[ports]\nimap = 'x'\n", "ports.imap: expected a port number"),
        ("[ports]\nimap = 70000\n", "ports.imap"),
        ("[limits]\nmax_connections = 'many'\n", "limits.max_connections: expected an integer"),
        ("[limits]\nbogus = 1\n", "limits.bogus: unknown setting"),
        ("[cluster]\nrole = 'leader'\n", "cluster.role"),
        ("[cluster]\nbackends = 'a,b'\n", "cluster.backends: expected a list"),
        ("[smtp]\nmx = { a = 1 }\n", "smtp.mx"),
        ("[tls]\ncert = '/c'\n", "tls: give both"),
        ("log_level = 'LOUD'\n", "log_level"),
        ("limits = 5\n", "limits: expected a table"),
        ("this is not toml", "server.toml"),
        ("[auth]\nargon2_memory_kib = 4\n", "auth.argon2_memory_kib"),
        ("[auth]\nargon2_time_cost = 0\n", "auth.argon2_time_cost"),
        ("[auth]\nhash_concurrency = -1\n", "auth.hash_concurrency"),
        ("[auth]\nverifier_seconds = -5\n", "auth: cache_seconds and verifier_seconds"),
        ("[auth]\nrounds = 3\n", "auth.rounds: unknown setting"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "Settings").mkdir()
    (tmp_path / "Settings/server.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        config_mod.load(tmp_path)


def test_port_offset_overflow(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exceeds 65535"):
        config_mod.load(tmp_path, overrides={"port_offset": 60000})


def test_first_start_fixes_the_main_domain(tmp_path: Path) -> None:
    cfg = config_mod.load(tmp_path, overrides={"main_domain": "first.test"})
    assert config_mod.first_start_settings(cfg) is True
    assert cfg.settings_file.exists()
    again = config_mod.load(tmp_path, overrides={"main_domain": "second.test"})
    assert config_mod.first_start_settings(again) is False
    assert again.main_domain == "first.test"


def test_first_start_default_main_domain_is_the_host_name(tmp_path: Path) -> None:
    cfg = config_mod.load(tmp_path)
    config_mod.first_start_settings(cfg)
    assert cfg.main_domain == config_mod.default_main_domain()
    assert config_mod.read_file(cfg.settings_file)["main_domain"] == cfg.main_domain


def test_to_toml_round_trip(tmp_path: Path) -> None:
    cfg = config_mod.load(tmp_path)
    cfg.ports["imap"] = 1143
    cfg.cluster.backends = ["a", "b"]
    config_mod.save(cfg)
    back = config_mod.load(tmp_path)
    assert back.ports["imap"] == 1143 and back.cluster.backends == ["a", "b"]
    assert back.to_toml() == cfg.to_toml()


def test_main_domain_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="main_domain"):
        config_mod.load(tmp_path, overrides={"main_domain": "../etc"})
    cfg = config_mod.load(tmp_path, overrides={"main_domain": "Mail.Example.COM."})
    assert cfg.main_domain == "mail.example.com"


def test_shared_base_gets_a_symlink_in_the_base(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    from dynamail.server.app import build_context

    shared = tmp_path / "shared"
    cfg = config_mod.load(
        tmp_path / "base",
        overrides={"shared_base": shared, "main_domain": "m.test", "postmaster_password": "pw"},
    )
    ctx = build_context(cfg, password_hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    link = tmp_path / "base" / "SharedDomains"
    assert link.is_symlink() and link.resolve() == shared.resolve()
    assert ctx.directory.shared_base == shared
    ctx.directory.create_domain("s.test", shared=True)
    assert (shared / "s.test").is_dir() and (link / "s.test").is_dir()


def test_booleans_are_toml_booleans(tmp_path: Path) -> None:
    settings = tmp_path / "Settings"
    settings.mkdir()
    (settings / "server.toml").write_text(
        "[smtp]\nallow_plaintext_auth = true\n[pop3]\nallow_plaintext_login = true\n"
        "[imap]\nlogin_disabled_without_tls = false\n"
    )
    cfg = config_mod.load(tmp_path)
    assert cfg.smtp.allow_plaintext_auth is True and cfg.smtp.allow_any_sender is False
    assert cfg.pop3.allow_plaintext_login is True
    assert cfg.imap.login_disabled_without_tls is False
    config_mod.save(cfg)
    assert config_mod.load(tmp_path).to_toml() == cfg.to_toml()


def test_boolean_defaults_are_off(tmp_path: Path) -> None:
    cfg = config_mod.load(tmp_path)
    assert cfg.smtp.allow_plaintext_auth is False
    assert cfg.pop3.allow_plaintext_login is False
    assert cfg.imap.login_disabled_without_tls is None
    assert "login_disabled_without_tls" not in cfg.to_toml()["imap"]  # TOML has no null


@pytest.mark.parametrize("value", ['"true"', "1", '"yes"', "0"])
def test_boolean_refuses_strings_and_numbers(tmp_path: Path, value: str) -> None:
    settings = tmp_path / "Settings"
    settings.mkdir()
    (settings / "server.toml").write_text(f"[pop3]\nallow_plaintext_login = {value}\n")
    with pytest.raises(ConfigError, match=r"pop3\.allow_plaintext_login: expected a boolean"):
        config_mod.load(tmp_path)


def test_integer_setting_refuses_a_boolean(tmp_path: Path) -> None:
    settings = tmp_path / "Settings"
    settings.mkdir()
    (settings / "server.toml").write_text("[imap]\nappend_limit = true\n")
    with pytest.raises(ConfigError, match=r"imap\.append_limit: expected an integer"):
        config_mod.load(tmp_path)


def test_every_setting_is_documented() -> None:
    """docs/configuration.md has a row for every key of every section."""
    import dataclasses
    import re

    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    sections = {
        "tls": config_mod.TlsConfig, "limits": config_mod.LimitsConfig, "cluster": config_mod.ClusterConfig,
        "smtp": config_mod.SmtpConfig, "pop3": config_mod.Pop3Config, "imap": config_mod.ImapConfig,
        "auth": config_mod.AuthConfig,
    }
    missing = []
    for name, cls in sections.items():
        part = re.search(rf"^## `\[{name}\]`\n(.*?)(?=^## )", doc, re.M | re.S)
        assert part is not None, f"no section [{name}]"
        missing += [f"{name}.{f.name}" for f in dataclasses.fields(cls) if f"| `{f.name}` |" not in part.group(1)]
    assert missing == []
    for path in ("Spool/", "Queue/", "Domains/", "SharedDomains/"):
        assert f"| `{path}` |" in doc


def test_imap_reads_its_section(tmp_path: Path) -> None:
    from dynamail.imap.session import ImapSettings

    assert ImapSettings.from_config(config_mod.load(tmp_path)) == ImapSettings()
    settings = tmp_path / "Settings"
    settings.mkdir()
    (settings / "server.toml").write_text("[imap]\nlogin_disabled_without_tls = true\nappend_limit = 1000\n")
    got = ImapSettings.from_config(config_mod.load(tmp_path))
    assert got == ImapSettings(login_disabled_without_tls=True, append_limit=1000)


def test_auth_section_reaches_the_hasher_and_the_authenticator(tmp_path: Path) -> None:
    settings = tmp_path / "Settings"
    settings.mkdir()
    (settings / "server.toml").write_text(
        "main_domain = 'main.example'\n[auth]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n"
        "hash_concurrency = 3\nrehash_on_login = false\ncache_seconds = 7\nverifier_seconds = 60\n"
    )
    from dynamail.server.app import build_context

    cfg = config_mod.load(tmp_path)
    ctx = build_context(cfg)
    auth = ctx.auth
    try:
        h = ctx.directory.hasher
        assert h is not None and (h.memory_cost, h.time_cost, h.parallelism) == (1024, 1, 1)
        assert (auth.hashing.size, auth.rehash, auth.cache_ttl, auth.verifier_ttl) == (3, False, 7.0, 60.0)
        assert auth.verifier_key is not None and len(auth.verifier_key) == 32
        assert (settings / "verifier.key").stat().st_mode & 0o777 == 0o600
        assert config_mod.load(tmp_path).auth == cfg.auth
    finally:
        auth.hashing.close()


def test_workers_setting(tmp_path: Path) -> None:
    from dynamail.server.workers import worker_address, worker_config

    assert config_mod.load(tmp_path).workers == 1
    (tmp_path / "Settings").mkdir()
    (tmp_path / "Settings/server.toml").write_text("workers = 3\n")
    cfg = config_mod.load(tmp_path)
    assert cfg.workers == 3 and config_mod.worker_count(cfg) == 3
    assert config_mod.load(tmp_path, overrides={"workers": 0}).workers == 0
    assert config_mod.worker_count(config_mod.load(tmp_path, overrides={"workers": 0})) >= 1
    w = worker_config(cfg, 2, 3)
    # its own base for its queue and pid file; the server's settings, certificate and domains
    assert w.base == tmp_path / "Workers/w2" and w.home == tmp_path
    assert w.settings_dir == tmp_path / "Settings" and w.settings_file == tmp_path / "Settings/server.toml"
    assert w.cert_paths()[0] == tmp_path / "Settings/server.crt"
    assert w.shared_base == tmp_path / "Domains"
    assert w.cluster.role == "backend" and w.cluster.name == "w2" and not w.cluster.tls
    assert w.cluster.backends == [worker_address(i) for i in (1, 2, 3)]
    assert w.cluster.secret_file == str(tmp_path / "Settings/workers.secret")
    assert cfg.cluster.role == "standalone"  # the server's own configuration is untouched


@pytest.mark.parametrize("text, message", [
    ("workers = -1\n", "workers: must be between"),
    ("workers = 65\n", "workers: must be between"),
    ("workers = '2'\n", "workers: expected an integer"),
    ("workers = 2\n[cluster]\nrole = 'backend'\n", "workers: a cluster member runs one process"),
])
def test_bad_workers_setting(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "Settings").mkdir()
    (tmp_path / "Settings/server.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        config_mod.load(tmp_path)


def test_worker_slot_text() -> None:
    from dynamail.server.workers import slot_of

    assert slot_of("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "x/2", "2", "1/65"):
        with pytest.raises(ValueError):
            slot_of(bad)
