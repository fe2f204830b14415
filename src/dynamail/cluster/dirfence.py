"""The fence of shared directory documents: only a current Controller writes.

Shared domains, their accounts, cluster-wide defaults, prefs and alerts are
changed only by the Controller (``image.DIRECTORY_OPS``, forwarded there by
every other member).  :class:`MemberWriter` is the
:class:`dynamail.directory.files.Writer` a member installs on its directory:

* a document under the shared base is written with the Controller's epoch,
  and only while this member holds a valid tenure; any other member (or a
  Controller whose tenure lapsed) gets ``Superseded`` before touching it;
* after the write, the epoch is still current only if the tenure has not
  lapsed and no ``epoch-<E+1>`` claim exists on the shared storage — the
  same test the Controller's renewal makes, read after the write reached the
  disk, so a Controller paused anywhere inside the write cannot acknowledge
  it once a successor exists;
* documents outside the shared base (this server's own domains and
  settings) are written unfenced (epoch 0).

The storage argument is in :mod:`dynamail.directory.files`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dynamail.directory.files import Superseded


class MemberWriter:
    def __init__(self, member: Any, shared_base: Path, *more: Path) -> None:
        self.member = member
        self.shared_base = Path(shared_base)
        # the workers of one server also share its Settings/ (the cluster-wide
        # defaults, prefs and alerts are the server's there)
        self.roots = (self.shared_base, *(Path(p) for p in more))

    def _shared(self, path: Path) -> bool:
        return any(path == root or root in path.parents for root in self.roots)

    def epoch(self, path: Path) -> int:
        if not self._shared(path):
            return 0
        tenure = self.member.tenure
        if self.member.controller is None or tenure is None or not tenure.valid(time.monotonic()):
            raise Superseded(f"{path}: shared settings are written by the current controller only")
        return int(tenure.epoch)

    def check(self, path: Path, epoch: int) -> None:
        tenure = self.member.tenure
        if tenure is None or tenure.epoch != epoch or tenure.lapsed(time.monotonic()):
            raise Superseded(f"{path}: controller epoch {epoch} ended during the write")
        election = self.member.election
        if election is not None and election.exists(epoch + 1):
            raise Superseded(f"{path}: controller epoch {epoch + 1} exists")
