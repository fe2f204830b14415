"""Parsing of SMTP command arguments: paths and ESMTP parameters.

``MAIL FROM:<reverse-path> [params]`` and ``RCPT TO:<forward-path> [params]``
(RFC 5321 4.1.1.2, 4.1.1.3, 4.1.2).  The parser is strict where ambiguity
would be dangerous (a path is one token; parameters are ``KEY[=VALUE]``
separated by single spaces) and lenient where real clients deviate (a space
after the colon; a path without angle brackets).  Errors carry the reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dynamail.smtp.limits import MAX_PATH
from dynamail.smtp.replies import Reply

_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$")
_LITERAL = re.compile(r"^\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9]{1,3}(?:\.[0-9]{1,3}){3})\]$")
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_XTEXT_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


class SyntaxProblem(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


def _bad_path(text: str = "Syntax error in mailbox address") -> SyntaxProblem:
    return SyntaxProblem(Reply(501, "5.1.3", text))


def _bad_param(text: str = "Syntax error in parameters") -> SyntaxProblem:
    return SyntaxProblem(Reply(501, "5.5.4", text))


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox ``local@domain``; ``domain`` is lower-cased."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        return str(self).isascii()


def _unquote_local(local: str) -> str:
    if local.startswith('"'):
        if len(local) < 2 or not local.endswith('"'):
            raise _bad_path()
        inner = local[1:-1]
        out: list[str] = []
        it = iter(inner)
        for ch in it:
            if ch == "\\":
                nxt = next(it, None)
                if nxt is None:
                    raise _bad_path()
                out.append(nxt)
            elif ch == '"':
                raise _bad_path()
            else:
                out.append(ch)
        return "".join(out)
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise _bad_path()
    if not all(_ATEXT.match(ch) or ord(ch) > 127 for ch in local):
        raise _bad_path()
    return local


def parse_address(text: str) -> Address:
    """Parse ``local@domain`` (the inside of a path, source route removed)."""
    if len(text) > MAX_PATH:
        raise SyntaxProblem(Reply(501, "5.1.3", "Path too long"))
    at = text.rfind("@")
    if at <= 0 or at == len(text) - 1:
        raise _bad_path()
    local, domain = text[:at], text[at + 1 :]
    if len(local) > 64 or not local:
        raise SyntaxProblem(Reply(501, "5.1.3", "Local part too long"))
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise _bad_path()
    local = _unquote_local(local)
    if domain.startswith("["):
        if not _LITERAL.match(domain):
            raise _bad_path("Bad address literal")
    else:
        try:
            ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
        except UnicodeError:
            raise _bad_path("Bad domain") from None
        if not _DOMAIN.match(ascii_domain):
            raise _bad_path("Bad domain")
        domain = domain.rstrip(".")
    return Address(local, domain.lower())


def _split_path(arg: str) -> tuple[str, str]:
    """Split ``<path> rest`` into the path text (without brackets) and rest."""
    arg = arg.lstrip(" ")
    if arg.startswith("<"):
        i, quoted = 1, False
        while i < len(arg):
            ch = arg[i]
            if ch == "\\" and quoted:
                i += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == ">" and not quoted:
                return arg[1:i], arg[i + 1 :]
            i += 1
        raise _bad_path("Missing '>' in path")
    # lenient: a bare address, up to the first space
    path, _, rest = arg.partition(" ")
    if not path:
        raise _bad_path()
    return path, (" " + rest if rest else "")


def _strip_route(path: str) -> str:
    # RFC 5321 4.1.2: an obsolete source route "@a,@b:" is accepted and ignored
    if path.startswith("@"):
        colon = path.find(":")
        if colon < 0:
            raise _bad_path()
        return path[colon + 1 :]
    return path


def parse_params(rest: str) -> dict[str, str | None]:
    """``KEY=VALUE KEY ...`` → ``{"KEY": "VALUE", "KEY": None}`` (keys upper-case)."""
    params: dict[str, str | None] = {}
    if not rest:
        return params
    if not rest.startswith(" "):
        raise _bad_param()
    for token in rest.strip(" ").split(" "):
        if not token:
            continue
        key, eq, value = token.partition("=")
        if not _XTEXT_KEY.match(key):
            raise _bad_param()
        key = key.upper()
        if key in params:
            raise _bad_param(f"Duplicate parameter {key}")
        if eq and not value:
            raise _bad_param()
        params[key] = value if eq else None
    return params


def parse_mail_from(arg: str) -> tuple[Address | None, dict[str, str | None]]:
    """The argument after ``MAIL``: ``FROM:<path> params``; None for ``<>``."""
    if arg[:5].upper() != "FROM:":
        raise SyntaxProblem(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
    path, rest = _split_path(arg[5:])
    params = parse_params(rest)
    if path == "":
        return None, params
    return parse_address(_strip_route(path)), params


def parse_rcpt_to(arg: str, postmaster_domain: str) -> tuple[Address, dict[str, str | None]]:
    """The argument after ``RCPT``: ``TO:<path> params``.  ``<Postmaster>``
    (RFC 5321 4.5.1) becomes postmaster at ``postmaster_domain``."""
    if arg[:3].upper() != "TO:":
        raise SyntaxProblem(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>"))
    path, rest = _split_path(arg[3:])
    params = parse_params(rest)
    if path.lower() == "postmaster":
        return Address("postmaster", postmaster_domain), params
    if path == "":
        raise _bad_path("Empty recipient")
    return parse_address(_strip_route(path)), params
