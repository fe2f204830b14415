"""Every size and count the IMAP server bounds, with the reason for its value.

Crossing a limit raises :class:`LimitExceeded`, which carries the reply the
client gets.  The numbers follow what real clients need and what the RFCs
recommend; see each comment.
"""

from __future__ import annotations

# RFC 9051 section 4 leaves line length open; RFC 7162 section 4 asks servers
# to accept command lines of at least 8192 octets.  We allow 64 KiB (as
# Dovecot does) so that long UID sets from QRESYNC-aware clients fit.
MAX_LINE = 64 * 1024

# Literal octets accepted in commands other than APPEND (mailbox names,
# search strings, SASL responses).  RFC 9051 section 4.3 allows any size; a
# mailbox name is at most dynamail.names.MAX_MAILBOX_NAME, so 64 KiB is ample.
MAX_COMMAND_LITERAL = 64 * 1024

# APPEND message size (RFC 7889 APPENDLIMIT).  Larger APPENDs get
# NO [TOOBIG] (RFC 4469 section 4, RFC 9051 section 7.1).
APPEND_LIMIT = 64 * 1024 * 1024

# Total literal octets in one MULTIAPPEND command (RFC 3502 section 6.3.11).
MAX_APPEND_TOTAL = 128 * 1024 * 1024

# Messages in one MULTIAPPEND.
MAX_APPEND_MESSAGES = 10000

# RFC 7888 section 4: with LITERAL- a non-synchronising literal may carry at
# most 4096 octets.
LITERAL_MINUS_MAX = 4096

# Parenthesised list nesting (search keys, BODYSTRUCTURE-style arguments).
# RFC 9051 sets no bound; 32 levels is far beyond any real client.
MAX_NESTING = 32

# Tokens in one command (after literals are joined).
MAX_TOKENS = 100000

# RFC 9051 section 5.4: the autologout timer for non-IDLE sessions is at
# least 30 minutes; section 6.3.13 (IDLE) lets a server drop an IDLE client
# after at least 29 minutes as well.
IDLE_TIMEOUT = 30 * 60.0
NOT_AUTHENTICATED_TIMEOUT = 60.0  # before login: RFC 9051 5.4 allows less

# Bad commands (BAD replies) in a row tolerated before "* BYE" and
# disconnect; a command answered OK or NO starts the count again (as Dovecot
# does), so a long session that now and then tries something we do not
# know is not cut.
MAX_BAD_COMMANDS = 20

# Failed LOGIN/AUTHENTICATE attempts per connection before "* BYE"; the
# authenticator adds its own per-address throttling.
MAX_AUTH_FAILURES = 3

# How long IDLE waits on the storage change feed before re-arming (the feed
# wakes us on every change; a long period keeps 50,000 idle sessions from
# costing timer wake-ups, SPEC section 3).
IDLE_POLL = 300.0

# Tagged-response buffer: the writer flushes to the connection when this
# many octets are pending.
OUTPUT_FLUSH = 64 * 1024

# Literal data at least this large goes out by sendfile rather than copying.
SENDFILE_MIN = 64 * 1024

# Chunk size for reading APPEND literals off the connection.
APPEND_CHUNK = 256 * 1024

# SEARCH/SORT results and FETCH ranges are bounded by the mailbox size;
# this bounds sequence-set parsing (ranges, not numbers).
MAX_SEQUENCE_RANGES = 100000

# Search keys in one SEARCH/SORT (each is evaluated over the mailbox).
MAX_SEARCH_KEYS = 1000

# Length of the tag (RFC 9051 section 9 "tag"); longer tags are refused.
MAX_TAG = 128


# COMPRESS=DEFLATE (RFC 4978): our output stream uses a 4 KiB window and a
# small hash table (about 32 KiB of zlib state per session instead of the
# default 256 KiB); level 6 is zlib's default speed/ratio balance.  The
# inflater needs the full 32 KiB window (the client chooses its own), and
# inflates at most INFLATE_CHUNK octets per step.
DEFLATE_WBITS = 12
DEFLATE_MEMLEVEL = 5
DEFLATE_LEVEL = 6
INFLATE_CHUNK = 64 * 1024


# METADATA (RFC 5464): octets per value, entries per mailbox (or server),
# octets of all entries of an account, octets of an entry name.  Clients
# keep short annotations (colours, comments, identities); these leave room.
METADATA_MAXSIZE = 16 * 1024  # below MAX_COMMAND_LITERAL, so the client gets MAXSIZE
METADATA_MAX_ENTRIES = 100
METADATA_TOTAL = 1024 * 1024
METADATA_NAME = 255


class LimitExceeded(Exception):
    """A limit was crossed; ``reply`` is what the client gets (without tag)."""

    def __init__(self, reply: str, *, fatal: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.fatal = fatal
