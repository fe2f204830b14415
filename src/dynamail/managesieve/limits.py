"""Every ManageSieve size and count limit, with the RFC section that motivates it."""

from __future__ import annotations

from dynamail.sieve import limits as sieve_limits

#: RFC 5804 4: a command line (without its literals) is bounded by the server.
MAX_COMMAND_LINE = 8192

#: RFC 5804 2.6 / 4: literals carry scripts; one a little larger than the
#: largest script is still read (and refused with QUOTA/MAXSIZE); a larger
#: one is skipped without being stored.
MAX_LITERAL = sieve_limits.MAX_SCRIPT_SIZE + 1024

#: Arguments of one command (PUTSCRIPT has two; HAVESPACE two).
MAX_ARGUMENTS = 4

#: RFC 5804 2.1: failed authentications before the server says BYE.
MAX_AUTH_FAILURES = 3
AUTH_FAILURE_DELAY = 1.0

#: Commands allowed before a successful AUTHENTICATE.
MAX_UNAUTHENTICATED_COMMANDS = 50

#: RFC 5804 leaves the idle timeout to the server; 30 minutes like IMAP.
IDLE_TIMEOUT = 1800.0

#: Concurrent connections from one client address.
MAX_CONNECTIONS_PER_ADDRESS = 20
