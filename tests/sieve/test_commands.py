"""The checker: commands, tags, extensions and argument shapes against the registry."""

from __future__ import annotations

import pytest

from dynamail.sieve.commands import SieveCheckError, compile_script


def test_checked_calls_sort_tags_and_arguments() -> None:
    script = compile_script('require ["fileinto", "copy", "imap4flags"];\n'
                            'fileinto :copy :flags ["\\\\Seen"] "Archive";')
    call = script.commands[0]
    assert call.name == "fileinto" and call.args == ("Archive",)
    assert call.tags == {"copy": True, "flags": ("\\Seen",)}
    assert script.requires == {"fileinto", "copy", "imap4flags"}


def test_optional_leading_argument() -> None:
    s = compile_script('require ["imap4flags"]; setflag "v" "a"; setflag "b";')
    assert [c.args for c in s.commands] == [("v", ("a",)), (None, ("b",))]


@pytest.mark.parametrize("bad, why", [
    ('fileinto "x";', "requires the 'fileinto'"),
    ('require "nosuch";', "unsupported extension"),
    ('keep; require "fileinto";', "require must come before"),
    ("frobnicate;", "unknown command"),
    ("if frob { }", "unknown test"),
    ("if true keep;", "unknown test"),
    ("else { }", "without a preceding if"),
    ("keep :copy;", "has no tag"),
    ('require "fileinto"; fileinto :copy "x";', "requires the 'copy'"),
    ('if header :is :contains "a" "b" { }', "conflicts"),
    ('if header :comparator "i;frob" "a" "b" {}', "unknown comparator"),
    ('if header :comparator "i;ascii-numeric" "a" "b" {}', "comparator extension"),
    ('require ["relational"]; if header :value "xx" "a" "b" {}', "bad relational"),
    ('if size 10 { }', "needs one of"),
    ('if size :over "10" { }', "expected a number"),
    ('redirect ["a@b", "c@d"];', "single string"),
    ("if true;", "needs a block"),
    ("keep { }", "takes no block"),
    ('require "variables"; set "1x" "y";', "bad variable name"),
    ('require "date"; if currentdate "era" "x" {}', "unknown date part"),
    ("if not (true, false) {}", "exactly one test"),
    ('require "vacation"; vacation :days 1 :seconds 2 "x";', "requires the 'vacation-seconds'"),
    ('require "include"; global "x";', "global requires the 'variables' extension"),
    ('redirect;', "wrong number of arguments"),
    ('if address :detail "to" "x" {}', "requires the 'subaddress'"),
])
def test_refused(bad: str, why: str) -> None:
    with pytest.raises(SieveCheckError, match=why):
        compile_script(bad)


def test_encoded_character() -> None:
    s = compile_script('require ["encoded-character", "fileinto"];\n'
                       'fileinto "${hex:48 65 6C 6C 6F}-${UNICODE:263a 20}${hex:zz}${unicode: }";')
    assert s.commands[0].args == ("Hello-\u263a ${hex:zz}",)
    plain = compile_script('require "fileinto"; fileinto "${hex:41}";')
    assert plain.commands[0].args == ("${hex:41}",)  # without the extension: literal
    with pytest.raises(SieveCheckError, match="not UTF-8"):
        compile_script('require "encoded-character"; keep :flags "${hex:ff}";'.replace("keep :flags", "redirect"))
    with pytest.raises(SieveCheckError, match="not a character"):
        compile_script('require "encoded-character"; redirect "${unicode:D800}";')
