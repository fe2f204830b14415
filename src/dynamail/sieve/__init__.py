"""Sieve mail filtering (RFC 5228 and extensions) and ManageSieve (RFC 5804)."""
