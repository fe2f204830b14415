"""Named limits of the HTTP admin port.

Every request body, header and list the admin port accepts has a bound here,
so a hostile or careless client costs a bounded amount of memory.
"""

from __future__ import annotations

MAX_BODY = 256 * 1024  # bytes in one request body (JSON or form); larger → 413
MAX_JSON_DEPTH = 8  # nesting of JSON values inside a settings dictionary
MAX_SETTINGS_KEYS = 500  # keys in one settings dictionary
MAX_SETTING_KEY = 128  # characters in one setting name
MAX_STRING = 64 * 1024  # characters in one string value
MAX_PASSWORD = 1024  # characters in a password
MAX_ALERT = 8 * 1024  # characters in an alert's text
MAX_PAGE = 1000  # accounts in one page of a listing
DEFAULT_PAGE = 100  # accounts in a page when the client does not say
WEB_PAGE = 50  # accounts shown on one WebAdmin page
MAX_OFFSET = 100_000_000  # largest paging offset accepted
MAX_ARCHIVE = 64 * 1024**3  # bytes of an uploaded account archive (restore); larger → 413
ARCHIVE_CHUNK = 256 * 1024  # bytes read or written at a time while an archive streams
MAX_COUNTED_DOMAINS = 500  # domain listings with more domains leave account counts out

SESSION_TTL = 8 * 3600.0  # seconds a session token stays valid without use
MAX_SESSIONS = 10_000  # session tokens kept per server; the oldest go first
TOKEN_BYTES = 32  # random bytes in a session or CSRF token
