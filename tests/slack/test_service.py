"""The worker side of /incident and the buttons: authorization, state changes, audit, replies."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import redis

from bot import tasknames
from bot.models import IncidentStatus, Severity
from bot.sandbox.slack_emulator import SlackEmulator, to_console
from bot.settings import Settings
from bot.slack.runtime import SlackRuntime
from bot.slack.service import AutomationState, TierComponent, TierStatus
from bot.storage.audit import AuditLog
from bot.storage.incidents import IncidentStore
from bot.wiring import build_runtime
from tests.support.slack import (
    APPROVER,
    GROUP_RESPONDER,
    RESPONDER,
    STRANGER,
    TEAM,
    RecordingSender,
    open_incident,
)

_seq = iter(range(1, 1_000_000))


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def rt(slack_settings: Settings, redis_client: redis.Redis, sender: RecordingSender) -> SlackRuntime:
    return build_runtime(slack_settings, client=redis_client, sender=sender)


@pytest.fixture
def audit(rt: SlackRuntime) -> AuditLog:
    return rt.service.audit


def run(rt: SlackRuntime, emulator: SlackEmulator, text: str, user: str = RESPONDER) -> tuple[str, str]:
    """Run a command as the worker does; returns (outcome, the reply posted to the response_url)."""
    n = next(_seq)
    form = {
        "team_id": TEAM,
        "user_id": user,
        "text": text,
        "response_url": emulator.response_url(f"r{n}"),
        "trigger_id": f"trigger-{n}",
    }
    outcome = rt.service.handle_command(form)
    replies = [r["text"] for r in emulator.responses if r["path"] == f"/response/r{n}"]
    assert len(replies) == 1, replies
    assert emulator.responses[-1]["response_type"] == "ephemeral"
    return outcome.outcome, replies[0]


def click(
    rt: SlackRuntime, emulator: SlackEmulator, action_id: str, value: str, user: str, **extra: str
) -> str:
    n = next(_seq)
    fields: dict[str, Any] = {
        "user_id": user,
        "team_id": TEAM,
        "action_id": action_id,
        "value": value,
        "response_url": emulator.response_url(f"a{n}"),
        "request_id": f"req-{n}",
        **extra,
    }
    return rt.service.handle_action(fields).outcome


def test_ack_by_a_responder_changes_state_times_it_and_audits(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator, sender: RecordingSender, audit: AuditLog
) -> None:
    inc = open_incident(store)
    outcome, reply = run(rt, emulator, f"ack {inc.id}")
    assert outcome == "accepted" and "acknowledged" in reply
    assert store.get(inc.id).status is IncidentStatus.ACKNOWLEDGED
    last = store.timeline(inc.id)[-1]
    assert last.kind == "acknowledged" and last.data["actor"] == f"slack:{RESPONDER}"
    assert sender.named(tasknames.NOTIFY_INCIDENT) == [((inc.id, None), {})]
    record = audit.entries()[-1]
    assert (record["actor"], record["team_id"], record["action"], record["outcome"]) == (
        f"slack:{RESPONDER}",
        TEAM,
        "ack",
        "accepted",
    )


def test_unauthorized_user_is_refused_changes_nothing_and_is_audited(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator, sender: RecordingSender, audit: AuditLog
) -> None:
    inc = open_incident(store)
    for text in (f"ack {inc.id}", f"resolve {inc.id}", f"sev {inc.id} P0", f"commander {inc.id} U0ABC123"):
        outcome, reply = run(rt, emulator, text, user=STRANGER)
        assert outcome == "refused" and "Refused" in reply and "only responders" in reply
    after = store.get(inc.id)
    assert after == inc and [e.kind for e in store.timeline(inc.id)] == ["opened"]
    assert sender.sent == []
    refused = [e for e in audit.entries() if e["outcome"] == "refused"]
    assert len(refused) == 4 and all(
        e["actor"] == f"slack:{STRANGER}" and e["team_id"] == TEAM for e in refused
    )


def test_user_group_membership_is_resolved_and_cached(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator
) -> None:
    inc = open_incident(store)
    assert run(rt, emulator, f"ack {inc.id}", user=GROUP_RESPONDER)[0] == "accepted"
    assert run(rt, emulator, f"sev {inc.id} P0 bigger", user=GROUP_RESPONDER)[0] == "accepted"
    assert len(emulator.calls_of("usergroups.users.list")) == 1  # the second check used the cache
    assert (
        run(rt, emulator, f"runbook {inc.id} scale", user=GROUP_RESPONDER)[0] == "refused"
    )  # not an approver


def test_resolve_sev_and_commander(rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator) -> None:
    inc = open_incident(store)
    assert run(rt, emulator, f"sev {inc.id} P0 all regions down")[0] == "accepted"
    assert run(rt, emulator, f"commander {inc.id} <@UCOMMAND1|cara>")[0] == "accepted"
    outcome, reply = run(rt, emulator, f"resolve {inc.id} rolled back")
    assert outcome == "accepted"
    after = store.get(inc.id)
    assert after.severity is Severity.P0 and "all regions down" in after.severity_reason
    assert after.commander == "UCOMMAND1" and after.status is IncidentStatus.RESOLVED
    kinds = [(e.kind, e.data.get("actor")) for e in store.timeline(inc.id)][1:]
    assert kinds == [(k, f"slack:{RESPONDER}") for k in ("severity_changed", "commander_set", "resolved")]
    assert store.timeline(inc.id)[-1].data["note"] == "rolled back"
    outcome, reply = run(rt, emulator, f"ack {inc.id}")
    assert outcome == "failed" and "cannot ack" in reply  # the transition table said no, politely


def test_unknown_incident_and_bad_text_get_readable_replies(
    rt: SlackRuntime, emulator: SlackEmulator
) -> None:
    outcome, reply = run(rt, emulator, "show INC-9999")
    assert outcome == "failed" and "no incident 'INC-9999'" in reply
    outcome, reply = run(rt, emulator, "sev INC-1 P9")
    assert outcome == "usage" and "not a severity" in reply and "`/incident` commands" in reply


def test_runbook_and_rollback_are_for_approvers_and_are_enqueued_by_name(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator, sender: RecordingSender
) -> None:
    inc = open_incident(store)
    assert run(rt, emulator, f"rollback llm-d/vllm-decode --incident {inc.id}")[0] == "refused"
    assert sender.named(tasknames.ROLLBACK_REQUEST) == []
    outcome, reply = run(
        rt, emulator, f"rollback llm-d/vllm-decode --to-revision 3 --incident {inc.id}", APPROVER
    )
    assert outcome == "accepted" and "queued" in reply
    assert sender.named(tasknames.ROLLBACK_REQUEST) == [
        (
            (),
            {
                "namespace": "llm-d",
                "deployment": "vllm-decode",
                "to_revision": 3,
                "incident_id": inc.id,
                "dry_run": False,
                "actor": f"slack:{APPROVER}",
            },
        )
    ]
    outcome, reply = run(rt, emulator, f"runbook {inc.id} scale-decode --dry-run", APPROVER)
    assert outcome == "accepted" and "dry run" in reply
    assert sender.named(tasknames.RUNBOOK_RUN)[0][1] == {
        "incident_id": inc.id,
        "runbook": "scale-decode",
        "dry_run": True,
        "trigger": f"requested by slack:{APPROVER}",
    }
    assert [e.kind for e in store.timeline(inc.id)][-2:] == ["rollback_requested", "runbook_requested"]
    outcome, _ = run(
        rt, emulator, f"runbook {inc.id} service-down namespace=llm-d deployment=ms-decode", APPROVER
    )
    assert outcome == "accepted"
    assert sender.named(tasknames.RUNBOOK_RUN)[-1][1]["overrides"] == {
        "namespace": "llm-d",
        "deployment": "ms-decode",
    }
    assert store.timeline(inc.id)[-1].message.endswith("with deployment=ms-decode namespace=llm-d.")


def test_read_only_commands_work_for_everyone(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator
) -> None:
    inc = open_incident(store, severity="critical", summary="<!channel> decode queue")
    outcome, reply = run(rt, emulator, "list", user=STRANGER)
    assert (
        outcome == "accepted"
        and inc.id in reply
        and "&lt;!channel&gt;" in reply
        and "<!channel>" not in reply
    )
    outcome, reply = run(rt, emulator, f"show {inc.id}", user=STRANGER)
    assert outcome == "accepted" and "opened" in reply
    assert run(rt, emulator, "status", user=STRANGER)[1].endswith("serving-tier status source not configured")
    assert "Automation is *ON*" in run(rt, emulator, "automation status", user=STRANGER)[1]
    assert run(rt, emulator, "maintenance list", user=STRANGER)[0] == "accepted"
    assert run(rt, emulator, "automation off", user=STRANGER)[0] == "refused"


def test_status_and_automation_use_the_protocols(rt: SlackRuntime, emulator: SlackEmulator) -> None:
    class Tier:
        def snapshot(self) -> TierStatus:
            return TierStatus(
                True, "2/3 pools healthy", [TierComponent("decode", False, "<!here> 0/4 ready")]
            )

    class Switch:
        def __init__(self) -> None:
            self.calls: list[tuple[bool, str, str]] = []

        def status(self) -> AutomationState:
            return AutomationState(True)

        def set_enabled(self, enabled: bool, actor: str, reason: str) -> AutomationState:
            self.calls.append((enabled, actor, reason))
            return AutomationState(enabled, "until turned on again")

    switch = Switch()
    rt.service.tier, rt.service.automation = Tier(), switch
    reply = run(rt, emulator, "status", user=STRANGER)[1]
    assert "2/3 pools healthy" in reply and ":red_circle: *decode*" in reply and "&lt;!here&gt;" in reply
    assert "*OFF*" in run(rt, emulator, "automation off flapping", user=APPROVER)[1]
    assert switch.calls == [(False, f"slack:{APPROVER}", "flapping")]


def test_redelivered_command_is_not_run_twice(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator
) -> None:
    inc = open_incident(store)
    form = {
        "team_id": TEAM,
        "user_id": RESPONDER,
        "text": f"ack {inc.id}",
        "response_url": emulator.response_url(),
    }
    form["trigger_id"] = "same-trigger"
    assert rt.service.handle_command(form).outcome == "accepted"
    assert rt.service.handle_command(form).outcome == "duplicate"
    assert len(emulator.responses) == 1


def test_buttons_ack_approve_deny_with_who_did_what(
    rt: SlackRuntime, store: IncidentStore, emulator: SlackEmulator, sender: RecordingSender, audit: AuditLog
) -> None:
    inc = open_incident(store)
    assert click(rt, emulator, "incident_ack", inc.id, STRANGER) == "refused"
    assert click(rt, emulator, "incident_ack", inc.id, RESPONDER) == "accepted"
    assert store.get(inc.id).status is IncidentStatus.ACKNOWLEDGED

    channel, ts = rt.web.post_message(
        "#incidents-high", "approval needed", [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]
    )
    value = json.dumps({"incident_id": inc.id, "step_key": "scale-decode/2"})
    where = {"channel_id": channel, "message_ts": ts}
    assert click(rt, emulator, "runbook_approve", value, RESPONDER, **where) == "refused"
    assert click(rt, emulator, "runbook_approve", value, APPROVER, **where) == "accepted"
    assert sender.named(tasknames.APPROVAL_DECISION) == [
        ((inc.id, "scale-decode/2", "approve", f"slack:{APPROVER}"), {})
    ]
    shown = to_console({"blocks": emulator.messages[(channel, ts)].blocks}, users={APPROVER: "abe"})
    assert "Approved* by @abe" in shown and "scale-decode/2" in shown
    assert click(rt, emulator, "runbook_deny", value, APPROVER, **where) == "failed"  # already decided
    assert "already approved" in emulator.responses[-1]["text"]
    assert len(sender.named(tasknames.APPROVAL_DECISION)) == 1
    assert store.timeline(inc.id)[-1].kind == "approval_decided"
    assert [e["outcome"] for e in audit.entries() if e["action"].startswith(("approve", "deny"))] == [
        "refused",
        "accepted",
        "failed",
    ]
    suggested = json.dumps({"incident_id": inc.id, "runbook": "scale-decode"})
    assert click(rt, emulator, "runbook_run_suggested", suggested, APPROVER) == "accepted"
    assert sender.named(tasknames.RUNBOOK_RUN)[-1][1]["runbook"] == "scale-decode"
    assert click(rt, emulator, "runbook_approve", "not json", APPROVER) == "usage"


def test_kill_switch_and_maintenance_from_slack_reach_every_worker(
    rt: SlackRuntime, emulator: SlackEmulator, redis_client: object, settings: object
) -> None:
    """The commands act on bot.storage.controls in Redis: what the runbook engine's guards read."""
    from bot.storage.controls import AutomationControls

    other_worker = AutomationControls(redis.Redis.from_url(rt.settings.redis_url), rt.settings.key_prefix)
    assert other_worker.automation_enabled()
    outcome, reply = run(rt, emulator, "automation off bad deploy in progress", user=APPROVER)
    assert outcome == "accepted", reply
    assert not other_worker.automation_enabled()
    assert "OFF" in run(rt, emulator, "automation status", user=STRANGER)[1]
    run(rt, emulator, "automation on", user=APPROVER)
    assert other_worker.automation_enabled()

    outcome, reply = run(rt, emulator, "maintenance start staging/vllm-decode 2h node drain", user=APPROVER)
    assert outcome == "accepted", reply
    assert other_worker.in_maintenance({"namespace": "staging", "deployment": "vllm-decode"}) == "node drain"
    assert other_worker.in_maintenance({"namespace": "staging", "deployment": "other"}) is None
    listing = run(rt, emulator, "maintenance list", user=STRANGER)[1]
    assert "staging" in listing and "vllm-decode" in listing
    window_id = re.search(r"`(MW-[A-Z0-9-]+|[A-Z0-9]{4,})`", listing)
    assert window_id is not None, listing
    assert run(rt, emulator, f"maintenance end {window_id.group(1)}", user=APPROVER)[0] == "accepted"
    assert other_worker.in_maintenance({"namespace": "staging", "deployment": "vllm-decode"}) is None
