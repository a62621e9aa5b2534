"""Block Kit templates: every event type renders valid JSON Block Kit, and hostile alert text stays inert."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot.models import AlertState, AlertStatus, Incident, IncidentStatus, Severity, TimelineEntry
from bot.sandbox.slack_emulator import to_console
from bot.settings import REPO_ROOT
from bot.slack.mrkdwn import escape, escape_tree
from bot.slack.render import KIND_LABEL, Message, SlackRenderer

SSTI = "{{ ''.__class__.__mro__ }}"
RAW = "{% raw %}{{ 7*7 }}{% endraw %}{% for x in range(3) %}x{% endfor %}"
PINGS = "<!channel> <!here> <!everyone> <@U0ATTACKR> <http://evil.example|click me> <#C0SECRET>"
JSONBREAK = '"}]}, {"type": "section"} \\" \\u0000 \n\t'
HOSTILE = f"{SSTI} {RAW} {PINGS} & {JSONBREAK}"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

EVENT_KINDS = [*KIND_LABEL, "some_future_kind"]


def hostile_incident(status: IncidentStatus = IncidentStatus.TRIGGERED, **update: Any) -> Incident:
    """An incident whose every alert-provided field carries injection attempts."""
    alert = AlertState(
        fingerprint="fp1",
        name="VLLMDown" + HOSTILE,
        status=AlertStatus.FIRING,
        labels={"alertname": "VLLMDown", "severity": HOSTILE},
        annotations={
            "summary": HOSTILE,
            "impact": HOSTILE * 5,
            "runbook_url": "javascript:alert(1)",
            "dashboard_url": "https://grafana.example/d/x|<!channel>",
            "runbook": "scale-decode",
        },
        starts_at=NOW,
        ends_at=None,
    )
    base = Incident(
        id="INC-0042",
        group_key=HOSTILE,
        title="VLLMDown: " + HOSTILE,
        status=status,
        severity=Severity.P1,
        severity_reason=HOSTILE,
        receiver="incident-bot",
        external_url="http://alertmanager:9093",
        common_labels={"alertname": "VLLMDown"},
        alerts={"fp1": alert},
        truncated_alerts=3,
        created_at=NOW,
        updated_at=NOW,
        resolved_at=NOW + timedelta(hours=1) if status is IncidentStatus.RESOLVED else None,
        commander="UCOMMAND1",
    )
    return base.model_copy(update=update)


def entry(kind: str, **data: Any) -> TimelineEntry:
    """A timeline entry whose message and data are hostile."""
    payload: dict[str, Any] = {
        "actor": "slack:URESP0001",
        "step_key": "scale-decode/1" + HOSTILE,
        "runbook": HOSTILE,
        "previous": "P2",
        "severity": "P1",
        "reason": HOSTILE,
        "commander": "UCOMMAND1",
        "eta": HOSTILE,
        "nested": {"list": [HOSTILE, 1, None, True], HOSTILE: HOSTILE},
    }
    payload.update(data)
    return TimelineEntry(id="1700000000000-0", at=NOW, kind=kind, message=HOSTILE, data=payload)


@pytest.fixture(scope="module")
def renderer() -> SlackRenderer:
    return SlackRenderer(REPO_ROOT / "templates")


def _without_values(obj: Any) -> Any:
    """Button `value`s are opaque data returned to the bot on click, never displayed: left out."""
    if isinstance(obj, dict):
        return {k: _without_values(v) for k, v in obj.items() if k != "value"}
    if isinstance(obj, list):
        return [_without_values(v) for v in obj]
    return obj


def assert_inert(message: Message) -> None:
    """Valid Block Kit (slack_sdk's own validators), and no live control sequence from the data."""
    assert isinstance(message.blocks, list) and 0 < len(message.blocks) <= 50
    for block in Block.parse_all(message.blocks):
        assert block is not None
        block.to_dict()  # runs slack_sdk's Block Kit validation (lengths, required fields)
    document = json.dumps({"text": message.text, "blocks": _without_values(message.blocks)})
    json.loads(document)
    every_text = [message.text, *re.findall(r'"text": "((?:[^"\\]|\\.)*)"', document)]
    for text in every_text:
        # Control sequences from the data are gone; only the bot's own date tokens and mentions remain.
        for seq in re.findall(r"<[^>]*>", json.loads(f'"{text}"') if text is not message.text else text):
            assert seq.startswith(("<!date^", "<@UCOMMAND1>", "<@URESP0001>", "<@UAPPR0001>")), seq
    assert "<!channel>" not in document and "<!here>" not in document and "<@U0ATTACKR>" not in document
    assert "<http://evil" not in document


def test_root_message_renders_inert_for_every_status(renderer: SlackRenderer) -> None:
    for status in IncidentStatus:
        incident = hostile_incident(status)
        timeline = [entry(k) for k in ("step_completed", "approval_requested", "acknowledged", "resolved")]
        message = renderer.root(incident, timeline, NOW)
        assert_inert(message)
        text = json.dumps(message.blocks)
        assert "__mro__" in text  # shown as text: the SSTI payload was data, never evaluated
        assert "{% raw %}" in text and "{{ 7*7 }}" in text and "49" not in text
        assert "&lt;!channel&gt;" in text
        assert "javascript:" not in text  # not a http(s) URL: no button
        assert "grafana.example" not in text  # a '|' in a URL would break the link: dropped
        assert "http://alertmanager:9093/#/alerts" in text


def test_root_message_follows_the_communication_template(renderer: SlackRenderer) -> None:
    incident = hostile_incident(title="VLLMDown: decode pods crash-looping")
    timeline = [entry("step_completed", eta="15 min")]
    message = renderer.root(incident, timeline, NOW)
    console = to_console({"text": message.text, "blocks": message.blocks})
    for heading in (
        "*Status*: INVESTIGATING",
        "*Severity*: :large_orange_circle: P1",
        "*Start time*: 2026-11-26 10:00 UTC",
        "*Incident commander*: @UCOMMAND1",
        "*ETA*: 15 min",
        "*Next update*: 2026-11-26 10:30 UTC",  # P1: every 30 minutes
        "*Severity reason:*",
        "*Impact:*",
        "*Current actions:*",
        "[Alertmanager](http://alertmanager:9093/#/alerts)",
        "[Acknowledge]",
        "[Resolve]",
        "[Run suggested runbook: scale-decode]",
    ):
        assert heading in console, f"{heading!r} missing from:\n{console}"
    resolved = renderer.root(hostile_incident(IncidentStatus.RESOLVED), [entry("resolved")], NOW)
    console = to_console({"text": resolved.text, "blocks": resolved.blocks})
    assert "*Status*: RESOLVED" in console and "Resolved by @URESP0001" in console
    assert "[Acknowledge]" not in console and "[Resolve]" not in console


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_event_kind_renders_inert(renderer: SlackRenderer, kind: str) -> None:
    message = renderer.event(hostile_incident(), entry(kind))
    assert_inert(message)
    shown = json.dumps(message.blocks)
    if kind != "commander_set":  # that template shows only the commander's mention, not the message
        assert "__mro__" in shown and "&lt;!channel&gt;" in shown  # the hostile text is there, as text


def test_approval_request_carries_approve_and_deny_buttons(renderer: SlackRenderer) -> None:
    message = renderer.event(hostile_incident(), entry("approval_requested", step_key="scale/2"))
    actions = next(b for b in message.blocks if b["type"] == "actions")["elements"]
    assert [a["action_id"] for a in actions] == ["runbook_approve", "runbook_deny"]
    assert json.loads(actions[0]["value"]) == {"incident_id": "INC-0042", "step_key": "scale/2"}


def test_digest_and_decision_render_inert(renderer: SlackRenderer) -> None:
    incidents = [hostile_incident(id=f"INC-{i:04d}") for i in range(1, 501)]
    digest = renderer.digest("#incidents-high", incidents, 60, NOW)
    assert_inert(digest)
    console = to_console({"blocks": digest.blocks})
    assert "500 incidents" in console and "…and 480 more" in console
    decision = renderer.decision("INC-0042", "step" + HOSTILE, "approve", "slack:UAPPR0001", NOW)
    assert_inert(decision)
    assert "Approved* by <@UAPPR0001>" in decision.blocks[0]["text"]["text"]


def test_mrkdwn_escape_makes_control_sequences_inert() -> None:
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert escape("a" * 10 + "<" * 10, limit=12).endswith("…")
    assert len(escape("<" * 1000, limit=100)) <= 100 and "&lt" not in escape("<" * 1000, limit=100)[-4:-1]
    assert escape_tree({"<k>": ["<v>", 1, None]}) == {"&lt;k&gt;": ["&lt;v&gt;", 1, None]}
