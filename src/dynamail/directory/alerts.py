"""Alerts: time-stamped notices per server, cluster, domain and account.

Each scope keeps its alerts in an ``Alerts.json`` (sorted by time stamp,
stamps unique within the scope; at most ``MAX_ALERTS``).  An account's file
also holds its *seen* mark: the newest time stamp the user has seen, which
only moves forward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynamail.accounts import AccountRef
from dynamail.directory import model
from dynamail.directory.layout import (
    ALERTS_FILE,
    AlertScope,
)
from dynamail.directory.model import (
    Alert,
    BadSetting,
)
from dynamail.directory.parts import DirectoryParts


class AlertsMixin(DirectoryParts):
    """Part of :class:`dynamail.directory.Directory`."""

    def _alerts_path(self, scope: AlertScope) -> Path:
        if scope == "server":
            return self.settings_dir / ALERTS_FILE
        if scope == "cluster":
            return self.cluster_dir / ALERTS_FILE
        if isinstance(scope, tuple) and len(scope) == 2:
            kind, what = scope
            if kind == "domain":
                return self._dpath(str(what)) / ALERTS_FILE
            if kind == "account" and isinstance(what, AccountRef):
                return self._existing(what) / ALERTS_FILE
        raise BadSetting(f"unknown alert scope: {scope!r}")

    def _read_alerts(self, path: Path) -> tuple[list[Alert], dict[str, Any]]:
        data = self.files.read(path, {})
        out: list[Alert] = []
        for item in data.get("alerts", []):
            try:
                out.append(Alert(model.parse_stamp(item["time"]), str(item["text"])))
            except (KeyError, TypeError, BadSetting):
                continue
        out.sort()
        return out, data

    def _write_alerts(self, path: Path, alerts: list[Alert], data: dict[str, Any]) -> None:
        data = dict(data)
        data["alerts"] = [{"time": a.timestamp.isoformat(), "text": a.text} for a in sorted(alerts)]
        self.files.write(path, data)

    def alerts(self, scope: AlertScope) -> list[Alert]:
        return self._read_alerts(self._alerts_path(scope))[0]

    def post_alert(self, scope: AlertScope, text: str) -> Alert:
        if not isinstance(text, str) or not text or len(text) > model.MAX_ALERT_TEXT or "\x00" in text:
            raise BadSetting("invalid alert text")
        path = self._alerts_path(scope)
        with self._lock:
            alerts, data = self._read_alerts(path)
            stamp = model.utcnow()
            if alerts and stamp <= alerts[-1].timestamp:
                import datetime

                stamp = alerts[-1].timestamp + datetime.timedelta(microseconds=1)
            alert = Alert(stamp, text)
            alerts.append(alert)
            self._write_alerts(path, alerts[-model.MAX_ALERTS:], data)
            return alert

    def remove_alert(self, scope: AlertScope, timestamp: Any) -> bool:
        """Remove the alert with that time stamp; False when there was none."""
        when = model.parse_stamp(timestamp)
        path = self._alerts_path(scope)
        with self._lock:
            alerts, data = self._read_alerts(path)
            kept = [a for a in alerts if a.timestamp != when]
            if len(kept) == len(alerts):
                return False
            self._write_alerts(path, kept, data)
            return True

    def set_alerts(self, scope: AlertScope, alerts: list[Alert]) -> None:
        path = self._alerts_path(scope)
        clean: dict[Any, Alert] = {}
        for a in alerts:
            if not isinstance(a.text, str) or len(a.text) > model.MAX_ALERT_TEXT:
                raise BadSetting("invalid alert text")
            ts = model.parse_stamp(a.timestamp)
            clean[ts] = Alert(ts, a.text)
        if len(clean) > model.MAX_ALERTS:
            raise BadSetting("too many alerts")
        with self._lock:
            _, data = self._read_alerts(path)
            self._write_alerts(path, list(clean.values()), data)

    def unseen_alerts(self, ref: AccountRef) -> list[Alert]:
        """Account, domain, server and cluster alerts newer than the account's
        seen mark, oldest first."""
        path = self._alerts_path(("account", ref))
        own, data = self._read_alerts(path)
        seen = data.get("seen")
        mark = model.parse_stamp(seen) if isinstance(seen, str) else None
        everything = own + self.alerts(("domain", ref.domain)) + self.alerts("server") + self.alerts("cluster")
        return sorted(a for a in everything if mark is None or a.timestamp > mark)

    def mark_alerts_seen(self, ref: AccountRef, upto: Any) -> None:
        when = model.parse_stamp(upto)
        path = self._alerts_path(("account", ref))
        with self._lock:
            alerts, data = self._read_alerts(path)
            seen = data.get("seen")
            if isinstance(seen, str) and model.parse_stamp(seen) >= when:
                return
            data["seen"] = when.isoformat()
            self._write_alerts(path, alerts, data)
