"""A notify-only alert through the real pipeline: web -> Redis -> real Celery worker -> incident.

The incident is opened and its reason says "notify only"; the worker's automatic start decides on no
runbook and no run is created, although automatic runs are on and a runbook matches the alert's name (a
second, actionable alert through the same worker does start its run: the path is live).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

import workers.runbook_tasks as runbook_tasks
from bot.models import Incident, Severity
from bot.plan.schema import load_runbooks, parse_runbook
from bot.plan.select import select
from bot.settings import Settings
from bot.storage.incidents import IncidentStore
from bot.web.app import create_app
from tests.runbook.conftest import EngineFactory
from tests.support.fixtures import wait_until, worker_idle
from tests.support.payloads import alert, notification

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-token-0123456789"}
LLMD = {"team": "inference-platform", "deployment": "vllm-decode"}
#: A runbook an operator might add for the quiet alert: it matches by name, only the gate keeps it idle.
TUNE = parse_runbook(
    """
name: tune-prefix-cache
description: look at the prefix cache
match: {alertnames: [LLMDLowPrefixCacheHitRate]}
steps:
  - id: cache
    type: vllm.metrics
""",
    "tune-prefix-cache.yaml",
)


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis, celery_worker: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def post(client: TestClient, store: IncidentStore, name: str, **labels: str) -> Incident:
    body = notification([alert(name, fingerprint=name.lower()[:16], **labels)], group_key=f"{{}}:{name}")
    assert client.post("/alertmanager", json=body, headers=AUTH).status_code == 202
    return wait_until(  # type: ignore[return-value]
        lambda: next((i for i in store.recent() if i.group_key == f"{{}}:{name}"), None)
    )


def test_notify_only_alert_opens_an_incident_and_starts_no_runbook(
    client: TestClient,
    celery_worker: object,
    make_engine: EngineFactory,
    store: IncidentStore,
    rb_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runbooks = {**load_runbooks(rb_settings.runbooks_dir), TUNE.name: TUNE}
    engine = make_engine(runbooks=runbooks)
    auto = rb_settings.model_copy(update={"runbook_auto_run": True, "runbook_auto_dry_run": True})
    monkeypatch.setattr(runbook_tasks, "engine", lambda: engine)
    monkeypatch.setattr(runbook_tasks, "get_settings", lambda: auto)
    decided: dict[str, list[str]] = {}
    real_start = runbook_tasks.start_matching_runbooks

    def recording_start(incident_id: str) -> list[str]:
        decided[incident_id] = real_start(incident_id)
        return decided[incident_id]

    monkeypatch.setattr(runbook_tasks, "start_matching_runbooks", recording_start)
    # LLMDHighPreemptions starts kv-cache-exhaustion; LLMDLowPrefixCacheHitRate is notify only although
    # tune-prefix-cache matches it.
    quiet_labels = {"alertname": "LLMDLowPrefixCacheHitRate", "namespace": "llm-d", **LLMD}
    assert [s.runbook.name for s in select(runbooks.values(), [quiet_labels], Severity.P3)] == [TUNE.name]
    quiet = post(client, store, "LLMDLowPrefixCacheHitRate", **LLMD)
    wait_until(lambda: quiet.id in decided, timeout=30)
    assert decided[quiet.id] == []
    assert quiet.severity.value == "P3"
    assert "notify only (rule 'tuning-notify-only'): no runbook is started automatically" in (
        quiet.severity_reason
    )
    assert "by default" not in quiet.severity_reason

    acting = post(client, store, "LLMDHighPreemptions", **LLMD)
    wait_until(lambda: acting.id in decided, timeout=30)
    assert decided[acting.id] == ["kv-cache-exhaustion"]
    wait_until(lambda: engine.runs_of(acting.id), timeout=30)
    broker = redis.Redis.from_url(auto.effective_broker_url)
    wait_until(lambda: worker_idle(celery_worker, broker), timeout=60)
    broker.close()

    assert [r.runbook for r in engine.runs_of(acting.id)] == ["kv-cache-exhaustion"]
    assert engine.runs_of(quiet.id) == []
    kinds = [t.kind for t in store.timeline(quiet.id)]
    assert kinds[0] == "opened" and not [k for k in kinds if k.startswith("runbook")]
    assert store.get(quiet.id).severity_reason == quiet.severity_reason
