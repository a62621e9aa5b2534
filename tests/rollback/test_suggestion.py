"""The service-down runbook suggests a rollback after a recent rollout; the button starts the flow."""

from __future__ import annotations

import json

import pytest
import redis

import bot.steps  # noqa: F401  (registers the shipped step types)
from bot import tasknames
from bot.integrations.kube import KubeClient
from bot.plan.schema import load_runbooks
from bot.runbook.engine import Engine
from bot.runbook.services import Services
from bot.sandbox.sandbox import Sandbox
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.slack.render import ACTION_ROLLBACK_SUGGESTED
from bot.storage.controls import AutomationControls
from bot.storage.guards import Guards
from bot.storage.incidents import IncidentStore
from bot.storage.runs import RunStore
from bot.wiring import build_runtime
from tests.rollback.conftest import NS, roll_out
from tests.support.runbooks import FastClock, open_incident
from tests.support.slack import APPROVER, RESPONDER, RecordingSender

pytestmark = pytest.mark.integration


def test_service_down_suggests_and_the_button_requests_the_rollback(
    sandbox: Sandbox,
    kube: KubeClient,
    rb_settings: Settings,
    redis_client: redis.Redis,
    store: IncidentStore,
    emulator: SlackEmulator,
) -> None:
    roll_out(sandbox)
    clock = FastClock()
    engine = Engine(
        RunStore(redis_client, rb_settings.key_prefix),
        Guards.from_settings(redis_client, rb_settings),
        store,
        Services(rb_settings, store, kube=kube),
        rb_settings,
        load_runbooks(rb_settings.runbooks_dir),
        AutomationControls(redis_client, rb_settings.key_prefix),
        clock=clock.now,
        sleep=clock.sleep,
    )
    inc = open_incident(store, "VLLMServiceDown", namespace=NS)
    run, _ = engine.create_run(inc.id, "service-down", dry_run=True)
    engine.run_inline(run.id, max_seconds=60)
    assert engine.get_run(run.id).outputs["suggest_rollback"]["suggested"] is True
    assert "rollback_suggested" not in [e.kind for e in store.timeline(inc.id)]  # a dry run only says so

    run, _ = engine.create_run(inc.id, "service-down")
    engine.run_inline(run.id, max_seconds=120)
    (entry,) = [e for e in store.timeline(inc.id) if e.kind == "rollback_suggested"]
    assert (entry.data["from_revision"], entry.data["to_revision"]) == (2, 1)

    sender = RecordingSender()
    rt = build_runtime(rb_settings, sender=sender)
    message = rt.service.renderer.event(store.get(inc.id), entry)
    assert "[Roll back]" in to_console({"blocks": message.blocks})
    button = message.blocks[1]["elements"][0]
    assert button["action_id"] == ACTION_ROLLBACK_SUGGESTED
    fields = {
        "user_id": RESPONDER,
        "team_id": "T0",
        "action_id": button["action_id"],
        "value": button["value"],
    }
    assert rt.service.handle_action({**fields, "request_id": "r1"}).outcome == "refused"  # approvers only
    assert rt.service.handle_action({**fields, "user_id": APPROVER, "request_id": "r2"}).outcome == "accepted"
    ((_, kwargs),) = sender.named(tasknames.ROLLBACK_REQUEST)
    assert kwargs == {
        "namespace": NS,
        "deployment": "vllm-decode",
        "to_revision": 1,  # pinned: after the runbook's own undo, "the previous revision" is the bad one
        "incident_id": inc.id,
        "dry_run": False,
        "actor": f"slack:{APPROVER}",
    }
    bad = json.dumps({"incident_id": inc.id, "namespace": "a b", "deployment": "x"})
    assert (
        rt.service.handle_action({**fields, "user_id": APPROVER, "value": bad, "request_id": "r3"}).outcome
        == "usage"
    )


def test_a_suggested_rollback_of_another_kind_keeps_its_kind(
    rb_settings: Settings, store: IncidentStore
) -> None:
    inc = open_incident(store, "VLLMServiceDown", namespace=NS)
    data = {
        "namespace": NS,
        "deployment": "ms-decode",
        "kind": "LeaderWorkerSet",
        "from_revision": 3,
        "to_revision": 2,
    }
    store.append_timeline(inc.id, "rollback_suggested", "ms-decode rolled out 5 min ago.", data)
    (entry,) = [e for e in store.timeline(inc.id) if e.kind == "rollback_suggested"]
    sender = RecordingSender()
    rt = build_runtime(rb_settings, sender=sender)
    button = rt.service.renderer.event(store.get(inc.id), entry).blocks[1]["elements"][0]
    fields = {
        "user_id": APPROVER,
        "team_id": "T0",
        "action_id": button["action_id"],
        "value": button["value"],
    }
    assert rt.service.handle_action({**fields, "request_id": "r1"}).outcome == "accepted"
    ((_, kwargs),) = sender.named(tasknames.ROLLBACK_REQUEST)
    assert (
        kwargs["kind"] == "LeaderWorkerSet"
        and kwargs["deployment"] == "ms-decode"
        and kwargs["to_revision"] == 2
    )
