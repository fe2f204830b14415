"""Every Sieve and ManageSieve size and count limit, with the RFC section
that motivates it.

RFC 5228 section 2.11 lets an implementation bound script size, nesting,
string length, list length and the number of actions, provided a script that
crosses a limit is refused (at upload, ManageSieve ``PUTSCRIPT`` answers
``NO (QUOTA/MAXSIZE)``) or, at delivery, fails and the message is kept
(RFC 5228 2.10.6: the implicit keep).  Crossing any of these raises a typed
error; nothing here allocates more than these bounds.
"""

from __future__ import annotations

#: RFC 5804 1.8 / 2.6 (PUTSCRIPT ... QUOTA/MAXSIZE): the largest script we store.
MAX_SCRIPT_SIZE = 64 * 1024

#: RFC 5804 2.6 (QUOTA/MAXSCRIPTS): scripts per account.
MAX_SCRIPTS = 32

#: RFC 5804 1.6: script names are 1..MAX UTF-8 characters, no controls.
MAX_SCRIPT_NAME = 128

#: RFC 5228 2.11: block nesting (if / elsif / else inside each other) and
#: test nesting (allof / anyof / not inside each other).
MAX_BLOCK_NESTING = 32
MAX_TEST_NESTING = 32

#: RFC 5228 2.11: the length of one string (quoted or ``text:``), in octets.
MAX_STRING = 16 * 1024

#: RFC 5228 2.11: entries in one string list, and commands in one script.
MAX_STRING_LIST = 256
MAX_COMMANDS = 4096

#: RFC 5228 2.4.1: numbers are unsigned; we bound them to 2**63 - 1 after the
#: K/M/G quantifier is applied.
MAX_NUMBER = 2**63 - 1

#: RFC 5228 2.11 / 2.10.6: actions one run may collect.
MAX_ACTIONS = 64

#: RFC 5228 4.2: redirects one run may perform (loop and abuse control).
MAX_REDIRECTS = 4

#: Received header fields a message may carry and still be redirected (a
#: forwarding loop shows itself by many hops; RFC 5321 6.3).
MAX_RECEIVED_FOR_REDIRECT = 30

#: RFC 5229 (variables) section 6: limits on number and size of variables.
MAX_VARIABLES = 128
MAX_VARIABLE_SIZE = 4096
MAX_VARIABLE_NAME = 64

#: Wildcards (``*`` and ``?``) in one ``:matches`` key: bounds the matcher's work.
MAX_WILDCARDS = 64

#: CPU budget of one run: abstract steps (each comparison character, each
#: command) and the CPU time of the running thread.
MAX_STEPS = 2_000_000
MAX_CPU_SECONDS = 2.0

#: The body test (RFC 5173) and header decoding read at most this much of a message.
MAX_MESSAGE_SCAN = 4 * 1024 * 1024

#: RFC 5230 4.1: ``:days`` range; the default of 7 days, at least 1 day.
VACATION_DEFAULT_DAYS = 7
VACATION_MIN_DAYS = 1
VACATION_MAX_DAYS = 90
#: RFC 6131: ``:seconds``; we never answer more often than once an hour.
VACATION_MIN_SECONDS = 3600
#: Response records kept per account (RFC 5230 4.2): the oldest expire first.
VACATION_MAX_RECORDS = 4096
#: RFC 5230 4.4 / 5.5: bounds of the reply's subject and body.
VACATION_MAX_SUBJECT = 998
VACATION_MAX_REASON = 32 * 1024

#: RFC 5293 (editheader) section 4: a header field we add is at most this long.
MAX_ADDED_HEADER = 998

#: RFC 7352 3.3: how long a message id is remembered by ``duplicate`` without
#: ``:seconds``, and the longest ``:seconds`` honoured; records kept per account.
DUPLICATE_DEFAULT_SECONDS = 12 * 3600
DUPLICATE_MAX_SECONDS = 7 * 86400
DUPLICATE_MAX_RECORDS = 8192

#: RFC 6609 (include): nesting of included scripts and scripts included per run.
MAX_INCLUDE_DEPTH = 10
MAX_INCLUDES = 32
