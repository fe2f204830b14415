"""``dynamail admin``: administer a server or cluster through its JSON API.

Every subcommand is one or two requests to ``/api/v1/`` on the HTTP admin
port, authenticated with HTTP Basic.  Output is a table for people, or the
API's JSON with ``--json`` for scripts.  Errors print the API's stable code
and message and exit with status 1 (2 when the server cannot be reached).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

import click

from dynamail.filemodes import open_private

DEFAULT_HTTP_PORT = 8010
DEFAULT_HTTPS_PORT = 9010
TIMEOUT = 30.0


class ApiFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Client:
    """A small synchronous client of the JSON API."""

    base_url: str
    user: str
    password: str
    ssl_context: ssl.SSLContext | None = None

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        url = self.base_url + "/api/v1" + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode("utf-8")
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Basic {token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or TIMEOUT, context=self.ssl_context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
                raise ApiFailure(exc.code, str(err["code"]), str(err["message"])) from None
            except (ValueError, KeyError, TypeError):
                raise ApiFailure(exc.code, "http_error", f"HTTP {exc.code} {exc.reason}") from None
        return json.loads(raw) if raw.strip() else None


def stream(client: Client, method: str, path: str, *, upload: Path | None = None,
           download: Path | None = None, timeout: float = 3600.0) -> tuple[Any, dict[str, str]]:
    """One request that sends a file as its body and/or writes the response
    body to a file, in chunks; follows one 409 owner_elsewhere to the owner
    (same credentials).  Returns (JSON body or None, response headers)."""
    base = client.base_url
    for _attempt in range(2):
        token = base64.b64encode(f"{client.user}:{client.password}".encode()).decode("ascii")
        req = urllib.request.Request(base + "/api/v1" + path, method=method)
        req.add_header("Authorization", f"Basic {token}")
        fh = None
        if upload is not None:
            fh = upload.open("rb")
            req.data = fh
            req.add_header("Content-Type", "application/gzip")
            req.add_header("Content-Length", str(upload.stat().st_size))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=client.ssl_context) as resp:
                headers = {k.lower(): v for k, v in resp.headers.items()}
                if download is not None and headers.get("content-type", "").startswith("application/gzip"):
                    tmp = download.with_name(download.name + ".part")
                    with open_private(tmp, "wb") as out:  # an account's mail: 0600
                        while chunk := resp.read(256 * 1024):
                            out.write(chunk)
                    tmp.replace(download)
                    return None, headers
                raw = resp.read()
                return (json.loads(raw) if raw.strip() else None), headers
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())["error"]
            except (ValueError, KeyError, TypeError):
                raise ApiFailure(exc.code, "http_error", f"HTTP {exc.code} {exc.reason}") from None
            if err.get("code") == "owner_elsewhere" and isinstance(err.get("url"), str) and base == client.base_url:
                click.echo(f"(the account is open on {err.get('owner')}: asking it at {err['url']})", err=True)
                base = err["url"].rstrip("/")
                continue
            raise ApiFailure(exc.code, str(err.get("code")), str(err.get("message"))) from None
        finally:
            if fh is not None:
                fh.close()
    raise ApiFailure(409, "owner_elsewhere", "the account moved again; try once more")


def _fail(message: str, status: int = 1) -> NoReturn:
    click.echo(f"dynamail admin: {message}", err=True)
    sys.exit(status)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows aligned under their headers, for people."""
    text_rows = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in text_rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        parsed: Any = value
        if value[:1] in ("[", "{"):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value
        out[key] = parsed
    return out


def _split_address(address: str) -> tuple[str, str]:
    name, sep, domain = address.partition("@")
    if not sep or not name or not domain:
        raise click.BadParameter(f"expected name@domain, got {address!r}")
    return quote(domain, safe=""), quote(name, safe="")


@dataclass
class State:
    client: Client
    as_json: bool

    def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        if not self.client.user:
            _fail("give --user (or set DYNAMAIL_USER)", 2)
        if not self.client.password:  # asked only now, so that --help never prompts
            self.client.password = click.prompt("Password", hide_input=True)
        try:
            return self.client.request(method, path, body, query, timeout)
        except ApiFailure as exc:
            _fail(f"{exc.code}: {exc.message}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            _fail(f"cannot reach {self.client.base_url}: {reason}", 2)

    def stream(self, method: str, path: str, *, upload: Path | None = None, download: Path | None = None,
               timeout: float = 3600.0) -> tuple[Any, dict[str, str]]:
        if not self.client.user:
            _fail("give --user (or set DYNAMAIL_USER)", 2)
        if not self.client.password:
            self.client.password = click.prompt("Password", hide_input=True)
        try:
            return stream(self.client, method, path, upload=upload, download=download, timeout=timeout)
        except ApiFailure as exc:
            _fail(f"{exc.code}: {exc.message}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            _fail(f"cannot reach {self.client.base_url}: {reason}", 2)

    def show(self, data: Any, headers: Sequence[str] | None = None, rows: Sequence[Sequence[Any]] | None = None,
             text: str | None = None) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        elif headers is not None and rows is not None:
            click.echo(table(headers, rows))
        elif text is not None:
            click.echo(text)
        elif isinstance(data, dict):
            click.echo(table(["setting", "value"], sorted(data.items())))


pass_state = click.make_pass_decorator(State)


@dataclass
class Found:
    """Where ``dynamail admin`` found a server by itself, and as whom to log in."""

    url: str
    user: str = ""
    password: str = ""
    source: str = ""


def _base_url(server: str, tls: bool) -> str:
    host, port = server, DEFAULT_HTTPS_PORT if tls else DEFAULT_HTTP_PORT
    if server.startswith("[") and "]" in server:  # [ipv6]:port
        inner, _, rest = server[1:].partition("]")
        host = f"[{inner}]"
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif server.count(":") == 1:
        h, _, p = server.partition(":")
        if not p.isdigit():
            raise click.BadParameter("the port must be a number", param_hint="--server")
        host, port = h, int(p)
    return f"{'https' if tls else 'http'}://{host}:{port}"


def find_in_dir(directory: Path, tls: bool = False) -> Found | None:
    """A local cluster's directory (its ``cluster.json``: a running member's
    HTTP port and the administrator) or a server's base directory (the
    ``admin.url`` the running server wrote, and ``postmaster.password`` when
    this user may read it)."""
    from dynamail.cluster import launcher
    from dynamail.server.app import ADMIN_URL_FILE, read_password_file

    scheme = "https" if tls else "http"
    cluster_json = directory / "cluster.json"
    if cluster_json.exists():
        data = json.loads(cluster_json.read_text())
        members = sorted(data.get("members", []), key=lambda m: m.get("role") != "backend")
        running = [m for m in members if launcher.alive(int(m.get("pid", 0)))] or members
        if not running:
            return None
        m = running[0]
        port = m["ports"].get(scheme) or m["ports"]["http"]
        admin_data = data.get("admin", {})
        return Found(f"{scheme}://{m['host']}:{port}", str(admin_data.get("user", "")),
                     str(admin_data.get("password", "")), f"{cluster_json} (member {m['name']})")
    url_file = directory / ADMIN_URL_FILE
    if url_file.exists():
        urls = url_file.read_text().split()
        url = next((u for u in urls if u.startswith(scheme + "://")), urls[0] if urls else "")
        if not url:
            return None
        try:
            password = read_password_file(directory) or ""
        except OSError:  # e.g. not readable by this user (mode 0600, another owner)
            password = ""
        return Found(url, "postmaster" if password else "", password, str(url_file))
    return None


DEMO_DIR = Path("demo-server")  # where `./dev demo` and `dynamail demo` put the demo


def locate(server: str | None, directory: Path | None, tls: bool) -> Found:
    """The server to talk to: ``--server``; else ``DYNAMAIL_ADMIN_URL``; else
    ``--dir``; else the demo in ``./demo-server``; else 127.0.0.1:8010."""
    if server:
        return Found(_base_url(server, tls), source="--server")
    env_url = os.environ.get("DYNAMAIL_ADMIN_URL", "").strip().rstrip("/")
    if env_url:
        if not env_url.startswith(("http://", "https://")):
            _fail("DYNAMAIL_ADMIN_URL must start with http:// or https://", 2)
        return Found(env_url, source="DYNAMAIL_ADMIN_URL")
    if directory is not None:
        found = find_in_dir(directory, tls)
        if found is None:
            _fail(f"no running cluster or server found in {directory} "
                  "(no cluster.json, no admin.url)", 2)
        return found
    if DEMO_DIR.is_dir():
        found = find_in_dir(DEMO_DIR, tls)
        if found is not None:
            return found
    return Found(_base_url("127.0.0.1", tls), source="default")


@click.group()
@click.option("--server", default=None, metavar="HOST[:PORT]",
              help="The server's HTTP admin address (port 8010, or 9010 with --tls). Default: "
                   "DYNAMAIL_ADMIN_URL, else --dir, else the demo in ./demo-server, else 127.0.0.1.")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="A local cluster's directory (cluster.json) or a server's base directory: "
                   "find the server (and the administrator's password) there.")
@click.option("--user", envvar="DYNAMAIL_USER", default="",
              help="Administrator account (name@domain, or a plain login name); or set DYNAMAIL_USER.")
@click.option("--password", envvar="DYNAMAIL_PASSWORD", default=None,
              help="Password (or set DYNAMAIL_PASSWORD; asked for when missing).")
@click.option("--tls/--no-tls", default=False, help="Use HTTPS.")
@click.option("--insecure", is_flag=True, help="With --tls: accept any certificate (self-signed servers).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables.")
@click.pass_context
def admin(ctx: click.Context, server: str | None, directory: Path | None, user: str,
          password: str | None, tls: bool, insecure: bool, as_json: bool) -> None:
    """Administer domains, accounts, alerts and the cluster through the JSON API."""
    found = locate(server, directory, tls)
    if not user and found.user:
        user = found.user
    if password is None and found.password and user == found.user:
        password = found.password
    ssl_context = None
    if found.url.startswith("https://"):
        ssl_context = ssl.create_default_context()
        if insecure:
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
    ctx.obj = State(Client(found.url, user, password or "", ssl_context), as_json)


# ---- domains --------------------------------------------------------------------------


@admin.group()
def domain() -> None:
    """Domains: list, create, delete."""


@domain.command("list")
@pass_state
def domain_list(state: State) -> None:
    """List domains (shared ones marked)."""
    data = state.call("GET", "/domains")
    rows = [[d["name"], "shared" if d.get("shared") else "local", d.get("accounts")] for d in data["domains"]]
    state.show(data, ["domain", "kind", "accounts"], rows)


@domain.command("create")
@click.argument("name")
@click.option("--shared", is_flag=True, help="Create a shared (cluster-wide) domain.")
@click.option("--setting", "settings", multiple=True, metavar="KEY=VALUE")
@pass_state
def domain_create(state: State, name: str, shared: bool, settings: tuple[str, ...]) -> None:
    """Create a domain."""
    body: dict[str, Any] = {"name": name, "shared": shared}
    if settings:
        body["settings"] = _parse_settings(settings)
    data = state.call("POST", "/domains", body)
    state.show(data, text=f"created {'shared ' if data.get('shared') else ''}domain {data.get('name', name)}")


@domain.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete its accounts too.")
@pass_state
def domain_delete(state: State, name: str, force: bool) -> None:
    """Delete a domain."""
    state.call("DELETE", f"/domains/{quote(name, safe='')}", query={"force": "true" if force else None})
    state.show({"ok": True, "deleted": name}, text=f"deleted domain {name}")


@domain.group("dkim")
def dkim_group() -> None:
    """A domain's DKIM keys: show, create, rotate (each prints the DNS records)."""


def _show_dkim(state: State, data: Any) -> None:
    rows = [[k["selector"], k["algorithm"], "active" if k["active"] else "retired", k["created"]]
            for k in data["keys"]]
    if state.as_json:
        state.show(data)
        return
    state.show(data, ["selector", "algorithm", "state", "created"], rows)
    if data["keys"]:
        click.echo("\nDNS records to publish (keep retired ones until mail signed with them is delivered):")
        for k in data["keys"]:
            click.echo(k["zone"])


@dkim_group.command("show")
@click.argument("name", metavar="DOMAIN")
@pass_state
def dkim_show(state: State, name: str) -> None:
    """List the keys and the DNS TXT record of each."""
    _show_dkim(state, state.call("GET", f"/domains/{quote(name, safe='')}/dkim"))


@dkim_group.command("create")
@click.argument("name", metavar="DOMAIN")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True,
              help="rsa: RSA-2048; ed25519: RFC 8463 (sign with both for the widest reach).")
@click.option("--selector", default=None, help="Selector (default: algorithm and today's date).")
@pass_state
def dkim_create(state: State, name: str, algorithm: str, selector: str | None) -> None:
    """Create a key and sign with it (an active key of the same algorithm retires)."""
    body: dict[str, Any] = {"algorithm": algorithm}
    if selector:
        body["selector"] = selector
    _show_dkim(state, state.call("POST", f"/domains/{quote(name, safe='')}/dkim", body))


@dkim_group.command("rotate")
@click.argument("name", metavar="DOMAIN")
@pass_state
def dkim_rotate(state: State, name: str) -> None:
    """New keys under new selectors for every active key; the old ones retire."""
    _show_dkim(state, state.call("POST", f"/domains/{quote(name, safe='')}/dkim/rotate", {}))


# ---- accounts -------------------------------------------------------------------------


@admin.group()
def account() -> None:
    """Accounts: list, create, passwd, delete, settings."""


@account.command("list")
@click.argument("domain_name", metavar="DOMAIN")
@click.option("--prefix", default=None, help="Only names starting with this.")
@click.option("--offset", type=click.IntRange(0), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=None)
@pass_state
def account_list(state: State, domain_name: str, prefix: str | None, offset: int | None, limit: int | None) -> None:
    """List a domain's accounts."""
    data = state.call("GET", f"/domains/{quote(domain_name, safe='')}/accounts",
                      query={"prefix": prefix, "offset": offset, "limit": limit})
    rows = [[name, f"{name}@{domain_name}"] for name in data["accounts"]]
    state.show(data, ["account", "address"], rows)
    if not state.as_json and data["total"] > len(rows):
        click.echo(f"({len(rows)} of {data['total']}; use --offset/--limit for more)")


@account.command("create")
@click.argument("address")
@click.option("--password", "new_password", default=None, help="Initial password.")
@click.option("--setting", "settings", multiple=True, metavar="KEY=VALUE")
@pass_state
def account_create(state: State, address: str, new_password: str | None, settings: tuple[str, ...]) -> None:
    """Create an account (name@domain)."""
    dom, name = _split_address(address)
    body: dict[str, Any] = {"name": address.partition("@")[0]}
    if new_password is not None:
        body["password"] = new_password
    if settings:
        body["settings"] = _parse_settings(settings)
    data = state.call("POST", f"/domains/{dom}/accounts", body)
    del name
    state.show(data, text=f"created account {data.get('address', address)}")


@account.command("passwd")
@click.argument("address")
@click.option("--new-password", "new_password", default=None, help="The new password (asked for when missing).")
@pass_state
def account_passwd(state: State, address: str, new_password: str | None) -> None:
    """Set an account's password."""
    if new_password is None:
        new_password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    dom, name = _split_address(address)
    data = state.call("PUT", f"/domains/{dom}/accounts/{name}/password", {"password": new_password})
    state.show(data, text=f"password of {address} changed")


@account.command("delete")
@click.argument("address")
@pass_state
def account_delete(state: State, address: str) -> None:
    """Delete an account and its mail."""
    dom, name = _split_address(address)
    state.call("DELETE", f"/domains/{dom}/accounts/{name}")
    state.show({"ok": True, "deleted": address}, text=f"deleted account {address}")


@account.command("settings")
@click.argument("address")
@click.option("--set", "changes", multiple=True, metavar="KEY=VALUE",
              help="Change a setting (VALUE 'default' removes it).")
@click.option("--effective", is_flag=True, help="Show effective settings (with inherited values).")
@pass_state
def account_settings(state: State, address: str, changes: tuple[str, ...], effective: bool) -> None:
    """Show or change an account's settings."""
    dom, name = _split_address(address)
    path = f"/domains/{dom}/accounts/{name}/settings"
    if changes:
        state.call("PATCH", path, _parse_settings(changes))
    data = state.call("GET", path + ("/effective" if effective else ""))
    state.show(data)


@account.command("export")
@click.argument("address")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--timeout", type=click.FloatRange(1), default=3600.0, show_default=True,
              help="Seconds to wait for the export.")
@pass_state
def account_export(state: State, address: str, file: Path, timeout: float) -> None:
    """Export an account into FILE (a .tar.gz here, on this machine): its
    mailboxes as Maildir++ (with dovecot-uidlist and keywords), settings and
    Sieve scripts.  Made by the member that has the account open, while it
    is in use; needs the Master right.  `account import ADDRESS FILE`
    restores it."""
    dom, name = _split_address(address)
    data, headers = state.stream("GET", f"/domains/{dom}/accounts/{name}/export", download=file, timeout=timeout)
    report = json.loads(headers.get("x-dynamail-export", "{}") or "{}") if data is None else data
    state.show(report, text=f"exported {report.get('messages', '?')} messages in {report.get('mailboxes', '?')} "
                            f"mailboxes ({report.get('bytes', '?')} bytes) to {file}")


@account.command("import")
@click.argument("address")
@click.argument("path")
@click.option("--format", "fmt", type=click.Choice(["auto", "maildir", "mbox"]), default="auto", show_default=True)
@click.option("--timeout", type=click.FloatRange(1), default=3600.0, show_default=True,
              help="Seconds to wait for the import to finish.")
@pass_state
def account_import(state: State, address: str, path: str, fmt: str, timeout: float) -> None:
    """Import into an account: an archive made by `account export` (a file
    on this machine, sent to the server: mail with flags, dates and
    subscriptions, settings, Sieve scripts), or a Maildir, an mbox file or
    a directory of mbox files that the server reads (a relative PATH is
    made absolute here).  Needs the Master right.  Running it again imports
    only new mail."""
    dom, name = _split_address(address)
    from dynamail.migrate.archive import is_archive

    if Path(path).is_file() and is_archive(Path(path)):
        data, _ = state.stream("POST", f"/domains/{dom}/accounts/{name}/restore", upload=Path(path),
                               timeout=timeout)
        text = (f"restored {data['imported']} messages into {data['mailboxes']} mailboxes of {address} "
                f"(from {data['exported_from']}, {data['exported_at']}), {data['duplicates']} already restored, "
                f"{data['skipped']} skipped, {data['sieve_scripts']} Sieve scripts, "
                f"{len(data['settings'])} settings")
        state.show(data, text=text)
        return
    body = {"path": os.path.abspath(path), "format": fmt}
    data = state.call("POST", f"/domains/{dom}/accounts/{name}/import", body, timeout=timeout)
    rows = [[mb, n] for mb, n in sorted(data.get("mailboxes", {}).items())]
    text = (f"imported {data['imported']} messages ({data['format']}), {data['duplicates']} already imported, "
            f"{data['skipped']} skipped" + ("" if data.get("complete", True) else f"; stopped: {data['stopped']}"))
    for p in data.get("problems", []):
        text += f"\n  skipped {p['where']}: {p['reason']}"
    if rows and not state.as_json:
        click.echo(table(["mailbox", "imported"], rows))
    state.show(data, text=text)


# ---- alerts ---------------------------------------------------------------------------


def _alert_path(domain_name: str | None, account_address: str | None, cluster: bool) -> str:
    if sum(bool(x) for x in (domain_name, account_address, cluster)) > 1:
        raise click.UsageError("choose at most one of --domain, --account, --cluster")
    if account_address:
        dom, name = _split_address(account_address)
        return f"/domains/{dom}/accounts/{name}/alerts"
    if domain_name:
        return f"/domains/{quote(domain_name, safe='')}/alerts"
    return "/cluster/alerts" if cluster else "/server/alerts"


_scope_options = [
    click.option("--domain", "domain_name", default=None, help="Alerts of this domain."),
    click.option("--account", "account_address", default=None, help="Alerts of this account (name@domain)."),
    click.option("--cluster", is_flag=True, help="Cluster-wide alerts."),
]


def _with_scope(f: Any) -> Any:
    for option in reversed(_scope_options):
        f = option(f)
    return f


@admin.group()
def alert() -> None:
    """Alerts: server-wide (default), cluster-wide, domain or account."""


def _show_alerts(state: State, data: Any) -> None:
    rows = [[a.get("stamp"), a.get("text")] for a in data["alerts"]]
    state.show(data, ["stamp", "text"], rows)


@alert.command("list")
@_with_scope
@pass_state
def alert_list(state: State, domain_name: str | None, account_address: str | None, cluster: bool) -> None:
    """List alerts."""
    _show_alerts(state, state.call("GET", _alert_path(domain_name, account_address, cluster)))


@alert.command("post")
@click.argument("text")
@_with_scope
@pass_state
def alert_post(state: State, text: str, domain_name: str | None, account_address: str | None, cluster: bool) -> None:
    """Post an alert."""
    _show_alerts(state, state.call("POST", _alert_path(domain_name, account_address, cluster), {"text": text}))


@alert.command("remove")
@click.argument("stamp")
@_with_scope
@pass_state
def alert_remove(state: State, stamp: str, domain_name: str | None, account_address: str | None, cluster: bool) -> None:
    """Remove an alert by its time stamp (as listed)."""
    state.call("DELETE", _alert_path(domain_name, account_address, cluster) + "/" + quote(stamp, safe=""))
    state.show({"ok": True, "removed": stamp}, text=f"removed alert {stamp}")


# ---- cluster --------------------------------------------------------------------------


@admin.group("cluster")
def cluster_group() -> None:
    """Cluster: status, Make Ready / Make Non-Ready."""


@cluster_group.command("status")
@pass_state
def cluster_status(state: State) -> None:
    """Members, Controller, Backup, ready state, load, open accounts."""
    data = state.call("GET", "/cluster")
    rows = []
    for m in data.get("members", []):
        role = m.get("role", "")
        if m.get("name") == data.get("controller"):
            role += " (Controller)"
        elif m.get("name") == data.get("backup"):
            role += " (Backup)"
        rows.append([m.get("name"), role, "Ready" if m.get("ready") else "Non-Ready", m.get("load"),
                     m.get("open_accounts"), m.get("version")])
    state.show(data, ["member", "role", "state", "load", "open accounts", "version"], rows)


@cluster_group.command("ready")
@click.argument("member")
@pass_state
def cluster_ready(state: State, member: str) -> None:
    """Make a member Ready."""
    data = state.call("POST", f"/cluster/members/{quote(member, safe='')}/ready")
    state.show(data, text=f"{member} is Ready")


@cluster_group.command("nonready")
@click.argument("member")
@pass_state
def cluster_nonready(state: State, member: str) -> None:
    """Make a member Non-Ready."""
    data = state.call("POST", f"/cluster/members/{quote(member, safe='')}/nonready")
    state.show(data, text=f"{member} is Non-Ready")
