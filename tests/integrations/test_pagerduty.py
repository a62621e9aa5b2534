"""The PagerDuty adapter through the official client against the loopback HTTPS emulator."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from bot.errors import PermanentError, TransientError
from bot.integrations.pagerduty import Link, PagerDutyClient, sign_webhook, verify_webhook
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.severity import Severity


@pytest.fixture
def pd() -> Iterator[PagerDutyEmulator]:
    with PagerDutyEmulator() as emulator:
        yield emulator


def client(pd: PagerDutyEmulator, **kw: object) -> PagerDutyClient:
    return PagerDutyClient(
        "R0UTINGKEY",
        api_token="tok-123",
        service_from="bot@example.com",
        events_url=pd.url,
        api_url=pd.url,
        verify=ssl.create_default_context(cafile=str(pd.ca_path)),
        **kw,  # type: ignore[arg-type]
    )


def test_trigger_ack_resolve_with_one_dedup_key(pd: PagerDutyEmulator) -> None:
    c = client(pd)
    key = c.trigger(
        dedup_key="llmd-incident-bot/INC-0001",
        summary="[P0] VLLMServiceDown in llm-d",
        source="llm-d/vllm-decode",
        severity=Severity.P0,
        custom_details={"incident": "INC-0001"},
        links=[Link("https://slack.example/archives/C1/p1", "Slack thread")],
    )
    assert key == "llmd-incident-bot/INC-0001"
    c.acknowledge(key)
    c.resolve(key)
    trigger = pd.events("trigger")[0]
    assert trigger["routing_key"] == "R0UTINGKEY"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["links"] == [{"href": "https://slack.example/archives/C1/p1", "text": "Slack thread"}]
    assert pd.incidents[key].history == ["trigger", "acknowledge", "resolve"]


@pytest.mark.parametrize(
    ("sev", "wire"),
    [(Severity.P0, "critical"), (Severity.P1, "error"), (Severity.P2, "warning"), (Severity.P3, "info")],
)
def test_severity_mapping(pd: PagerDutyEmulator, sev: Severity, wire: str) -> None:
    client(pd).trigger(dedup_key=f"k-{sev}", summary="s", source="src", severity=sev)
    assert pd.events("trigger")[0]["payload"]["severity"] == wire


def test_one_429_is_absorbed_two_become_a_transient_error(pd: PagerDutyEmulator) -> None:
    c = client(pd)
    pd.fail_next(429, path="/v2/enqueue", retry_after=0)
    c.trigger(dedup_key="k1", summary="s", source="src", severity=Severity.P1)
    assert len(pd.events("trigger")) == 1
    pd.fail_next(429, path="/v2/enqueue", times=2)
    with pytest.raises(TransientError, match="429"):
        c.trigger(dedup_key="k2", summary="s", source="src", severity=Severity.P1)
    pd.fail_next(503, path="/v2/enqueue", times=2)
    with pytest.raises(TransientError, match="503"):
        c.resolve("k1")
    assert [e["dedup_key"] for e in pd.events()] == ["k1"]  # nothing half-delivered


def test_bad_request_is_permanent(pd: PagerDutyEmulator) -> None:
    with pytest.raises(PermanentError, match="400"):
        client(pd).trigger(dedup_key="k", summary="", source="src", severity=Severity.P1)
    with pytest.raises(PermanentError, match="255"):
        client(pd).trigger(dedup_key="k" * 300, summary="s", source="src", severity=Severity.P1)


def test_unreachable_pagerduty_is_transient(pd: PagerDutyEmulator) -> None:
    c = client(pd)
    pd.stop()
    with pytest.raises(TransientError):
        c.trigger(dedup_key="k", summary="s", source="src", severity=Severity.P1)


def test_rest_acknowledge_sends_the_from_header(pd: PagerDutyEmulator) -> None:
    c = client(pd)
    c.trigger(dedup_key="k", summary="s", source="src", severity=Severity.P0)
    incident = pd.incidents["k"]
    c.set_incident_status(incident.id, "acknowledged", from_email="alice@example.com")
    call = pd.calls_to("/incidents", method="PUT")[0]
    assert call.headers["From"] == "alice@example.com"
    assert call.body == {
        "incidents": [{"id": incident.id, "type": "incident_reference", "status": "acknowledged"}]
    }
    assert incident.status == "acknowledged"
    c.set_incident_status(incident.id, "resolved", from_email=None)  # falls back to the service user
    assert pd.calls_to("/incidents")[-1].headers["From"] == "bot@example.com"
    with pytest.raises(PermanentError, match="404"):
        c.set_incident_status("PNOPE", "resolved", from_email=None)


def test_change_event(pd: PagerDutyEmulator) -> None:
    client(pd).change_event(
        summary="scaled llm-d/vllm-decode 2 -> 4",
        source="incident-bot",
        custom_details={"approved_by": "U123"},
    )
    assert pd.calls_to("/v2/change/enqueue", ok=True)[0].body["payload"]["custom_details"] == {
        "approved_by": "U123"
    }


def test_webhook_signatures_with_rotation() -> None:
    body = b'{"event": {"id": "1"}}'
    assert verify_webhook(body, sign_webhook(body, ["new"]), ["new"])
    rotated = sign_webhook(body, ["old", "new"])
    assert rotated.count("v1=") == 2
    assert verify_webhook(body, rotated, ["new"])
    assert verify_webhook(body, rotated, ["old"])
    assert not verify_webhook(body, sign_webhook(body, ["other"]), ["new"])
    assert not verify_webhook(body + b" ", rotated, ["new"])
    assert not verify_webhook(body, None, ["new"])
    assert not verify_webhook(body, "v0=abc", ["new"])
