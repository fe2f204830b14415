"""Argument grammar of admin CLI commands.

A command's arguments are described as a tuple of :class:`Arg` items, read
left to right from the rest of the command line with the data-format reader:

* ``STRING`` – an atom or a quoted string (names, passwords, texts);
* ``DICT`` / ``ARRAY`` – a ``{...}`` dictionary / ``(...)`` array;
* ``KEYWORD`` – a fixed word (``SHARED``, ``FORCE``); its value is ``True``
  when present;
* an ``Arg`` with ``after`` – a fixed word followed by a string
  (``INTO new``, ``PASSWORD p``); ``after`` may list alternative words.

An optional argument is taken only when the next token fits it (a ``{`` for
a dictionary, the right word for a keyword, anything but ``{``/``(`` for a
string), so ``GETACCOUNTDEFAULTS`` and ``GETACCOUNTDEFAULTS example.com``
both parse.  Whatever is left over is a syntax error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from dynamail.cliproto.datafmt import DataFormatError, Reader, Value


class Kind(enum.Enum):
    STRING = "string"
    DICT = "dictionary"
    ARRAY = "array"
    KEYWORD = "keyword"


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    kind: Kind = Kind.STRING
    optional: bool = False
    after: tuple[str, ...] = ()  # keyword(s) introducing the value (STRING only)
    word: str = ""  # the keyword itself (KEYWORD only)

    def describe(self) -> str:
        if self.kind is Kind.KEYWORD:
            text = self.word
        elif self.after:
            text = f"{'|'.join(self.after)} {self.name}"
        else:
            text = self.name
        return f"[{text}]" if self.optional else text


class SyntaxProblem(Exception):
    """The arguments do not fit the command's grammar; the message says how."""


def usage(verb: str, args: tuple[Arg, ...]) -> str:
    return " ".join([verb, *(a.describe() for a in args)])


def parse_args(text: str, args: tuple[Arg, ...]) -> dict[str, Any]:
    """Read ``text`` (the command line after the verb) by ``args``."""
    reader = Reader(text)
    out: dict[str, Any] = {}
    try:
        for arg in args:
            nxt = reader.peek()
            if arg.kind is Kind.KEYWORD:
                present = _next_word_is(reader, (arg.word,))
                if present:
                    reader.read_atom()
                elif not arg.optional:
                    raise SyntaxProblem(f"{arg.word} expected")
                out[arg.name] = present
                continue
            if arg.after:
                if _next_word_is(reader, arg.after):
                    reader.read_atom()
                elif arg.optional:
                    continue
                else:
                    raise SyntaxProblem(f"{' or '.join(arg.after)} expected")
                out[arg.name] = reader.read_string()
                continue
            if arg.kind is Kind.DICT:
                if nxt == "{":
                    value: Value = reader.read_value()
                    out[arg.name] = value
                elif not arg.optional:
                    raise SyntaxProblem(f"{arg.name}: a dictionary {{...}} expected")
                continue
            if arg.kind is Kind.ARRAY:
                if nxt == "(":
                    out[arg.name] = reader.read_value()
                elif not arg.optional:
                    raise SyntaxProblem(f"{arg.name}: an array (...) expected")
                continue
            # STRING
            if nxt in ("", "{", "(", "[", "#"):
                if nxt == "[" or nxt == "#":
                    raise SyntaxProblem(f"{arg.name}: a name or quoted string expected")
                if arg.optional:
                    continue
                raise SyntaxProblem(f"{arg.name} expected")
            if arg.optional and _next_word_is(reader, _reserved_after(args, arg)):
                continue
            out[arg.name] = reader.read_string()
        if not reader.at_end():
            raise SyntaxProblem(f"unexpected text: {reader.rest().strip()[:40]!r}")
    except DataFormatError as exc:
        raise SyntaxProblem(str(exc)) from None
    return out


def _reserved_after(args: tuple[Arg, ...], current: Arg) -> tuple[str, ...]:
    """Keywords of the arguments after ``current`` (an optional string must
    not swallow them)."""
    idx = args.index(current)
    words: list[str] = []
    for a in args[idx + 1 :]:
        if a.kind is Kind.KEYWORD:
            words.append(a.word)
        words.extend(a.after)
    return tuple(words)


def _next_word_is(reader: Reader, words: tuple[str, ...]) -> bool:
    if not words:
        return False
    reader.skip_spaces()
    save = reader.pos
    if reader.peek() in ("", '"', "{", "(", "[", "#"):
        return False
    try:
        word = reader.read_atom()
    except DataFormatError:
        return False
    finally:
        reader.pos = save
    return word.upper() in (w.upper() for w in words)
