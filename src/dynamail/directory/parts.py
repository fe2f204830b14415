"""What the parts (mixins) of :class:`dynamail.directory.Directory` may use
of the directory itself; declared once, for the type checker only."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynamail.accounts import AccountRef
    from dynamail.directory.files import JsonFiles


class DirectoryParts:
    """Base of the :class:`dynamail.directory.Directory` mixins."""

    if TYPE_CHECKING:
        files: JsonFiles
        _lock: threading.RLock
        main_domain: str
        settings_dir: Path
        cluster_dir: Path

        def _domain_dir(self, name: str, shared: bool) -> Path: ...
        def _real_domain(self, canon: str) -> tuple[str, bool] | None: ...
        def _locate_domain(self, name: str) -> tuple[str, bool]: ...
        def _dpath(self, name: str) -> Path: ...
        def _existing(self, ref: AccountRef) -> Path: ...
        def find_account(self, address: str) -> AccountRef | None: ...
        def parse_address(self, address: str) -> tuple[str, str]: ...
        def domain_exists(self, name: str) -> bool: ...
