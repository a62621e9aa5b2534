"""Alert rules (promtool check + unit tests), PrometheusRules, dashboard, Alertmanager config."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, KUBERNETES_VERSION, kustomize, run, tool

MONITORING = DEPLOY / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.rules.yaml"))
SERVING_ALERTS = {
    "VLLMServiceDown",
    "VLLMHighErrorRate",
    "VLLMHighLatency",
    "VLLMHighQueueDepth",
    "VLLMKVCacheExhausted",
    "GPUMemoryExhausted",
    "VLLMPreemptionStorm",
    "GPUHighUtilization",
    "SLOErrorBudgetFastBurn",
    "SLOErrorBudgetSlowBurn",
}
BOT_METRICS = {
    "incident_bot_webhooks_received_total",
    "incident_bot_enqueue_seconds_bucket",
    "incident_bot_queue_length",
    "incident_bot_tasks_total",
    "incident_bot_notifications_total",
    "incident_bot_circuit_breaker_open",
    "incident_bot_redis_up",
}


def alerts(path: Path) -> dict[str, dict[str, Any]]:
    """Alerting rules of a plain rules file by name."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_plain_rule_files_pass_promtool_check() -> None:
    assert len(RULE_FILES) == 3
    run([tool("promtool"), "check", "rules", *map(str, RULE_FILES)])


def test_prometheus_rules_carry_the_same_groups_and_pass_promtool(tmp_path: Path) -> None:
    objects = kustomize(MONITORING)
    rules = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PrometheusRule"}
    assert set(rules) == {"llmd-serving", "incident-bot", "gpu-dcgm"}
    for path in RULE_FILES:
        name = path.name.removesuffix(".rules.yaml")
        obj = rules[name]
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert obj["metadata"]["namespace"] == "monitoring"
        assert obj["spec"]["groups"] == yaml.safe_load(path.read_text())["groups"]
        extracted = tmp_path / f"{name}.yaml"
        extracted.write_text(yaml.safe_dump({"groups": obj["spec"]["groups"]}))
        run([tool("promtool"), "check", "rules", str(extracted)])


def test_custom_resources_are_structurally_sound() -> None:
    # kubernetes-validate ships no CRD schemas: check what the Operator needs by hand.
    for obj in kustomize(MONITORING):
        if obj["kind"] == "ConfigMap":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            continue
        assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["kind"]
        assert obj["kind"] in {"PrometheusRule", "ServiceMonitor"}
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
        if obj["kind"] == "ServiceMonitor":
            spec = obj["spec"]
            assert spec["namespaceSelector"] == {"matchNames": ["incident-bot"]}
            assert spec["endpoints"][0]["port"] == "http"
            assert spec["endpoints"][0]["path"] == "/metrics"
            continue
        for group in obj["spec"]["groups"]:
            assert set(group) <= {"name", "interval", "rules"} and group["rules"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule)
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}


def test_serving_alerts_are_all_there_with_severity_and_namespace() -> None:
    serving = alerts(MONITORING / "rules" / "llmd-serving.rules.yaml")
    assert set(serving) == SERVING_ALERTS
    for path in RULE_FILES:
        for name, rule in alerts(path).items():
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
            # Grouping (alertname, namespace) and the policy's namespace rules need the label kept.
            for aggregation in re.findall(r"\b(?:sum|max|min|avg|count)\s+by\s*\(([^)]*)\)", rule["expr"]):
                assert "namespace" in aggregation, f"{name} aggregates namespace away: by ({aggregation})"
            assert "summary" in rule["annotations"], name


def test_rules_use_the_real_metric_names() -> None:
    serving = (MONITORING / "rules" / "llmd-serving.rules.yaml").read_text()
    for metric in (
        "inference_objective_request_error_total",
        "inference_objective_request_total",
        "vllm:request_success_total",
        "inference_pool_ready_pods",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:num_preemptions_total",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
    ):
        assert metric in serving, metric
    bot = (MONITORING / "rules" / "incident-bot.rules.yaml").read_text()
    for metric in BOT_METRICS:
        assert metric in bot, metric


def test_burn_rate_thresholds_match_bot_slo() -> None:
    serving = alerts(MONITORING / "rules" / "llmd-serving.rules.yaml")
    fast, slow = serving["SLOErrorBudgetFastBurn"]["expr"], serving["SLOErrorBudgetSlowBurn"]["expr"]
    assert "rate1h > (14.4 * 0.001)" in fast and "rate5m > (14.4 * 0.001)" in fast
    assert "rate6h > (6 * 0.001)" in slow and "rate30m > (6 * 0.001)" in slow


def test_rule_unit_tests_pass() -> None:
    # Burn-rate page and ticket alerts fire on burning series and not on healthy or recovered ones;
    # VLLMHighQueueDepth fires after its `for`; the bot's backlog and Redis alerts (see the files).
    tests = sorted((MONITORING / "tests").glob("*_test.yaml"))
    assert {t.name for t in tests} >= {"serving_test.yaml", "incident_bot_test.yaml", "gpu_dcgm_test.yaml"}
    out = run([tool("promtool"), "test", "rules", *map(str, tests)])
    assert "FAILED" not in out.stdout + out.stderr


def test_plain_prometheus_example_config() -> None:
    run([tool("promtool"), "check", "config", "prometheus.example.yml"], cwd=MONITORING / "prometheus")


def test_alertmanager_config() -> None:
    path = DEPLOY / "alertmanager" / "incident-bot-receiver.yaml"
    run([tool("amtool"), "check-config", str(path)])
    config = yaml.safe_load(path.read_text())
    route = config["route"]
    assert route["group_by"] == ["alertname", "namespace"]
    bot = next(r for r in config["receivers"] if r["name"] == route["receiver"])
    hook = bot["webhook_configs"][0]
    assert hook["send_resolved"] is True
    assert hook["url"] == "http://incident-bot.incident-bot.svc:8080/alertmanager"
    assert hook["http_config"]["authorization"]["credentials_file"]
    # The bot's own alerts go elsewhere.
    fallback = route["routes"][0]
    assert fallback["receiver"] != route["receiver"]
    assert fallback["matchers"] == ['alertname =~ "IncidentBot.*"']


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    out = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        out += [(panel["title"], target["expr"]) for target in panel["targets"]]
    return out


def test_dashboard_is_valid_json_with_golden_signals() -> None:
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert board["uid"] and board["title"]
    rows = {p["title"] for p in board["panels"] if p["type"] == "row"}
    assert rows == {"Traffic", "Errors", "Latency", "Saturation"}
    text = " ".join(expr for _, expr in dashboard_exprs())
    assert "histogram_quantile" in text and "incident_bot_enqueue_seconds_bucket" in text
    for metric in (
        "incident_bot_webhooks_received_total",
        "incident_bot_queue_length",
        "incident_bot_redis_up",
    ):
        assert metric in text
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    # promtool has no offline "check expression"; recording rules are parsed the same way.
    rules = [
        {
            "record": f"dashboard:panel_{i}",
            "expr": expr.replace("$__rate_interval", "5m").replace('"$namespace"', '"incident-bot"'),
        }
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    assert all("$" not in r["expr"] for r in rules), "an unsubstituted Grafana variable"
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([tool("promtool"), "check", "rules", str(path)])


@pytest.mark.parametrize("name", ["kubectl", "promtool", "amtool"])
def test_missing_tool_names_the_package(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        pytest.fail.Exception, match=r"is not installed: install .*(Debian package|kubectl >= 1\.27)"
    ):
        tool(name)
