"""IMAP4rev2/IMAP4rev1 server: a sans-IO core and a thin asyncio adapter."""
