"""The IMAP command grammar (RFC 9051 section 9, RFC 3501 section 9).

Two stages.  :func:`tokenize` turns one framed command (see
:mod:`dynamail.imap.framer`) into a token tree: ``str`` is an atom (NIL,
numbers, flags, sequence sets, fetch items such as ``BODY[1.2]<0.100>``),
``bytes`` is a string (quoted or literal), ``list`` is a parenthesised list.
The grammar functions below then read command arguments from the tokens:
sequence sets, search keys, fetch attributes, flags, dates.

Every failure raises :class:`ParseError` whose text goes to the client as
``BAD``.  Nothing here allocates more than the input's size; nesting is
bounded by :data:`limits.MAX_NESTING`.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Union

from dynamail.imap import limits, utf7

Token = Union[str, bytes, "list[Token]"]


class ParseError(Exception):
    """Malformed command; ``str(exc)`` is the text of the BAD reply."""


class ParseNo(ParseError):
    """The command parsed far enough to know it cannot be done: answered
    NO (``str(exc)`` may start with a response code), not BAD."""


class Literal(bytes):
    """A string sent as a literal (``{n}``), told apart from a quoted string
    where the grammar differs: a date-time is always quoted (RFC 3501
    section 9), so in APPEND a literal is always a message."""

    __slots__ = ()


_ATOM_END = frozenset(b' ()"{\r\n')
_QUOTED_SPECIALS = frozenset(b'"\\')


def tokenize(raw: bytes) -> list[Token]:
    """Tokens of one command (literals included in ``raw``)."""
    top: list[Token] = []
    stack: list[list[Token]] = [top]
    pos = 0
    n = len(raw)
    count = 0
    while pos < n:
        c = raw[pos]
        if c == 0x20:
            pos += 1
            continue
        count += 1
        if count > limits.MAX_TOKENS:
            raise ParseError("Too many tokens")
        cur = stack[-1]
        if c == 0x28:  # (
            if len(stack) > limits.MAX_NESTING:
                raise ParseError("Lists nested too deeply")
            new: list[Token] = []
            cur.append(new)
            stack.append(new)
            pos += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise ParseError("Unbalanced parentheses")
            stack.pop()
            pos += 1
        elif c == 0x22:  # "
            pos += 1
            out = bytearray()
            while True:
                if pos >= n:
                    raise ParseError("Unterminated quoted string")
                q = raw[pos]
                if q == 0x22:
                    pos += 1
                    break
                if q == 0x5C:
                    if pos + 1 >= n or raw[pos + 1] not in _QUOTED_SPECIALS:
                        raise ParseError("Bad escape in quoted string")
                    out.append(raw[pos + 1])
                    pos += 2
                    continue
                if q in (0, 0x0A, 0x0D):
                    raise ParseError("Invalid character in quoted string")
                out.append(q)
                pos += 1
            cur.append(bytes(out))
        elif c == 0x7B or (c == 0x7E and pos + 1 < n and raw[pos + 1] == 0x7B):  # { or ~{
            if c == 0x7E:
                pos += 1
            end = raw.find(b"}", pos)
            if end < 0:
                raise ParseError("Bad literal")
            spec = raw[pos + 1 : end].rstrip(b"+-")
            if not spec.isdigit():
                raise ParseError("Bad literal length")
            size = int(spec)
            pos = end + 1
            if raw[pos : pos + 2] == b"\r\n":
                pos += 2
            elif raw[pos : pos + 1] == b"\n":
                pos += 1
            else:
                raise ParseError("Literal must end its line")
            if pos + size > n:
                raise ParseError("Literal shorter than announced")
            cur.append(Literal(memoryview(raw)[pos : pos + size]))
            pos += size
        else:
            start = pos
            depth = 0
            while pos < n:
                c = raw[pos]
                if c == 0x5B:  # [ ... ] may hold spaces and lists
                    depth += 1
                elif c == 0x5D:
                    if depth:
                        depth -= 1
                elif c == 0x22 and depth:
                    close = raw.find(b'"', pos + 1)
                    if close < 0:
                        raise ParseError("Unterminated quoted string")
                    pos = close
                elif c in _ATOM_END and not (depth and c in (0x20, 0x28, 0x29)):
                    break
                elif c < 0x20 or c > 0x7E:
                    raise ParseError("Invalid character in atom")
                pos += 1
            if depth:
                # Not a fetch item with a section: "[" and "}" are plain
                # ATOM-CHARs of an astring (RFC 3501/9051 section 9), as in
                # ``SELECT a[}``.  Read it again as a plain atom.
                pos = _plain_atom_end(raw, start)
            if pos == start:
                raise ParseError("Unexpected character")
            cur.append(raw[start:pos].decode("ascii"))
    if len(stack) != 1:
        raise ParseError("Unbalanced parentheses")
    return top


def _plain_atom_end(raw: bytes, start: int) -> int:
    pos = start
    n = len(raw)
    while pos < n and raw[pos] not in _ATOM_END:
        c = raw[pos]
        if c < 0x20 or c > 0x7E:
            raise ParseError("Invalid character in atom")
        pos += 1
    return pos


# -- the command envelope ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: str  # upper case; "UID FETCH" etc. for UID variants
    args: list[Token]
    raw_size: int = 0


_TAG_BAD = frozenset('(){%*"\\+')


def parse_command(raw: bytes) -> Command:
    toks = tokenize(raw)
    if not toks or not isinstance(toks[0], str):
        raise ParseError("Missing tag")
    tag = toks[0]
    if len(tag) > limits.MAX_TAG or any(ch in _TAG_BAD for ch in tag):
        raise ParseError("Invalid tag")
    if len(toks) < 2 or not isinstance(toks[1], str):
        raise ParseError("Missing command")
    name = toks[1].upper()
    args = toks[2:]
    if name == "UID":
        if not args or not isinstance(args[0], str):
            raise ParseError("Missing command after UID")
        name = "UID " + args[0].upper()
        args = args[1:]
    return Command(tag, name, args, len(raw))


def tag_of(raw: bytes) -> str:
    """Best-effort tag of an unparseable command (for the BAD reply)."""
    head = raw.split(b" ", 1)[0]
    try:
        tag = head.decode("ascii")
    except UnicodeDecodeError:
        return "*"
    if not tag or len(tag) > limits.MAX_TAG or any(ch in _TAG_BAD for ch in tag):
        return "*"
    if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in tag):
        return "*"
    return tag


# -- simple arguments ----------------------------------------------------


class Args:
    """A cursor over a command's arguments."""

    __slots__ = ("pos", "toks")

    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.toks)

    def peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def next(self, what: str = "argument") -> Token:
        if self.pos >= len(self.toks):
            raise ParseError(f"Missing {what}")
        t = self.toks[self.pos]
        self.pos += 1
        return t

    def atom(self, what: str = "argument") -> str:
        t = self.next(what)
        if not isinstance(t, str):
            raise ParseError(f"Expected atom for {what}")
        return t

    def astring(self, what: str = "argument") -> bytes:
        t = self.next(what)
        if isinstance(t, list):
            raise ParseError(f"Expected string for {what}")
        if isinstance(t, str):
            return t.encode("ascii")
        return t

    def list(self, what: str = "list") -> list[Token]:
        t = self.next(what)
        if not isinstance(t, list):
            raise ParseError(f"Expected list for {what}")
        return t

    def number(self, what: str = "number") -> int:
        return number(self.atom(what), what)

    def end(self) -> None:
        if self.pos < len(self.toks):
            raise ParseError("Unexpected extra arguments")


MAX_NUMBER: Final = 2**32 - 1
MAX_NUMBER64: Final = 2**63 - 1


def number(s: str, what: str = "number", *, big: bool = False, nz: bool = False) -> int:
    if not s.isdigit() or not s.isascii() or len(s) > 20:
        raise ParseError(f"Invalid {what}")
    v = int(s)
    if v > (MAX_NUMBER64 if big else MAX_NUMBER) or (nz and v == 0):
        raise ParseError(f"Invalid {what}")
    return v


class BadMailboxName(ParseNo):
    """A well-formed astring that no mailbox can have (invalid modified
    UTF-7): the command is valid, so the answer is NO, not BAD."""


def mailbox(raw: bytes, *, utf8: bool) -> str:
    """A mailbox argument as text (RFC 9051 5.1; modified UTF-7 for rev1)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("Mailbox name is not valid UTF-8") from None
    if "\x00" in text:
        raise ParseError("Mailbox name contains NUL")
    if text.upper() == "INBOX":
        return "INBOX"
    if not utf8:
        if not text.isascii():
            raise ParseError("Mailbox name must be modified UTF-7 (or ENABLE UTF8=ACCEPT)")
        try:
            text = utf7.decode(text)
        except ValueError as exc:
            raise BadMailboxName(f"Mailbox name is not valid modified UTF-7: {exc}") from None
    if text[:6].upper() == "INBOX/":
        text = "INBOX" + text[5:]
    return text


def flag_list(tok: Token) -> frozenset[str]:
    """Flags as a parenthesised list or a single flag (STORE allows both)."""
    items = tok if isinstance(tok, list) else [tok]
    out: set[str] = set()
    for f in items:
        if not isinstance(f, str) or not f:
            raise ParseError("Invalid flag")
        out.add(canonical_flag(f))
    return frozenset(out)


_SYSTEM = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
_FLAG_BAD = frozenset('(){ %*"]')


def canonical_flag(f: str) -> str:
    if f.startswith("\\"):
        canon = _SYSTEM.get(f.lower())
        if canon is None:
            if f.lower() == "\\recent":
                raise ParseError("\\Recent cannot be stored")
            raise ParseError(f"Unknown system flag {f}")
        return canon
    if any(ch in _FLAG_BAD for ch in f) or "\\" in f:
        raise ParseError("Invalid keyword")
    if f.upper() == "NIL":
        # NIL is the nil of the grammar, not an atom a client can tell apart
        # from "no value" in a FETCH FLAGS list (RFC 3501/9051 section 9:
        # flag-keyword is an atom, and a parser reading "NIL" there cannot
        # know it is not nil); refused as Dovecot does.
        raise ParseError("Invalid keyword NIL")
    return f


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DATE_RE = re.compile(r"^\"?(\d{1,2})-([A-Za-z]{3})-(\d{4})\"?$")
_DATETIME_RE = re.compile(
    r"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$"
)


def date(tok: Token) -> datetime.date:
    s = tok.decode("ascii", "replace") if isinstance(tok, bytes) else tok
    if not isinstance(s, str):
        raise ParseError("Expected date")
    m = _DATE_RE.match(s)
    if m is None or m.group(2).lower() not in _MONTHS:
        raise ParseError("Invalid date")
    try:
        return datetime.date(int(m.group(3)), _MONTHS.index(m.group(2).lower()) + 1, int(m.group(1)))
    except ValueError:
        raise ParseError("Invalid date") from None


def date_time(tok: Token) -> datetime.datetime:
    if not isinstance(tok, bytes):
        raise ParseError("Expected quoted date-time")
    m = _DATETIME_RE.match(tok.decode("ascii", "replace"))
    if m is None or m.group(2).lower() not in _MONTHS:
        raise ParseError("Invalid date-time")
    off = datetime.timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
    if m.group(7) == "-":
        off = -off
    try:
        return datetime.datetime(
            int(m.group(3)), _MONTHS.index(m.group(2).lower()) + 1, int(m.group(1).strip()),
            int(m.group(4)), int(m.group(5)), int(m.group(6)),
            tzinfo=datetime.timezone(off),
        )
    except ValueError:
        raise ParseError("Invalid date-time") from None


# -- sequence sets (RFC 9051 section 9 "sequence-set", RFC 5182 "$") ------

STAR: Final = 0  # "*" in a sequence set: the largest number in use


@dataclass(frozen=True, slots=True)
class SequenceSet:
    ranges: tuple[tuple[int, int], ...]  # inclusive; STAR stands for "*"
    saved: bool = False  # "$" (RFC 5182 SEARCHRES)

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges with ``*`` replaced and ends ordered (RFC 9051 9: ``4:2`` is ``2:4``)."""
        out = []
        for lo, hi in self.ranges:
            a = largest if lo == STAR else lo
            b = largest if hi == STAR else hi
            if a > b:
                a, b = b, a
            out.append((a, b))
        return out

    def __str__(self) -> str:
        if self.saved:
            return "$"
        parts = []
        for lo, hi in self.ranges:
            a = "*" if lo == STAR else str(lo)
            b = "*" if hi == STAR else str(hi)
            parts.append(a if lo == hi else f"{a}:{b}")
        return ",".join(parts)


def sequence_set(tok: Token) -> SequenceSet:
    if not isinstance(tok, str):
        raise ParseError("Expected sequence set")
    if tok == "$":
        return SequenceSet((), saved=True)
    parts = tok.split(",")
    if len(parts) > limits.MAX_SEQUENCE_RANGES:
        raise ParseError("Sequence set too long")
    ranges = []
    for part in parts:
        lo_s, sep, hi_s = part.partition(":")
        lo = _seq_number(lo_s)
        hi = _seq_number(hi_s) if sep else lo
        ranges.append((lo, hi))
    return SequenceSet(tuple(ranges))


def _seq_number(s: str) -> int:
    if s == "*":
        return STAR
    return number(s, "sequence set", nz=True)


def is_sequence_set(tok: Token) -> bool:
    if not isinstance(tok, str) or not tok:
        return False
    if tok == "$":
        return True
    return all(ch in "0123456789:,*" for ch in tok) and tok[0] != "0"


# -- fetch attributes (RFC 9051 section 6.4.5) ---------------------------


@dataclass(frozen=True, slots=True)
class Section:
    parts: tuple[int, ...] = ()
    text: str = ""  # "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        s = ".".join(str(p) for p in self.parts)
        if self.text:
            s = f"{s}.{self.text}" if s else self.text
        if self.fields:
            s += " (" + " ".join(self.fields) + ")"
        return s


@dataclass(frozen=True, slots=True)
class FetchAtt:
    name: str  # FLAGS, UID, ... BODY, BODY.PEEK, BINARY, BINARY.PEEK, BINARY.SIZE
    section: Section | None = None  # None: not a BODY[...] form
    partial: tuple[int, int] | None = None  # (offset, length)

    @property
    def peek(self) -> bool:
        return self.name.endswith(".PEEK")

    def response_name(self) -> str:
        """The item name in the FETCH response (``.PEEK`` dropped, partial
        reported by origin only: RFC 9051 7.5.2)."""
        base = self.name.removesuffix(".PEEK")
        if self.section is None:
            return base
        s = f"{base}[{self.section}]"
        if self.partial is not None:
            s += f"<{self.partial[0]}>"
        return s

    def __str__(self) -> str:
        if self.section is None:
            return self.name
        s = f"{self.name}[{self.section}]"
        if self.partial is not None:
            s += f"<{self.partial[0]}.{self.partial[1]}>"
        return s


SIMPLE_ATTS = frozenset({
    "FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
    "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ", "SAVEDATE", "EMAILID", "THREADID", "PREVIEW",
})
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SECTION_ATT = re.compile(
    r"^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([^\]]*)\](?:<(\d{1,10})\.(\d{1,10})>)?$",
    re.IGNORECASE,
)
_SECTION_TEXT = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


def section(spec: str, *, binary: bool = False) -> Section:
    spec = spec.strip()
    fields: tuple[str, ...] = ()
    if "(" in spec:
        head, _, rest = spec.partition("(")
        if not rest.endswith(")"):
            raise ParseError("Bad header field list")
        names = []
        for t in tokenize(rest[:-1].encode("ascii", "replace")):
            if isinstance(t, list):
                raise ParseError("Bad header field list")
            name = t if isinstance(t, str) else t.decode("ascii", "replace")
            if not name or any(ord(c) <= 32 or ord(c) > 126 or c == ":" for c in name):
                raise ParseError("Bad header field name")
            names.append(name)  # echoed as sent; matched case-insensitively
        if not names:
            raise ParseError("Empty header field list")
        fields = tuple(names)
        spec = head.strip()
    parts: list[int] = []
    text = ""
    for i, piece in enumerate(spec.split(".")) if spec else []:
        if piece.isdigit():
            if text:
                raise ParseError("Bad section")
            parts.append(number(piece, "section part", nz=True))
        else:
            text = ".".join(spec.split(".")[i:]).upper()
            break
    if text and text not in _SECTION_TEXT:
        raise ParseError("Bad section")
    if text == "MIME" and not parts:
        raise ParseError("MIME needs a part number")
    if text.startswith("HEADER.FIELDS") != bool(fields):
        raise ParseError("Bad section")
    if binary and text:
        raise ParseError("BINARY takes part numbers only")
    return Section(tuple(parts), text, fields)


def fetch_att(tok: Token) -> FetchAtt:
    if not isinstance(tok, str):
        raise ParseError("Expected fetch attribute")
    up = tok.upper()
    if up in SIMPLE_ATTS:
        return FetchAtt(up)
    m = _SECTION_ATT.match(tok)
    if m is None:
        raise ParseError(f"Unknown fetch attribute {tok[:40]}")
    name = m.group(1).upper()
    sec = section(m.group(2), binary=name.startswith("BINARY"))
    partial = None
    if m.group(3) is not None:
        if name == "BINARY.SIZE":
            raise ParseError("BINARY.SIZE takes no partial")
        partial = (int(m.group(3)), int(m.group(4)))
    return FetchAtt(name, sec, partial)


def fetch_atts(tok: Token) -> tuple[FetchAtt, ...]:
    if isinstance(tok, str) and tok.upper() in MACROS:
        return tuple(FetchAtt(a) for a in MACROS[tok.upper()])
    items = tok if isinstance(tok, list) else [tok]
    if not items:
        raise ParseError("Empty fetch attribute list")
    out: list[FetchAtt] = []
    for i, t in enumerate(items):
        if isinstance(t, list) and i and out and out[-1].name == "PREVIEW":
            # RFC 8970 section 4: PREVIEW (LAZY); we always compute it
            if not all(isinstance(m, str) and m.upper() == "LAZY" for m in t):
                raise ParseError("Unknown PREVIEW modifier")
            continue
        out.append(fetch_att(t))
    return tuple(out)


# -- search keys (RFC 9051 section 6.4.4) --------------------------------


@dataclass(frozen=True, slots=True)
class SearchKey:
    """One search criterion.  ``name`` is the upper-case key; ``value`` its
    argument (str, bytes, int, date, SequenceSet, tuple of sub-keys)."""

    name: str
    value: object = None
    value2: object = None


_NOARG = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
})
_STRING_ARG = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_DATE_ARG = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
_NUM_ARG = frozenset({"LARGER", "SMALLER", "OLDER", "YOUNGER"})


@dataclass(slots=True)
class SearchProgram:
    keys: tuple[SearchKey, ...]
    charset: str | None = None
    returns: tuple[str, ...] | None = None  # ESEARCH RETURN options; None: plain SEARCH
    extra: dict[str, object] = field(default_factory=dict)


def search_program(args: Args, *, esearch_ok: bool = True) -> SearchProgram:
    returns: tuple[str, ...] | None = None
    charset = None
    t = args.peek()
    if esearch_ok and isinstance(t, str) and t.upper() == "RETURN":
        args.next()
        opts = args.list("RETURN options")
        out = []
        for o in opts:
            if not isinstance(o, str) or o.upper() not in ("MIN", "MAX", "ALL", "COUNT", "SAVE"):
                raise ParseError("Unknown RETURN option")
            out.append(o.upper())
        returns = tuple(out) if out else ("ALL",)
    t = args.peek()
    if isinstance(t, str) and t.upper() == "CHARSET":
        args.next()
        cs = args.astring("charset").decode("ascii", "replace").upper()
        if cs not in ("US-ASCII", "UTF-8"):
            # RFC 3501 6.4.4 / RFC 9051 6.4.4: an unknown charset is NO, not BAD
            raise ParseNo("[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
        charset = cs
    keys = []
    while args.more():
        keys.append(search_key(args, 0))
    if not keys:
        raise ParseError("Missing search criteria")
    if count_keys(keys) > limits.MAX_SEARCH_KEYS:
        raise ParseError("Too many search keys")
    return SearchProgram(tuple(keys), charset, returns)


def count_keys(keys: Sequence[SearchKey]) -> int:
    n = 0
    for k in keys:
        n += 1
        for v in (k.value, k.value2):
            if isinstance(v, SearchKey):
                n += count_keys((v,))
            elif isinstance(v, tuple):
                n += count_keys(v)
    return n


def search_key(args: Args, depth: int) -> SearchKey:
    if depth > limits.MAX_NESTING:
        raise ParseError("Search keys nested too deeply")
    t = args.next("search key")
    if isinstance(t, list):
        sub = Args(t)
        keys = []
        while sub.more():
            keys.append(search_key(sub, depth + 1))
        if not keys:
            raise ParseError("Empty search key list")
        return SearchKey("AND", tuple(keys))
    if not isinstance(t, str):
        raise ParseError("Expected search key")
    key = t.upper()
    if key in _NOARG:
        return SearchKey(key)
    if key in _STRING_ARG:
        return SearchKey(key, _text(args.astring(key)))
    if key in _DATE_ARG:
        return SearchKey(key, date(args.next(key)))
    if key in _NUM_ARG:
        return SearchKey(key, number(args.atom(key), key, big=True))
    if key in ("KEYWORD", "UNKEYWORD"):
        return SearchKey(key, canonical_flag(args.atom(key)))
    if key == "HEADER":
        name = _text(args.astring("header name"))
        return SearchKey(key, name, _text(args.astring("header value")))
    if key == "UID":
        return SearchKey(key, sequence_set(args.next("UID set")))
    if key in ("EMAILID", "THREADID"):  # RFC 8474 section 6
        return SearchKey(key, _text(args.astring(key)))
    if key == "NOT":
        return SearchKey(key, search_key(args, depth + 1))
    if key == "OR":
        a = search_key(args, depth + 1)
        b = search_key(args, depth + 1)
        return SearchKey(key, a, b)
    if key == "MODSEQ":
        # RFC 7162 section 3.1.5: MODSEQ [SP entry-name SP entry-type-req]
        # SP mod-sequence-valzer; entry-name is a quoted "/flags/<flag>"
        # (an atom form is accepted too), entry-type-req priv/shared/all.
        nxt = args.next("MODSEQ")
        if isinstance(nxt, bytes) or (isinstance(nxt, str) and nxt.startswith("/")):
            kind = args.atom("MODSEQ entry type").lower()
            if kind not in ("priv", "shared", "all"):
                raise ParseError("Invalid MODSEQ entry type")
            nxt = args.next("MODSEQ")
        if not isinstance(nxt, str):
            raise ParseError("Invalid MODSEQ")
        return SearchKey(key, number(nxt, "mod-sequence", big=True))
    if is_sequence_set(t):
        return SearchKey("SEQ", sequence_set(t))
    raise ParseError(f"Unknown search key {t[:40]}")


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("[BADCHARSET (US-ASCII UTF-8)] Search string is not UTF-8") from None


def search_uses_seqnums(keys: tuple[SearchKey, ...]) -> bool:
    """True if any key refers to message sequence numbers."""
    for k in keys:
        if k.name == "SEQ":
            return True
        for v in (k.value, k.value2):
            if isinstance(v, SearchKey) and search_uses_seqnums((v,)):
                return True
            if isinstance(v, tuple) and search_uses_seqnums(v):
                return True
    return False


# -- SORT (RFC 5256 section 3) ------------------------------------------

SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"})


def sort_criteria(tok: Token) -> tuple[tuple[str, bool], ...]:
    if not isinstance(tok, list) or not tok:
        raise ParseError("Expected sort criteria list")
    out = []
    reverse = False
    for t in tok:
        if not isinstance(t, str):
            raise ParseError("Bad sort key")
        u = t.upper()
        if u == "REVERSE":
            if reverse:
                raise ParseError("REVERSE twice")
            reverse = True
            continue
        if u not in SORT_KEYS:
            raise ParseError(f"Unsupported sort key {t[:40]}")
        out.append((u, reverse))
        reverse = False
    if reverse or not out:
        raise ParseError("Bad sort criteria")
    return tuple(out)
