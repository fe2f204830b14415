from __future__ import annotations

import datetime

import pytest

from dynamail.directory import Alert, BadSetting, Directory, NoSuchAccount, NoSuchDomain


def test_alert_scopes(directory: Directory) -> None:
    directory.create_domain("d.example")
    directory.create_domain("s.example", shared=True)
    ref = directory.create_account("d.example", "u")
    a1 = directory.post_alert("server", "server maintenance")
    a2 = directory.post_alert("cluster", "cluster upgrade")
    a3 = directory.post_alert(("domain", "D.example"), "domain news")
    a4 = directory.post_alert(("account", ref), "your quota")
    assert directory.alerts("server") == [a1]
    assert directory.alerts("cluster") == [a2]
    assert directory.alerts(("domain", "d.example")) == [a3]
    assert directory.alerts(("account", ref)) == [a4]
    assert directory.alerts(("domain", "s.example")) == []
    assert (directory.cluster_dir / "Alerts.json").is_file()
    assert directory.unseen_alerts(ref) == sorted([a1, a2, a3, a4])
    directory.mark_alerts_seen(ref, a3.timestamp)
    assert directory.unseen_alerts(ref) == [a4]
    directory.mark_alerts_seen(ref, a1.timestamp)  # never moves backwards
    assert directory.unseen_alerts(ref) == [a4]
    a5 = directory.post_alert("server", "again")
    assert directory.unseen_alerts(ref) == [a4, a5]
    with pytest.raises(BadSetting):
        directory.alerts("galaxy")
    with pytest.raises(NoSuchDomain):
        directory.alerts(("domain", "none.example"))
    directory.delete_account(ref)
    with pytest.raises(NoSuchAccount):
        directory.alerts(("account", ref))


def test_timestamps_unique_and_removable(directory: Directory) -> None:
    posted = [directory.post_alert("server", f"n{i}") for i in range(50)]
    stamps = [a.timestamp for a in posted]
    assert stamps == sorted(stamps) and len(set(stamps)) == 50
    assert directory.remove_alert("server", posted[10].stamp)  # compact text form
    assert directory.remove_alert("server", posted[11].timestamp.isoformat())
    assert directory.remove_alert("server", posted[12].timestamp)
    assert not directory.remove_alert("server", posted[12].timestamp)
    assert len(directory.alerts("server")) == 47
    with pytest.raises(BadSetting):
        directory.remove_alert("server", "not a time")


def test_set_alerts(directory: Directory) -> None:
    t = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    directory.set_alerts("server", [Alert(t, "b"), Alert(t - datetime.timedelta(days=1), "a")])
    assert [a.text for a in directory.alerts("server")] == ["a", "b"]
    directory.set_alerts("server", [])
    assert directory.alerts("server") == []
    with pytest.raises(BadSetting):
        directory.post_alert("server", "")
    with pytest.raises(BadSetting):
        directory.post_alert("server", "x" * 20_000)
