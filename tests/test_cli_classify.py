"""`incident-bot classify` without Prometheus: input shapes, output, exit codes."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bot.cli_classify import EXIT_BAD_INPUT, EXIT_OK, HttpxPrometheusSource, add_classify_parser, read_alerts
from bot.errors import PermanentError, TransientError

FIRING_ENDS = "0001-01-01T00:00:00Z"


def _alert(**labels: str) -> dict[str, object]:
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "x"},
        "startsAt": "2026-11-26T10:00:00Z",
        "endsAt": FIRING_ENDS,
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": "abc123",
    }


def _webhook(*alerts: dict[str, object]) -> dict[str, object]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="X"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "incident-bot",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": list(alerts),
        "notification_reason": "new alerts",  # newer Alertmanager field: must be accepted
    }


def _run(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="incident-bot")
    add_classify_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    code = args.handler(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _write(tmp_path: Path, data: object, name: str = "alert.json") -> str:
    file = tmp_path / name
    file.write_text(json.dumps(data))
    return str(file)


def test_single_alert_labels_only(tmp_path: Path) -> None:
    code, out, err = _run(["classify", "--alert", _write(tmp_path, _alert(alertname="KubeNodeNotReady"))])
    assert (code, err) == (EXIT_OK, "")
    lines = out.splitlines()
    assert lines[0] == "severity: P2 (medium; #incidents-medium; no page)"
    assert lines[1] == "rule: single-node-failure"
    assert lines[2].startswith(
        "explanation: P2 by rule 'single-node-failure': alertname=\"KubeNodeNotReady\""
    )
    assert "classified on labels alone" in lines[2]
    assert lines[3] == "signals: none: no --prometheus given, classified on labels alone"


def test_webhook_group_takes_the_most_severe_alert(tmp_path: Path) -> None:
    body = _webhook(
        _alert(alertname="InferencePoolCapacityLow", namespace="llm-d"),
        _alert(alertname="VLLMAllReplicasDown", namespace="llm-d"),
        _alert(alertname="KubeNodeNotReady", node="n1"),
    )
    code, out, _ = _run(["classify", "--alert", _write(tmp_path, body)])
    assert code == EXIT_OK
    assert out.startswith('alert 1/3 InferencePoolCapacityLow{namespace="llm-d"}: P3 by rule')
    assert "alert 2/3 VLLMAllReplicasDown" in out
    assert "severity: P0 (critical; #incidents-critical; pages)" in out
    assert "rule: outage-alert" in out


def test_json_output(tmp_path: Path) -> None:
    body = _webhook(_alert(alertname="VLLMKVCacheExhausted", namespace="dev"), _alert(alertname="Watchdog"))
    code, out, _ = _run(["classify", "--json", "--alert", _write(tmp_path, body)])
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["severity"] == "P1"
    assert data["rule"] == "gpu-exhaustion-alert"
    assert data["labels_only"] is True
    assert data["prometheus"] is None
    assert data["level"] == {
        "name": "high",
        "slack_channel": "#incidents-high",
        "page": True,
        "notify": ["oncall-sre", "service-owner"],
        "response_seconds": 900.0,
        "escalation_seconds": 1800.0,
    }
    assert [a["severity"] for a in data["alerts"]] == ["P1", "P3"]
    assert data["alerts"][1]["rule"] is None
    assert data["alerts"][0]["signals"] is None


def test_custom_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    shipped = Path(__file__).resolve().parents[1] / "bot" / "policy" / "severity.yaml"
    policy.write_text(shipped.read_text().replace("default_level: P3", "default_level: P2"))
    code, out, _ = _run(
        ["classify", "--policy", str(policy), "--alert", _write(tmp_path, _alert(alertname="X"))]
    )
    assert code == EXIT_OK
    assert "severity: P2" in out
    assert "P2 by default: no rule matched" in out


def test_policy_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.settings import get_settings

    policy = tmp_path / "p.yaml"
    policy.write_text("version: 2\n")
    monkeypatch.setenv("SEVERITY_POLICY", str(policy))
    get_settings.cache_clear()
    try:
        code, _, err = _run(["classify", "--alert", _write(tmp_path, _alert(alertname="X"))])
    finally:
        get_settings.cache_clear()
    assert code == EXIT_BAD_INPUT
    assert f"{policy}:1: version: Input should be less than or equal to 1" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"status": "firing"}', "expected a webhook body with 'alerts' or an alert with 'labels'"),
        ('{"alerts": []}', "alerts: expected a non-empty list"),
        ('{"alerts": [{"labels": "x"}]}', "alerts[0].labels: expected an object"),
        (
            '{"alerts": [{"labels": {}, "annotations": []}]}',
            "alerts[0]: alert labels and annotations must be",
        ),
    ],
)
def test_bad_alert_files(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "bad.json"
    file.write_text(content)
    code, out, err = _run(["classify", "--alert", str(file)])
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert err.startswith(f"error: {file}: ")
    assert message in err


def test_missing_alert_file(tmp_path: Path) -> None:
    code, _, err = _run(["classify", "--alert", str(tmp_path / "nope.json")])
    assert code == EXIT_BAD_INPUT
    assert "cannot read" in err and "nope.json" in err


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(_alert(alertname="LLMDGatewayDown"))))
    code, out, _ = _run(["classify", "--alert", "-"])
    assert code == EXIT_OK
    assert "severity: P0" in out


def test_alert_label_values_are_strings() -> None:
    [alert] = read_alerts(json.dumps({"labels": {"alertname": "X", "replicas": 3}}))
    assert alert.labels == {"alertname": "X", "replicas": "3"}


# ---- the httpx SignalSource stand-in, against canned Prometheus answers -------------------------


def _source(handler: Callable[[httpx.Request], httpx.Response]) -> HttpxPrometheusSource:
    return HttpxPrometheusSource(
        "http://prom.test/", client=httpx.Client(transport=httpx.MockTransport(handler))
    )


def _vector(*values: str) -> dict[str, object]:
    result = [{"metric": {"pod": f"p{i}"}, "value": [1.0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_vector("12.5"), 12.5),
        (_vector("0.2", "0.9", "NaN"), 0.9),  # several series: the largest
        (_vector(), None),
        (_vector("NaN"), None),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}, 3.0),
    ],
)
def test_httpx_source_reduces_results(body: dict[str, object], expected: float | None) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    assert _source(handler).query_value('up{namespace="a"}') == expected
    assert seen[0].url.path == "/api/v1/query"
    assert seen[0].url.params["query"] == 'up{namespace="a"}'


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, {"status": "error", "error": "busy"}, TransientError),
        (429, {}, TransientError),
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, PermanentError),
        (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, PermanentError),
        (
            200,
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
            PermanentError,
        ),
    ],
)
def test_httpx_source_errors_are_the_projects(
    status: int, body: dict[str, object], error: type[Exception]
) -> None:
    source = _source(lambda _request: httpx.Response(status, json=body))
    with pytest.raises(error):
        source.query_value("up")


def test_httpx_source_network_error_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransientError, match="prometheus query failed"):
        _source(handler).query_value("up")
