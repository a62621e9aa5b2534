"""CLI: maintenance windows, the kill switch, postmortem and report."""

from __future__ import annotations

import json

import pytest
import redis

from bot.cli import main
from bot.settings import Settings
from bot.storage.controls import AutomationControls
from bot.storage.incidents import IncidentStore
from tests.support.lifecycle import firing, resolved, send


def test_maintenance_add_list_remove(
    redis_client: redis.Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["maintenance", "add", "--matcher", "namespace=staging", "--matcher", "alertname=~VLLM.*"]
    assert main([*argv, "--duration", "2h", "--reason", "cluster upgrade", "--by", "alice"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("added MW-1 ") and "[namespace=staging, alertname=~VLLM.*]" in out
    assert "cluster upgrade (by alice)" in out
    assert main(["maintenance", "list", "--json"]) == 0
    (window,) = json.loads(capsys.readouterr().out)
    assert window["id"] == "MW-1" and window["created_by"] == "alice"
    assert window["matchers"] == ["namespace=staging", "alertname=~VLLM.*"]
    controls = AutomationControls(redis_client, settings.key_prefix)
    assert controls.in_maintenance({"namespace": "staging", "alertname": "VLLMDown"}) == "cluster upgrade"
    assert main(["maintenance", "list"]) == 0
    assert "MW-1" in capsys.readouterr().out
    assert main(["maintenance", "remove", "mw-1"]) == 0
    assert capsys.readouterr().out == "removed MW-1\n"
    assert controls.in_maintenance({"namespace": "staging", "alertname": "VLLMDown"}) is None
    assert main(["maintenance", "remove", "MW-1"]) == 1
    assert "no maintenance window 'MW-1'" in capsys.readouterr().err
    assert main(["maintenance", "list"]) == 0
    assert capsys.readouterr().out == "no maintenance windows\n"


def test_maintenance_add_refuses_bad_input(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["maintenance", "add", "--duration", "1h", "--reason", "x"]
    assert main([*base, "--matcher", "namespace"]) == 1
    assert "bad matcher 'namespace'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["maintenance", "add", "--matcher", "a=b", "--duration", "soon", "--reason", "x"])
    assert info.value.code == 2
    assert "expected a duration" in capsys.readouterr().err


def test_automation_off_on_status(
    redis_client: redis.Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    other = redis.Redis.from_url(settings.redis_url)  # what another worker sees
    try:
        worker_view = AutomationControls(other, settings.key_prefix)
        assert main(["automation", "off"]) == 1
        assert "needs --reason" in capsys.readouterr().err
        assert worker_view.automation_enabled()
        assert main(["automation", "off", "--reason", "bad rollout", "--by", "alice"]) == 0
        assert capsys.readouterr().out.startswith("automation is OFF (set by alice at ")
        assert worker_view.automation_enabled() is False
        assert main(["automation", "status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["enabled"] is False and status["reason"] == "bad rollout"
        assert main(["automation", "on", "--by", "alice"]) == 0
        assert capsys.readouterr().out.startswith("automation is ON")
        assert worker_view.automation_enabled() is True
    finally:
        other.close()


def test_postmortem_and_report_commands(store: IncidentStore, capsys: pytest.CaptureFixture[str]) -> None:
    send(store, firing(severity="critical"))
    store.apply_event("INC-0001", "ack", actor="alice")
    send(store, resolved())
    assert main(["incidents", "postmortem", "inc-0001"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Postmortem (draft): INC-0001 VLLMHighQueueDepth")
    assert "## Actions\n\n- none recorded\n\n## Open questions\n" in text
    assert main(["incidents", "postmortem", "INC-0404"]) == 1
    assert "no incident 'INC-0404'" in capsys.readouterr().err
    assert main(["report", "--since", "7d", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["incidents"] == 1 and report["by_severity"]["P1"]["resolved"] == 1
    assert report["by_severity"]["P1"]["acknowledged"] == 1
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "P1       1     1        1" in out and "flapping groups: 0" in out
