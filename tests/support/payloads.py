"""Realistic Alertmanager v4 notifications for tests."""

from __future__ import annotations

import copy
from typing import Any

FIRING_TIME = "2026-11-26T10:00:00Z"


def alert(
    name: str = "VLLMHighQueueDepth",
    *,
    fingerprint: str = "a1b2c3d4e5f60718",
    status: str = "firing",
    starts_at: str = FIRING_TIME,
    severity: str = "warning",
    **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager sends it."""
    return {
        "status": status,
        "labels": {"alertname": name, "severity": severity, "namespace": "llm-d", **labels},
        "annotations": {"summary": "decode queue depth above 10", "runbook_url": "https://runbooks/x"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-26T10:30:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=vllm%3Anum_requests_waiting+%3E+10",
        "fingerprint": fingerprint,
    }


def notification(
    alerts: list[dict[str, Any]] | None = None,
    *,
    group_key: str = '{}:{alertname="VLLMHighQueueDepth", namespace="llm-d"}',
    status: str | None = None,
    truncated: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """A whole notification; the group status is derived from the alerts unless given."""
    alerts = copy.deepcopy(alerts) if alerts is not None else [alert()]
    if status is None:
        status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": truncated,
        "status": status,
        "receiver": "incident-bot",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {"alertname": alerts[0]["labels"]["alertname"], "namespace": "llm-d"},
        "commonAnnotations": {"summary": "decode queue depth above 10"},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
        **extra,
    }
