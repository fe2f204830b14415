"""The registry of Sieve commands and tests, and the checker that validates a
syntax tree against it.

Each command and test is one :class:`Spec` row: its positional arguments,
its tagged arguments (with the extension each needs), which tags exclude
each other, whether it takes tests and a block, and the capability that
must be named in ``require`` (RFC 5228 3.2) before it may be used.  The
checker turns the parser's generic tree into :class:`Call` nodes whose tags
and positional arguments are already sorted out, so the interpreter never
re-parses arguments.  A script that uses anything outside the table is
refused at upload time (RFC 5804 ``PUTSCRIPT``) with the line at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dynamail.sieve.grammar import (
    Argument,
    Command,
    Number,
    SieveError,
    StringList,
    Tag,
    Test,
    parse,
)


class SieveCheckError(SieveError):
    """The script parses but uses a command, argument or extension wrongly."""


#: Every capability this interpreter implements (RFC 5804 SIEVE capability).
CAPABILITIES: tuple[str, ...] = (
    "fileinto", "reject", "ereject", "envelope", "imap4flags", "body", "variables",
    "vacation", "vacation-seconds", "copy", "mailbox", "relational", "date",
    "editheader", "subaddress", "encoded-character", "duplicate", "environment", "include", "spamtest", "spamtestplus",
    "comparator-i;ascii-numeric", "comparator-i;octet",
    "comparator-i;ascii-casemap",
)
COMPARATORS = frozenset({"i;octet", "i;ascii-casemap", "i;ascii-numeric"})
RELATIONS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})

_MATCH = {"is": "", "contains": "", "matches": "", "value": "string", "count": "string"}
_MATCH_EXT = {"value": "relational", "count": "relational"}
_ADDRESS_PART = {"all": "", "localpart": "", "domain": "", "user": "", "detail": ""}
_ADDRESS_EXT = {"user": "subaddress", "detail": "subaddress"}  # RFC 5233
_COMPARATOR = {"comparator": "string"}
_MATCH_GROUPS = (frozenset(_MATCH), frozenset(_ADDRESS_PART))


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    kind: str  # "action" | "control" | "test"
    positional: tuple[str, ...] = ()  # "string" | "strings" | "number", "?" suffix: optional
    tags: Mapping[str, str] = field(default_factory=dict)  # tag -> "" | "string" | "strings" | "number"
    exclusive: tuple[frozenset[str], ...] = ()
    tests: str = "none"  # "none" | "one" | "list"
    block: bool = False
    extension: str | None = None
    tag_extension: Mapping[str, str] = field(default_factory=dict)
    required_tags: tuple[frozenset[str], ...] = ()  # one of each set must be given


def _match_spec(name: str, positional: tuple[str, ...], *, address: bool = False,
                extra: Mapping[str, str] | None = None, extension: str | None = None,
                extra_ext: Mapping[str, str] | None = None,
                extra_exclusive: tuple[frozenset[str], ...] = ()) -> Spec:
    tags = dict(_MATCH) | dict(_COMPARATOR)
    if address:
        tags |= _ADDRESS_PART
    tags |= dict(extra or {})
    groups = _MATCH_GROUPS if address else (_MATCH_GROUPS[0],)
    return Spec(name, "test", positional, tags, groups + extra_exclusive, extension=extension,
                tag_extension=dict(_MATCH_EXT) | (_ADDRESS_EXT if address else {}) | dict(extra_ext or {}))


_FLAGS_TAG = {"flags": "strings"}
_FLAGS_EXT = {"flags": "imap4flags"}
_DATE_TAGS = {"zone": "string", "originalzone": ""}

SPECS: dict[str, Spec] = {s.name: s for s in (
    # RFC 5228 section 3: control commands
    Spec("require", "control", ("strings",)),
    Spec("if", "control", tests="one", block=True),
    Spec("elsif", "control", tests="one", block=True),
    Spec("else", "control", block=True),
    Spec("stop", "control"),
    # RFC 6609: include, return, global
    Spec("include", "control", ("string",), {"personal": "", "global": "", "once": "", "optional": ""},
         (frozenset({"personal", "global"}),), extension="include"),
    Spec("return", "control", extension="include"),
    Spec("global", "action", ("strings",), extension="include"),
    # RFC 5228 section 4 and extensions: actions
    Spec("keep", "action", tags=_FLAGS_TAG, tag_extension=_FLAGS_EXT),
    Spec("discard", "action"),
    Spec("redirect", "action", ("string",), {"copy": ""}, tag_extension={"copy": "copy"}),
    Spec("fileinto", "action", ("string",), {"copy": "", "create": ""} | _FLAGS_TAG,
         extension="fileinto", tag_extension={"copy": "copy", "create": "mailbox"} | _FLAGS_EXT),
    Spec("reject", "action", ("string",), extension="reject"),
    Spec("ereject", "action", ("string",), extension="ereject"),
    Spec("vacation", "action", ("string",),
         {"days": "number", "seconds": "number", "subject": "string", "from": "string",
          "addresses": "strings", "mime": "", "handle": "string"},
         (frozenset({"days", "seconds"}),), extension="vacation",
         tag_extension={"seconds": "vacation-seconds"}),
    Spec("set", "action", ("string", "string"),
         {"lower": "", "upper": "", "lowerfirst": "", "upperfirst": "", "quotewildcard": "",
          "length": ""},
         (frozenset({"lower", "upper"}), frozenset({"lowerfirst", "upperfirst"})),
         extension="variables"),
    Spec("setflag", "action", ("string?", "strings"), extension="imap4flags"),
    Spec("addflag", "action", ("string?", "strings"), extension="imap4flags"),
    Spec("removeflag", "action", ("string?", "strings"), extension="imap4flags"),
    Spec("addheader", "action", ("string", "string"), {"last": ""}, extension="editheader"),
    Spec("deleteheader", "action", ("string", "strings?"),
         dict(_MATCH) | dict(_COMPARATOR) | {"index": "number", "last": ""},
         _MATCH_GROUPS[:1], extension="editheader", tag_extension=dict(_MATCH_EXT)),
    # RFC 5228 section 5 and extensions: tests
    Spec("allof", "test", tests="list"),
    Spec("anyof", "test", tests="list"),
    Spec("not", "test", tests="one"),
    Spec("true", "test"),
    Spec("false", "test"),
    Spec("exists", "test", ("strings",)),
    Spec("size", "test", ("number",), {"over": "", "under": ""}, (frozenset({"over", "under"}),),
         required_tags=(frozenset({"over", "under"}),)),
    _match_spec("header", ("strings", "strings")),
    _match_spec("address", ("strings", "strings"), address=True),
    _match_spec("envelope", ("strings", "strings"), address=True, extension="envelope"),
    _match_spec("string", ("strings", "strings"), extension="variables"),
    _match_spec("hasflag", ("strings?", "strings"), extension="imap4flags"),
    _match_spec("body", ("strings",), extra={"raw": "", "content": "strings", "text": ""},
                extension="body", extra_exclusive=(frozenset({"raw", "content", "text"}),)),
    _match_spec("date", ("string", "string", "strings"), extra=_DATE_TAGS, extension="date",
                extra_exclusive=(frozenset(_DATE_TAGS),)),
    _match_spec("currentdate", ("string", "strings"), extra={"zone": "string"}, extension="date"),
    Spec("mailboxexists", "test", ("strings",), extension="mailbox"),
    _match_spec("environment", ("string", "strings"), extension="environment"),
    _match_spec("spamtest", ("string",), extra={"percent": ""}, extension="spamtest",
                extra_ext={"percent": "spamtestplus"}),
    Spec("duplicate", "test", (), {"handle": "string", "header": "string", "uniqueid": "string",
                                   "seconds": "number", "last": ""},
         (frozenset({"header", "uniqueid"}),), extension="duplicate"),
)}


Value = bool | int | str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """A checked command or test: tags and positional arguments sorted out."""

    name: str
    tags: Mapping[str, Value]
    args: tuple[Value | None, ...]  # None: an optional argument not given
    tests: tuple[Call, ...]
    block: tuple[Call, ...] | None
    line: int

    def tag(self, name: str, default: Value | None = None) -> Value | None:
        return self.tags.get(name, default)

    def number(self, name: str, default: int) -> int:
        value = self.tags.get(name, default)
        return value if isinstance(value, int) else default


@dataclass(frozen=True, slots=True)
class Script:
    """A checked script: its commands and the capabilities it requires."""

    commands: tuple[Call, ...]
    requires: frozenset[str]
    includes: tuple[str, ...] = ()  # personal scripts named by include (RFC 6609)


class Checker:
    def __init__(self) -> None:
        self.requires: set[str] = set()
        self.includes: list[str] = []

    def script(self, commands: tuple[Command, ...]) -> Script:
        prelude = True
        for cmd in commands:
            if cmd.name == "require":
                if not prelude:
                    raise SieveCheckError("require must come before any other command", cmd.line)
                call = self._call(cmd, "control")
                caps = call.args[0]
                for cap in caps if isinstance(caps, tuple) else ():
                    cap = cap.lower()
                    if cap not in CAPABILITIES:
                        raise SieveCheckError(f"unsupported extension {cap!r}", cmd.line)
                    self.requires.add(cap)
                continue
            prelude = False
        block = self._block(commands)
        return Script(block, frozenset(self.requires), tuple(dict.fromkeys(self.includes)))

    def _block(self, commands: tuple[Command, ...]) -> tuple[Call, ...]:
        out: list[Call] = []
        previous = ""
        for cmd in commands:
            if cmd.name == "require":
                previous = "require"
                continue
            if cmd.name in ("elsif", "else") and previous not in ("if", "elsif"):
                raise SieveCheckError(f"{cmd.name} without a preceding if", cmd.line)
            out.append(self._call(cmd, None))
            previous = cmd.name
        return tuple(out)

    def _spec(self, name: str, line: int, want_test: bool) -> Spec:
        spec = SPECS.get(name)
        if spec is None or (spec.kind == "test") != want_test:
            raise SieveCheckError(f"unknown {'test' if want_test else 'command'} {name!r}", line)
        if spec.extension is not None and spec.extension not in self.requires:
            raise SieveCheckError(f"{name} requires the {spec.extension!r} extension", line)
        return spec

    def _call(self, node: Command | Test, _kind: str | None) -> Call:
        is_test = isinstance(node, Test)
        spec = self._spec(node.name, node.line, is_test)
        tags, positional = self._arguments(spec, node.args, node.line)
        tests = tuple(self._call(t, None) for t in node.tests)
        if spec.tests == "none" and tests:
            raise SieveCheckError(f"{node.name} takes no test", node.line)
        if spec.tests == "one" and len(tests) != 1:
            raise SieveCheckError(f"{node.name} needs exactly one test", node.line)
        if spec.tests == "list" and (not node.tests or len(node.tests) < 1):
            raise SieveCheckError(f"{node.name} needs a test list", node.line)
        block: tuple[Call, ...] | None = None
        if isinstance(node, Command):
            if spec.block and node.block is None:
                raise SieveCheckError(f"{node.name} needs a block", node.line)
            if not spec.block and node.block is not None:
                raise SieveCheckError(f"{node.name} takes no block", node.line)
            if node.block is not None:
                block = self._block(node.block)
        call = Call(node.name, tags, positional, tests, block, node.line)
        self._semantics(call)
        return call

    def _arguments(self, spec: Spec, args: tuple[Argument, ...], line: int
                   ) -> tuple[dict[str, Value], tuple[Value | None, ...]]:
        tags: dict[str, Value] = {}
        rest: list[Argument] = []
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if not isinstance(arg, Tag):
                rest.append(arg)
                continue
            if rest:
                raise SieveCheckError(f"tag :{arg.name} after positional arguments", arg.line)
            kind = spec.tags.get(arg.name)
            if kind is None:
                raise SieveCheckError(f"{spec.name} has no tag :{arg.name}", arg.line)
            ext = spec.tag_extension.get(arg.name)
            if ext is not None and ext not in self.requires:
                raise SieveCheckError(f":{arg.name} requires the {ext!r} extension", arg.line)
            if arg.name in tags:
                raise SieveCheckError(f"tag :{arg.name} given twice", arg.line)
            for group in spec.exclusive:
                if arg.name in group and group & tags.keys():
                    raise SieveCheckError(f":{arg.name} conflicts with another tag", arg.line)
            if kind == "":
                tags[arg.name] = True
                continue
            if i >= len(args):
                raise SieveCheckError(f":{arg.name} needs an argument", arg.line)
            tags[arg.name] = self._decoded(_convert(kind, args[i], arg.line), arg.line)
            i += 1
        for group in spec.required_tags:
            if not group & tags.keys():
                raise SieveCheckError(f"{spec.name} needs one of " + ", ".join(sorted(":" + g for g in group)), line)
        kinds = spec.positional
        required = sum(1 for k in kinds if not k.endswith("?"))
        extra = len(rest) - required
        if extra < 0 or len(rest) > len(kinds):
            raise SieveCheckError(f"wrong number of arguments to {spec.name}", line)
        values: list[Value | None] = []
        it = iter(rest)
        for kind in kinds:
            if kind.endswith("?"):
                if extra > 0:
                    extra -= 1
                    values.append(self._decoded(_convert(kind[:-1], next(it), line), line))
                else:
                    values.append(None)
            else:
                values.append(self._decoded(_convert(kind, next(it), line), line))
        return tags, tuple(values)

    def _decoded(self, value: Value, line: int) -> Value:
        if "encoded-character" not in self.requires:
            return value
        if isinstance(value, str):
            return decode_encoded(value, line)
        if isinstance(value, tuple):
            return tuple(decode_encoded(v, line) for v in value)
        return value

    def _semantics(self, call: Call) -> None:
        comparator = call.tags.get("comparator")
        if comparator is not None:
            name = str(comparator).lower()
            if name not in COMPARATORS:
                raise SieveCheckError(f"unknown comparator {comparator!r}", call.line)
            if name == "i;ascii-numeric" and "comparator-i;ascii-numeric" not in self.requires:
                raise SieveCheckError("i;ascii-numeric requires its comparator extension", call.line)
            if name == "i;ascii-numeric" and ("contains" in call.tags or "matches" in call.tags):
                # RFC 4790 9.1: i;ascii-numeric supports equality and ordering only
                raise SieveCheckError("i;ascii-numeric cannot be used with :contains or :matches", call.line)
        for rel in ("value", "count"):
            if rel in call.tags and str(call.tags[rel]).lower() not in RELATIONS:
                raise SieveCheckError(f"bad relational operator {call.tags[rel]!r}", call.line)
        if call.name == "include" and "global" not in call.tags:
            self.includes.append(str(call.args[0]))
        if call.name == "global":
            if "variables" not in self.requires:
                raise SieveCheckError("global requires the 'variables' extension", call.line)
            names = call.args[0]
            for name in names if isinstance(names, tuple) else ():
                if not _is_variable_name(name):
                    raise SieveCheckError(f"bad variable name {name!r}", call.line)
        if call.name == "set":
            name = str(call.args[0])
            if not _is_variable_name(name):
                raise SieveCheckError(f"bad variable name {name!r}", call.line)
        if call.name in ("date", "currentdate"):
            part = str(call.args[-2]).lower()
            if part not in DATE_PARTS:
                raise SieveCheckError(f"unknown date part {part!r}", call.line)
        if call.name == "vacation" and "from" in call.tags and "@" not in str(call.tags["from"]):
            raise SieveCheckError(":from must be an address", call.line)


DATE_PARTS = frozenset({"year", "month", "day", "date", "julian", "hour", "minute", "second",
                        "time", "iso8601", "std11", "zone", "weekday"})


def _is_variable_name(name: str) -> bool:
    if not name or len(name) > 64 or not (name[0].isascii() and (name[0].isalpha() or name[0] == "_")):
        return False
    return all(c.isascii() and (c.isalnum() or c == "_") for c in name)


_ENCODED = re.compile(r"\$\{(hex|unicode):([^}]*)\}", re.IGNORECASE)
_HEX_WORDS = re.compile(r"^[ \t\r\n]*(?:[0-9A-Fa-f]+[ \t\r\n]*)*$")


def decode_encoded(text: str, line: int) -> str:
    """RFC 5228 2.4.2.4 (encoded-character): ``${hex:..}`` and ``${unicode:..}``."""
    def one(m: re.Match[str]) -> str:
        kind, body = m.group(1).lower(), m.group(2)
        if not _HEX_WORDS.match(body):
            return m.group(0)  # not an encoding: left as written
        words = body.split()
        if kind == "hex":
            if any(len(w) > 2 for w in words):
                return m.group(0)
            try:
                return bytes(int(w, 16) for w in words).decode("utf-8")
            except UnicodeDecodeError:
                raise SieveCheckError("${hex:...} is not UTF-8", line) from None
        chars = []
        for w in words:
            code = int(w, 16) if len(w) <= 8 else 0x110000
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise SieveCheckError(f"${{unicode:{w}}} is not a character", line)
            chars.append(chr(code))
        return "".join(chars)

    return _ENCODED.sub(one, text) if "${" in text else text


def _convert(kind: str, arg: Argument, line: int) -> Value:
    if kind == "number":
        if not isinstance(arg, Number):
            raise SieveCheckError("expected a number", line)
        return arg.value
    if not isinstance(arg, StringList):
        raise SieveCheckError("expected a string" if kind == "string" else "expected a string list", line)
    if kind == "string":
        if arg.bracketed or len(arg.values) != 1:
            raise SieveCheckError("expected a single string, not a list", line)
        return arg.values[0]
    return arg.values


def compile_script(text: str | bytes) -> Script:
    """Parse and check a script; :class:`SieveError` (syntax or check) if it is wrong."""
    return Checker().script(parse(text))
