"""The Sieve lexer and parser (RFC 5228 section 8): text in, syntax tree out.

The parser knows only the grammar: commands, tests, arguments, blocks.  It
does not know which commands exist; :mod:`dynamail.sieve.checker` validates
the tree against the command registry.  Every limit of
:mod:`dynamail.sieve.limits` is enforced while reading, so hostile input is
refused with a :class:`SieveSyntaxError` (carrying the line number) after a
bounded amount of work and memory.

Scripts are UTF-8 (RFC 5228 2.1); a script that is not valid UTF-8 is
refused.  Line ends may be CRLF or bare LF.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamail.sieve import limits


class SieveError(Exception):
    """Base class of Sieve errors; ``line`` is the script line (1-based) or 0."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class SieveSyntaxError(SieveError):
    """The script does not follow the grammar, or crosses a limit."""


@dataclass(frozen=True, slots=True)
class Tag:
    name: str  # lower case, without the colon
    line: int = 0


@dataclass(frozen=True, slots=True)
class Number:
    value: int
    line: int = 0


@dataclass(frozen=True, slots=True)
class StringList:
    values: tuple[str, ...]
    bracketed: bool  # written as [ ... ] (a one-element list may be either)
    line: int = 0


Argument = Tag | Number | StringList


@dataclass(frozen=True, slots=True)
class Test:
    name: str  # lower case
    args: tuple[Argument, ...]
    tests: tuple[Test, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # lower case
    args: tuple[Argument, ...]
    tests: tuple[Test, ...]
    block: tuple[Command, ...] | None
    line: int = 0


# token kinds
IDENT, TAG, NUMBER, STRING, MULTILINE, PUNCT, END = range(7)

_QUANT = {"K": 1024, "M": 1024**2, "G": 1024**3}
_PUNCT = frozenset("[](){},;")
_IDSTART = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDCHAR = _IDSTART | frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Token:
    kind: int
    value: str | int
    line: int


class Lexer:
    """Turns script text into tokens (RFC 5228 8.1)."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1

    def _err(self, msg: str) -> SieveSyntaxError:
        return SieveSyntaxError(msg, self.line)

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        budget = limits.MAX_SCRIPT_SIZE  # at most one token per octet
        while True:
            tok = self.next()
            out.append(tok)
            if tok.kind == END:
                return out
            budget -= 1
            if budget < 0:
                raise self._err("too many tokens")

    def _skip_space(self) -> None:
        s, n = self.s, len(self.s)
        while self.i < n:
            c = s[self.i]
            if c == "\n":
                self.line += 1
                self.i += 1
            elif c in " \t\r":
                self.i += 1
            elif c == "#":
                end = s.find("\n", self.i)
                self.i = n if end < 0 else end
            elif s.startswith("/*", self.i):
                end = s.find("*/", self.i + 2)
                if end < 0:
                    raise self._err("unterminated comment")
                self.line += s.count("\n", self.i, end)
                self.i = end + 2
            else:
                return

    def next(self) -> Token:
        self._skip_space()
        s, n, line = self.s, len(self.s), self.line
        if self.i >= n:
            return Token(END, "", line)
        c = s[self.i]
        if c in _PUNCT:
            self.i += 1
            return Token(PUNCT, c, line)
        if c == '"':
            return Token(STRING, self._quoted(), line)
        if c == ":":
            j = self.i + 1
            if j >= n or s[j] not in _IDSTART:
                raise self._err("':' must begin a tag")
            k = j
            while k < n and s[k] in _IDCHAR:
                k += 1
            self.i = k
            return Token(TAG, s[j:k].lower(), line)
        if c.isascii() and c.isdigit():
            k = self.i
            while k < n and s[k].isascii() and s[k].isdigit():
                k += 1
            digits = s[self.i:k]
            if len(digits) > 19:
                raise self._err("number too large")
            value = int(digits)
            if k < n and s[k].upper() in _QUANT:
                value *= _QUANT[s[k].upper()]
                k += 1
            if value > limits.MAX_NUMBER:
                raise self._err("number too large")
            if k < n and s[k] in _IDCHAR:
                raise self._err("bad number")
            self.i = k
            return Token(NUMBER, value, line)
        if c in _IDSTART:
            k = self.i
            while k < n and s[k] in _IDCHAR:
                k += 1
            word = s[self.i:k]
            if word.lower() == "text" and k < n and s[k] == ":":
                self.i = k + 1
                return Token(MULTILINE, self._multiline(), line)
            self.i = k
            return Token(IDENT, word.lower(), line)
        raise self._err(f"unexpected character {c!r}")

    def _quoted(self) -> str:
        s, n = self.s, len(self.s)
        i = self.i + 1
        parts: list[str] = []
        size = 0
        while True:
            j = i
            while j < n and s[j] not in '"\\':
                j += 1
            if j >= n:
                raise self._err("unterminated string")
            parts.append(s[i:j])
            size += j - i
            self.line += s.count("\n", i, j)
            if s[j] == '"':
                self.i = j + 1
                break
            if j + 1 >= n:
                raise self._err("unterminated string")
            esc = s[j + 1]  # RFC 5228 2.4.2: "\" followed by any character is that character
            if esc == "\n":
                self.line += 1
            parts.append(esc)
            size += 1
            i = j + 2
            if size > limits.MAX_STRING:
                raise self._err("string too long")
        if size > limits.MAX_STRING:
            raise self._err("string too long")
        return "".join(parts)

    def _multiline(self) -> str:
        """``text:`` up to a line holding only ``.`` (dot-stuffed, RFC 5228 2.4.2)."""
        s, n = self.s, len(self.s)
        i = self.i
        while i < n and s[i] in " \t":
            i += 1
        if s.startswith("#", i):
            end = s.find("\n", i)
            i = n if end < 0 else end
        elif s.startswith("\r\n", i):
            i += 1
        if i >= n or s[i] != "\n":
            raise self._err("text: must be followed by a line end")
        i += 1
        self.line += 1
        lines: list[str] = []
        size = 0
        while True:
            end = s.find("\n", i)
            if end < 0:
                raise self._err("unterminated text: block")
            raw = s[i:end]
            if raw.endswith("\r"):
                raw = raw[:-1]
            i = end + 1
            self.line += 1
            if raw == ".":
                break
            if raw.startswith("."):
                raw = raw[1:]
            lines.append(raw + "\r\n")
            size += len(raw) + 2
            if size > limits.MAX_STRING:
                raise self._err("string too long")
        self.i = i
        return "".join(lines)


class Parser:
    """Recursive descent over the tokens (RFC 5228 8.2), nesting bounded."""

    def __init__(self, tokens: list[Token]) -> None:
        self.toks = tokens
        self.i = 0
        self.commands = 0

    def _peek(self) -> Token:
        return self.toks[self.i]

    def _take(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != END:
            self.i += 1
        return tok

    def _is(self, punct: str) -> bool:
        tok = self._peek()
        return tok.kind == PUNCT and tok.value == punct

    def _expect(self, punct: str) -> None:
        tok = self._take()
        if tok.kind != PUNCT or tok.value != punct:
            raise SieveSyntaxError(f"expected {punct!r}", tok.line)

    def script(self) -> tuple[Command, ...]:
        cmds = self._commands(0)
        tok = self._peek()
        if tok.kind != END:
            raise SieveSyntaxError("unexpected '}'" if tok.value == "}" else "expected a command", tok.line)
        return cmds

    def _commands(self, depth: int) -> tuple[Command, ...]:
        out: list[Command] = []
        while self._peek().kind == IDENT:
            out.append(self._command(depth))
        return tuple(out)

    def _command(self, depth: int) -> Command:
        tok = self._take()
        self.commands += 1
        if self.commands > limits.MAX_COMMANDS:
            raise SieveSyntaxError("too many commands", tok.line)
        args, tests = self._arguments(0)
        block: tuple[Command, ...] | None = None
        if self._is("{"):
            if depth + 1 > limits.MAX_BLOCK_NESTING:
                raise SieveSyntaxError("blocks nested too deeply", tok.line)
            self._take()
            block = self._commands(depth + 1)
            self._expect("}")
        else:
            end = self._take()
            if end.kind != PUNCT or end.value != ";":
                raise SieveSyntaxError(f"expected ';' after {tok.value}", end.line)
        return Command(str(tok.value), args, tests, block, tok.line)

    def _arguments(self, depth: int) -> tuple[tuple[Argument, ...], tuple[Test, ...]]:
        args: list[Argument] = []
        while True:
            tok = self._peek()
            if tok.kind == TAG:
                self._take()
                args.append(Tag(str(tok.value), tok.line))
            elif tok.kind == NUMBER:
                self._take()
                args.append(Number(int(tok.value), tok.line))
            elif tok.kind in (STRING, MULTILINE):
                self._take()
                args.append(StringList((str(tok.value),), False, tok.line))
            elif self._is("["):
                args.append(self._string_list())
            else:
                break
        tests: tuple[Test, ...] = ()
        if self._peek().kind == IDENT:
            tests = (self._test(depth + 1),)
        elif self._is("("):
            tests = self._test_list(depth + 1)
        return tuple(args), tests

    def _string_list(self) -> StringList:
        line = self._take().line
        values: list[str] = []
        while True:
            tok = self._take()
            if tok.kind not in (STRING, MULTILINE):
                raise SieveSyntaxError("expected a string in the list", tok.line)
            values.append(str(tok.value))
            if len(values) > limits.MAX_STRING_LIST:
                raise SieveSyntaxError("string list too long", tok.line)
            if self._is(","):
                self._take()
                continue
            self._expect("]")
            return StringList(tuple(values), True, line)

    def _test(self, depth: int) -> Test:
        tok = self._take()
        if tok.kind != IDENT:
            raise SieveSyntaxError("expected a test", tok.line)
        if depth > limits.MAX_TEST_NESTING:
            raise SieveSyntaxError("tests nested too deeply", tok.line)
        args, tests = self._arguments(depth)
        return Test(str(tok.value), args, tests, tok.line)

    def _test_list(self, depth: int) -> tuple[Test, ...]:
        self._take()
        tests = [self._test(depth)]
        while self._is(","):
            self._take()
            tests.append(self._test(depth))
            if len(tests) > limits.MAX_STRING_LIST:
                raise SieveSyntaxError("test list too long", self._peek().line)
        self._expect(")")
        return tuple(tests)


def parse(script: str | bytes) -> tuple[Command, ...]:
    """The syntax tree of a script; :class:`SieveSyntaxError` if it is not one."""
    if isinstance(script, bytes):
        if len(script) > limits.MAX_SCRIPT_SIZE:
            raise SieveSyntaxError("script too large")
        try:
            script = script.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SieveSyntaxError("script is not UTF-8") from exc
    if len(script.encode("utf-8")) > limits.MAX_SCRIPT_SIZE:
        raise SieveSyntaxError("script too large")
    return Parser(Lexer(script).tokens()).script()
