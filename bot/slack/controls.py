"""The kill switch and maintenance windows of bot.storage.controls, as the Slack commands see them."""

from __future__ import annotations

from datetime import timedelta

from bot.errors import PermanentError
from bot.slack.service import AutomationState, MaintenanceWindow
from bot.storage.controls import AutomationSwitch
from bot.storage.controls import MaintenanceWindows as WindowStore


class SwitchControl:
    """`/incident automation on|off|status` on the shared Redis kill switch."""

    def __init__(self, switch: AutomationSwitch) -> None:
        self._switch = switch

    def status(self) -> AutomationState:
        """Whether automation is on, and who switched it last."""
        s = self._switch.status()
        detail = f"set by {s.by}: {s.reason}" if s.by else ""
        return AutomationState(s.enabled, detail)

    def set_enabled(self, enabled: bool, actor: str, reason: str) -> AutomationState:
        """Switch automation on or off for every worker."""
        if enabled:
            self._switch.enable(actor)
        else:
            self._switch.disable(actor, reason or "switched off from Slack")
        return self.status()


class WindowControl:
    """`/incident maintenance …` on the shared maintenance windows (namespace[/deployment] matchers)."""

    def __init__(self, windows: WindowStore) -> None:
        self._windows = windows

    def list(self) -> list[MaintenanceWindow]:
        """Windows in force now or later."""
        out = []
        for w in self._windows.list():
            equal = {m.name: m.value for m in w.matchers if m.op == "="}
            out.append(
                MaintenanceWindow(
                    id=w.id,
                    namespace=equal.get("namespace", "*"),
                    deployment=equal.get("deployment"),
                    ends_at=w.ends,
                    actor=w.created_by,
                    reason=w.reason,
                )
            )
        return out

    def start(
        self, namespace: str, deployment: str | None, seconds: int, actor: str, reason: str
    ) -> MaintenanceWindow:
        """Open a window over a namespace (and one deployment in it)."""
        matchers = [f"namespace={namespace}"] + ([f"deployment={deployment}"] if deployment else [])
        w = self._windows.add(matchers, timedelta(seconds=seconds), reason or "from Slack", actor)
        return MaintenanceWindow(w.id, namespace, deployment, w.ends, actor, w.reason)

    def end(self, window_id: str, actor: str) -> MaintenanceWindow:
        """Close a window early."""
        found = next((w for w in self.list() if w.id == window_id.strip().upper()), None)
        if found is None or not self._windows.remove(window_id):
            raise PermanentError(f"no maintenance window {window_id!r}")
        return found
