"""The identity of an account, shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class AccountRef:
    """An account: canonical (lower-case, validated) domain and name.

    ``shared`` says whether its domain is a shared (cluster) domain, whose
    data lives under ``SharedDomains/`` and whose ownership the cluster
    Controller arbitrates.
    """

    domain: str
    name: str
    shared: bool = False

    @property
    def address(self) -> str:
        return f"{self.name}@{self.domain}"

    def __str__(self) -> str:
        return self.address
