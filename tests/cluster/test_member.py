from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dynamail.cluster.member import ClusterConfigError, ClusterSettings, load_secret


def test_secret_created_private_and_refused_when_readable(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "cluster.secret"
    with pytest.raises(ClusterConfigError):
        load_secret(path, create=False)
    secret = load_secret(path, create=True)
    assert len(secret) >= 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(path, create=True) == secret  # a second backend reads the same
    os.chmod(path, 0o644)
    with pytest.raises(ClusterConfigError, match="0600"):
        load_secret(path, create=False)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(ClusterConfigError, match="short"):
        load_secret(path, create=False)


def test_settings_from_server_config(tmp_path: Path) -> None:
    config = pytest.importorskip("dynamail.server.config")
    cfg = config.load(tmp_path / "b1", overrides={"role": "backend", "shared_base": str(tmp_path / "s"),
                                                  "listen": "127.0.7.1", "port_offset": 10000})
    cfg.cluster.backends = ["127.0.7.1", "127.0.7.2:17071"]
    cfg.cluster.name = "b1"
    s = ClusterSettings.from_config(cfg)
    assert s.name == "b1" and s.role == "backend"
    assert s.cluster_port == cfg.ports["cluster"] + 10000
    assert s.backends == [("127.0.7.1", s.cluster_port), ("127.0.7.2", 17071)]
    assert s.address == ("127.0.7.1", 10000, s.cluster_port)
    assert (tmp_path / "s" / "cluster.secret").exists()
    cfg.cluster.heartbeat_interval = 5.0
    with pytest.raises(ValueError):
        ClusterSettings.from_config(cfg)
