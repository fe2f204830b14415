"""LIST and LSUB rules (RFC 5258 LIST-EXTENDED, RFC 3501 6.3.8/6.3.9,
RFC 5819 LIST-STATUS): the pure entry builder and transcripts."""

from __future__ import annotations

from tests.imap.conftest import Harness

from dynamail.imap.listing import Pattern, list_entries, lsub_entries
from dynamail.storage.api import MailboxListing


def _box(name: str, subscribed: bool = False, children: bool = False, special: str | None = None) -> MailboxListing:
    return MailboxListing(name, special, subscribed, children)


# Fruit and Fruit/Apple exist; Fruit/Banana only subscribed; Tofu does not
# exist but Tofu/Extra-firm does (subscribed); Gone is subscribed only.
LISTINGS = [
    _box("INBOX", True),
    _box("Fruit", False, True),
    _box("Fruit/Apple", True),
    _box("Tofu/Extra-firm", True),
    _box("Sent", True, special="\\Sent"),
]
SUBS = ["INBOX", "Fruit/Apple", "Fruit/Banana", "Tofu/Extra-firm", "Sent", "Gone"]


def _lines(entries: list) -> list[str]:  # type: ignore[type-arg]
    out = []
    for e in entries:
        line = f"({' '.join(e.attrs)}) {e.name}"
        if e.childinfo:
            line += ' ("CHILDINFO" ("SUBSCRIBED"))'
        out.append(line)
    return out


def test_subscribed_selection_returns_nonexistent_names() -> None:
    """RFC 5258 3.1 and 3.4: (SUBSCRIBED) returns every subscribed name; one
    that is no mailbox is \\NonExistent."""
    got = _lines(list_entries(LISTINGS, SUBS, [Pattern("*")], frozenset({"SUBSCRIBED"}), frozenset({"CHILDREN"})))
    assert got == [
        "(\\HasNoChildren \\Subscribed) INBOX",
        "(\\HasNoChildren \\Subscribed) Fruit/Apple",
        "(\\NonExistent \\Subscribed) Fruit/Banana",
        "(\\NonExistent \\Subscribed) Gone",
        "(\\HasNoChildren \\Sent \\Subscribed) Sent",
        "(\\HasNoChildren \\Subscribed) Tofu/Extra-firm",
    ]
    # without RETURN (CHILDREN) an extended LIST leaves the child attributes out
    got = _lines(list_entries(LISTINGS, SUBS, [Pattern("Fruit/*")], frozenset({"SUBSCRIBED"})))
    assert got == ["(\\Subscribed) Fruit/Apple", "(\\NonExistent \\Subscribed) Fruit/Banana"]


def test_recursivematch_reports_subscribed_children_with_childinfo() -> None:
    """RFC 5258 3.5: with RECURSIVEMATCH a name matched by % that has a
    subscribed descendant % does not reach is returned with CHILDINFO, whether
    it is a mailbox (Fruit), only a parent of one (Tofu) or subscribed."""
    got = _lines(list_entries(LISTINGS, SUBS, [Pattern("%")], frozenset({"SUBSCRIBED", "RECURSIVEMATCH"})))
    assert got == [
        "(\\Subscribed) INBOX",
        '() Fruit ("CHILDINFO" ("SUBSCRIBED"))',
        "(\\NonExistent \\Subscribed) Gone",
        "(\\Sent \\Subscribed) Sent",
        '(\\NonExistent) Tofu ("CHILDINFO" ("SUBSCRIBED"))',
    ]
    # without RECURSIVEMATCH, % through subscribed children finds nothing more
    got = _lines(list_entries(LISTINGS, SUBS, [Pattern("%")], frozenset({"SUBSCRIBED"})))
    assert got == ["(\\Subscribed) INBOX", "(\\NonExistent \\Subscribed) Gone", "(\\Sent \\Subscribed) Sent"]
    # with *, the descendants are returned themselves: no CHILDINFO
    got = list_entries(LISTINGS, SUBS, [Pattern("*")], frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}))
    assert not any(e.childinfo for e in got)


def test_plain_list_and_return_subscribed() -> None:
    got = _lines(list_entries(LISTINGS, SUBS, [Pattern("%")], returns=frozenset({"SUBSCRIBED", "CHILDREN"})))
    assert got == [
        "(\\HasNoChildren \\Subscribed) INBOX",
        "(\\HasChildren) Fruit",
        "(\\HasNoChildren \\Sent \\Subscribed) Sent",
        "(\\NonExistent \\HasChildren) Tofu",
    ]
    # the RFC 3501 form: \Noselect for a name that is only a parent, children always
    got = _lines(list_entries(LISTINGS, SUBS, [Pattern("%")]))
    assert got == ["(\\HasNoChildren) INBOX", "(\\HasChildren) Fruit", "(\\HasNoChildren \\Sent) Sent",
                   "(\\Noselect \\HasChildren) Tofu"]
    got = _lines(list_entries(LISTINGS, SUBS, [Pattern("*")], frozenset({"SPECIAL-USE"})))
    assert got == ["(\\Sent) Sent"]


def test_lsub_percent_stops_at_noselect_parents() -> None:
    """RFC 3501 6.3.9: LSUB with % returns an unsubscribed parent of a
    subscribed name as \\Noselect."""
    got = _lines(lsub_entries(LISTINGS, SUBS, Pattern("%")))
    assert got == ["() INBOX", "(\\Noselect) Fruit", "() Gone", "() Sent", "(\\Noselect) Tofu"]
    got = _lines(lsub_entries(LISTINGS, SUBS, Pattern("Fruit/*")))
    assert got == ["() Fruit/Apple", "() Fruit/Banana"]


def test_list_extended_transcript(imap) -> None:
    async def go(h: Harness) -> None:
        c = await h.login()
        await c.ok("CREATE a/b")
        await c.ok("SUBSCRIBE a/b")
        await c.ok("DELETE a")  # a keeps existing as a parent name only
        await c.ok("CREATE gone")
        await c.ok("SUBSCRIBE gone")
        await c.ok("DELETE gone")
        lines = await c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)')
        assert lines[:-1] == [
            '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
            '* LIST (\\NonExistent \\HasChildren) "/" a ("CHILDINFO" ("SUBSCRIBED"))',
            '* LIST (\\NonExistent \\Subscribed) "/" gone',
        ]
        lines = await c.ok('LIST (SUBSCRIBED) "" "*" RETURN (STATUS (MESSAGES))')
        assert lines[:-1] == [
            '* LIST (\\Subscribed) "/" INBOX',
            "* STATUS INBOX (MESSAGES 0)",
            '* LIST (\\Subscribed) "/" a/b',
            '* STATUS a/b (MESSAGES 0)',
            '* LIST (\\NonExistent \\Subscribed) "/" gone',  # RFC 5819 2: no STATUS for it
        ]
        assert (await c.ok('LSUB "" "%"'))[:-1] == [
            '* LSUB () "/" INBOX', '* LSUB (\\Noselect) "/" a', '* LSUB () "/" gone',
        ]
    imap(go)
