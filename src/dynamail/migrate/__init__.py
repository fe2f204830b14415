"""Migration in: import existing Maildir and mbox mail into an account.

``source`` reads the mail (streaming, bounded memory, never following a
symbolic link, tolerant of broken input); ``importer`` appends it to an
account store in batches and keeps a ledger so a re-run does not duplicate.
``dynamail.admin.Admin.import_mail`` is the administrative operation (JSON
API ``POST …/accounts/{account}/import``, ``dynamail admin account import``).
"""

from dynamail.migrate.importer import FORMATS, ImportFailed, ImportReport, import_into

__all__ = ["FORMATS", "ImportFailed", "ImportReport", "import_into"]
