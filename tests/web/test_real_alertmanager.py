"""A real Alertmanager (Debian package) routes alerts to the bot over HTTP with Bearer auth."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from bot.models import IncidentStatus
from bot.runtime import serve_in_thread
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.web.app import create_app
from tests.support.fixtures import wait_until
from tests.support.services import Alertmanager

pytestmark = pytest.mark.integration

CONFIG = """
route:
  receiver: incident-bot
  group_by: [alertname, namespace]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: incident-bot
    webhook_configs:
      - url: {url}/alertmanager
        send_resolved: true
        max_alerts: {max_alerts}
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""


@pytest.fixture
def bot_url(settings: Settings, redis_client: redis.Redis, celery_worker: object) -> Iterator[str]:
    with serve_in_thread(create_app(settings)) as url:
        yield url


def start_alertmanager(bot_url: str, token: str, max_alerts: int = 0) -> Alertmanager:
    am = Alertmanager(CONFIG.format(url=bot_url, token=token, max_alerts=max_alerts))
    am.start()
    return am


def am_alert(name: str, pod: str, *, ends: datetime | None = None) -> dict[str, object]:
    now = datetime.now(UTC)
    body: dict[str, object] = {
        "labels": {"alertname": name, "namespace": "llm-d", "pod": pod, "severity": "critical"},
        "annotations": {"summary": f"{name} on {pod}"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "generatorURL": "http://127.0.0.1:9090/graph",
    }
    if ends is not None:
        body["endsAt"] = ends.isoformat()
    return body


def test_alerts_posted_to_alertmanager_become_an_incident_then_resolve(
    bot_url: str, settings: Settings, store: IncidentStore
) -> None:
    am = start_alertmanager(bot_url, settings.alertmanager_token.get_secret_value())  # type: ignore[union-attr]
    try:
        am.post_alerts(
            [am_alert("VLLMServiceDown", "vllm-decode-0"), am_alert("VLLMServiceDown", "vllm-decode-1")]
        )
        incident = wait_until(lambda: store.recent(), timeout=30)[0]  # type: ignore[index]
        wait_until(lambda: store.get(incident.id).firing_count == 2, timeout=30)
        incident = store.get(incident.id)
        assert incident.group_key == '{}:{alertname="VLLMServiceDown", namespace="llm-d"}'
        assert incident.receiver == "incident-bot"
        assert incident.severity.value == "P0"
        assert "outage-alert" in incident.severity_reason
        assert {a.labels["pod"] for a in incident.alerts.values()} == {"vllm-decode-0", "vllm-decode-1"}

        ended = datetime.now(UTC) - timedelta(seconds=1)
        am.post_alerts(
            [
                am_alert("VLLMServiceDown", "vllm-decode-0", ends=ended),
                am_alert("VLLMServiceDown", "vllm-decode-1", ends=ended),
            ]
        )
        wait_until(lambda: store.get(incident.id).status is IncidentStatus.RESOLVED, timeout=30)
        kinds = [t.kind for t in store.timeline(incident.id)]
        assert kinds[0] == "opened" and kinds[-1] == "resolved"
        assert len(store.recent()) == 1
    finally:
        am.cleanup()


def test_truncated_group_is_recorded(bot_url: str, settings: Settings, store: IncidentStore) -> None:
    am = start_alertmanager(bot_url, settings.alertmanager_token.get_secret_value(), max_alerts=2)  # type: ignore[union-attr]
    try:
        am.post_alerts([am_alert("KVCacheEvictions", f"vllm-decode-{i}") for i in range(5)])
        # Under load Alertmanager may flush the group before all five are in it; the next notification
        # (group_interval) then carries the whole group, truncated.
        incident = wait_until(
            lambda: next((i for i in store.recent() if i.truncated_alerts == 3), None), timeout=30
        )
        assert len(incident.alerts) == 2
    finally:
        am.cleanup()


def test_alertmanager_with_wrong_token_creates_nothing(bot_url: str, store: IncidentStore) -> None:
    am = start_alertmanager(bot_url, "not-the-token")
    try:
        am.post_alerts([am_alert("VLLMServiceDown", "vllm-decode-0")])
        # Alertmanager logs the 401 and drops the notification for good (4xx is not retried)
        wait_until(lambda: "401" in am.log.read_text(), timeout=30)
        assert store.recent() == []
    finally:
        am.cleanup()
