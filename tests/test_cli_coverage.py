"""`incident-bot coverage` and classification + runbook selection for every alert issue 15 names."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

import bot.steps  # noqa: F401  (registers the step types the runbooks use)
from bot.cli import main
from bot.plan.schema import load_runbooks
from bot.plan.select import select
from bot.severity import classify, load_policy, notify_only_rule
from tests.support.prometheus import require_binary

POLICY = load_policy("bot/policy/severity.yaml")
RUNBOOKS = list(load_runbooks(Path("runbooks")).values())
GUIDE = {"service": "llm-d", "team": "sre"}
LLMD = {"team": "inference-platform"}

# alert -> (labels its rule leaves, expected level, expected runbook or None for notify only)
CASES: dict[str, tuple[dict[str, str], str, str | None]] = {
    # the guide's six
    "LLMDServiceDown": ({**GUIDE, "severity": "critical"}, "P0", "service-down"),
    "LLMDHighErrorRate": ({**GUIDE, "severity": "critical"}, "P1", "high-error-rate"),
    "LLMDHighLatency": ({**GUIDE, "severity": "warning"}, "P2", "high-latency"),
    "LLMDGPUHighUtilization": ({**GUIDE, "severity": "warning"}, "P3", None),
    "LLMDMemoryPressure": ({**GUIDE, "severity": "critical"}, "P1", "memory-pressure"),
    "LLMDKVCacheOverflow": ({**GUIDE, "severity": "warning"}, "P2", "kv-cache-exhaustion"),
    # llm-d's 23 (LLMDHighErrorRate and LLMDMemoryPressure also below with llm-d's labels)
    "LLMDModelHighErrorRate": ({**LLMD, "severity": "critical", "model_name": "m"}, "P1", "high-error-rate"),
    "LLMDSchedulerDown": ({**LLMD, "severity": "critical", "job": "gaie-epp"}, "P0", "scheduler-down"),
    "LLMDNoHealthyBackends": ({**LLMD, "severity": "critical"}, "P0", "no-healthy-backends"),
    "LLMDExtremeTTFT": ({**LLMD, "severity": "critical", "model_name": "m"}, "P1", "high-latency"),
    "LLMDElevatedErrorRate": ({**LLMD, "severity": "warning"}, "P2", "high-error-rate"),
    "LLMDHighLatencyP99": ({**LLMD, "severity": "warning"}, "P2", "high-latency"),
    "LLMDHighTTFT": ({**LLMD, "severity": "warning", "model_name": "m"}, "P2", "high-latency"),
    "LLMDHighPreemptions": (
        {**LLMD, "severity": "warning", "pod": "ms-decode-1"},
        "P2",
        "kv-cache-exhaustion",
    ),
    "LLMDKVCacheSaturation": ({**LLMD, "severity": "warning", "pod": "p"}, "P2", "kv-cache-exhaustion"),
    "LLMDRequestQueueBuildup": ({**LLMD, "severity": "warning", "pod": "p"}, "P2", "high-latency"),
    "LLMDLowPrefixCacheHitRate": ({**LLMD, "severity": "warning"}, "P3", None),
    "LLMDGPUUnderutilization": ({**LLMD, "severity": "warning", "node": "n1"}, "P3", None),
    "LLMDPrefillDecodeImbalance": ({**LLMD, "severity": "warning"}, "P2", "prefill-decode-imbalance"),
    "LLMDPrefillQueueSaturation": (
        {**LLMD, "severity": "warning", "pod": "p"},
        "P2",
        "prefill-decode-imbalance",
    ),
    "LLMDDecodeKVCacheCritical": ({**LLMD, "severity": "critical", "pod": "p"}, "P1", "kv-cache-exhaustion"),
    "LLMDAvailabilitySLOBurn": ({**LLMD, "severity": "critical", "slo": "availability"}, "P1", "slo-burn"),
    "LLMDLatencySLOViolation": ({**LLMD, "severity": "warning", "slo": "latency"}, "P2", "high-latency"),
    "LLMDTTFTSLO": ({**LLMD, "severity": "warning", "slo": "ttft"}, "P2", "high-latency"),
    "LLMDPodRestartLoop": (
        {**LLMD, "severity": "warning", "namespace": "llm-d", "pod": "p", "container": "vllm"},
        "P2",
        "memory-pressure",
    ),
    "LLMDLowReplicaCount": ({**LLMD, "severity": "warning"}, "P2", "no-healthy-backends"),
    "LLMDPodsPending": ({**LLMD, "severity": "warning"}, "P2", "pods-pending"),
    # the inference extension's four
    "HighInferenceRequestLatencyP99": ({"severity": "warning"}, "P2", "high-latency"),
    "HighInferenceErrorRate": ({"severity": "critical", "model_name": "m"}, "P1", "high-error-rate"),
    "HighInferencePoolAvgQueueSize": ({"severity": "critical", "name": "pool"}, "P2", "high-latency"),
    "HighInferencePoolAvgKVCacheUtilization": (
        {"severity": "critical", "name": "pool"},
        "P1",
        "kv-cache-exhaustion",
    ),
    # kube-prometheus-stack workload alerts on inference pods
    "KubePodCrashLooping": (
        {"severity": "warning", "namespace": "llm-d", "pod": "p"},
        "P2",
        "memory-pressure",
    ),
    "KubePodNotReady": ({"severity": "warning", "namespace": "llm-d", "pod": "p"}, "P2", "pods-pending"),
    "KubeDeploymentReplicasMismatch": (
        {"severity": "warning", "namespace": "llm-d", "deployment": "ms-decode"},
        "P2",
        "pods-pending",
    ),
    "KubeDeploymentRolloutStuck": (
        {"severity": "warning", "namespace": "llm-d", "deployment": "ms-decode"},
        "P2",
        "rollout-stuck",
    ),
    "KubeStatefulSetReplicasMismatch": (
        {"severity": "warning", "namespace": "llm-d", "statefulset": "s"},
        "P2",
        "pods-pending",
    ),
    "KubeHpaMaxedOut": ({"severity": "warning", "namespace": "llm-d"}, "P3", None),
    "KubeContainerWaiting": ({"severity": "warning", "namespace": "llm-d", "pod": "p"}, "P2", "pods-pending"),
    "CPUThrottlingHigh": ({"severity": "info", "namespace": "llm-d", "pod": "p"}, "P3", None),
    # DCGM GPU alerts (deploy/monitoring/rules/gpu-dcgm.rules.yaml)
    "GPUXidErrors": ({"severity": "critical", "namespace": "llm-d", "pod": "p"}, "P1", "gpu-exhaustion"),
    "GPUTemperatureHigh": ({"severity": "warning", "namespace": "llm-d", "pod": "p"}, "P3", None),
    "GPUMemoryHigh": ({"severity": "warning", "namespace": "llm-d", "pod": "p"}, "P3", None),
    "GPURowRemapFailure": ({"severity": "warning", "namespace": "llm-d", "pod": "p"}, "P3", None),
    # the bot's own alerts
    "IncidentBotDown": ({"severity": "critical", "namespace": "incident-bot"}, "P1", None),
    "IncidentBotQueueBacklog": ({"severity": "warning", "namespace": "incident-bot"}, "P3", None),
    "SLOErrorBudgetFastBurn": ({"severity": "critical", "namespace": "staging"}, "P1", "slo-burn"),
    "SLOErrorBudgetSlowBurn": ({"severity": "warning", "namespace": "staging"}, "P2", "slo-burn"),
}


def _decide(name: str, labels: dict[str, str]) -> tuple[str, str, str | None, list[str]]:
    alert = {**labels, "alertname": name}
    result = classify(alert, None, POLICY)
    actionable = [alert] if notify_only_rule(alert, POLICY) is None else []
    chosen = [s.runbook.name for s in select(RUNBOOKS, actionable, result.severity)]
    return result.severity.value, result.explanation, result.notify_only, chosen


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_named_alert_gets_a_stated_level_and_a_runbook_or_notify_only(name: str) -> None:
    labels, level, runbook = CASES[name]
    severity, explanation, quiet, chosen = _decide(name, labels)
    assert severity == level, explanation
    assert "by default" not in explanation
    assert "by rule '" in explanation
    if runbook is None:
        assert quiet is not None and "notify only" in explanation
        assert chosen == []
    else:
        assert quiet is None
        assert chosen == [runbook]


def test_llmd_variants_of_shared_names_differ_by_team() -> None:
    assert _decide("LLMDMemoryPressure", {**LLMD, "severity": "warning"})[0] == "P2"
    assert _decide("LLMDMemoryPressure", {**GUIDE, "severity": "critical"})[0] == "P1"
    assert _decide("LLMDHighErrorRate", {**LLMD, "severity": "critical"})[3] == ["high-error-rate"]


def test_target_down_only_for_vllm_and_epp_jobs() -> None:
    assert _decide("TargetDown", {"job": "gaie-epp", "namespace": "llm-d"})[::3] == ("P1", ["scheduler-down"])
    assert _decide("TargetDown", {"job": "vllm-decode", "namespace": "llm-d"})[::3] == (
        "P2",
        ["no-healthy-backends"],
    )
    assert _decide("TargetDown", {"job": "node-exporter", "namespace": "monitoring"})[3] == []


def test_coverage_on_shipped_and_guide_rules_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["coverage", "--strict", "deploy/monitoring/rules", "tests/fixtures/rules/guide-rules.yaml"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "summary: 30 alerts:" in out and "0 NOT COVERED, 0 with outdated metrics" in out
    assert "LLMDServiceDown: covered, P0 by guide-service-down" in out
    assert "note: vllm:gpu_cache_usage_perc -> vllm:kv_cache_usage_perc (kept as a fallback" in out


def test_coverage_flags_every_renamed_metric_and_strict_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["coverage", "--strict", "--json", "tests/fixtures/rules/renamed-metrics.yaml"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    renames = {
        r["metric"]: r["replacement"] for a in data["files"][0]["alerts"] for r in a["renamed_metrics"]
    }
    assert renames == {
        "vllm:gpu_cache_usage_perc": "vllm:kv_cache_usage_perc",
        "vllm:gpu_prefix_cache_hits": "vllm:prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_queries": "vllm:prefix_cache_queries_total",
        "vllm:time_per_output_token_seconds_bucket": "vllm:inter_token_latency_seconds_bucket",
        "vllm:num_preemptions": "vllm:num_preemptions_total",
        "inference_model_request_error_total": "inference_objective_request_error_total",
        "vllm:num_requests_swapped": None,
    }
    assert data["summary"]["outdated"] == 6 and data["summary"]["alerts"] == 6
    assert set(data["files"][0]["alerts"][0]) >= {"alert", "status", "severity", "rule", "runbooks", "target"}


def test_coverage_gaie_alerts_covered_with_outdated_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", "tests/fixtures/rules/gaie-alerts.yaml"]) == 0
    out = capsys.readouterr().out
    assert "4 alerts: 4 covered, 0 notify only, 0 NOT COVERED, 2 with outdated metrics" in out
    assert main(["coverage", "--strict", "tests/fixtures/rules/gaie-alerts.yaml"]) == 1


def test_coverage_bad_file_exit_2_one_line_and_good_files_still_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [unclosed")
    code = main(
        ["coverage", str(bad), str(tmp_path / "missing.yaml"), "tests/fixtures/rules/guide-rules.yaml"]
    )
    captured = capsys.readouterr()
    assert code == 2
    errors = captured.err.strip().splitlines()
    assert errors[0].startswith(f"error: {bad}: not YAML") and len(errors) == 2
    assert "cannot read" in errors[1]
    assert "summary: 6 alerts:" in captured.out
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("groups:\n  - name: g\n    rules:\n      - alert: Mystery\n        expr: up == 0\n")
    assert main(["coverage", "--strict", str(unknown)]) == 1
    assert "Mystery: NOT COVERED, P3 by (default: no rule matched)" in capsys.readouterr().out


def test_coverage_reads_the_service_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    guide = "tests/fixtures/rules/guide-rules.yaml"
    # The shipped catalog is empty: the guide's rules (no namespace, no pod) need an entry.
    assert main(["coverage", "--json", guide]) == 0
    before = json.loads(capsys.readouterr().out)["files"][0]["alerts"]
    assert not [a for a in before if "from the service catalog" in a["target"]]
    assert (
        "needs a service catalog entry (matching on service, team): the rule keeps no namespace or pod label"
        in {a["target"] for a in before}
    )
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "version: 1\n"
        "services:\n"
        "  - name: chat\n"
        "    match: {service: chat}\n"
        "    namespace: chat-prod\n"
        "    decode: chat-decode\n"
        "  - name: llm-d-prod\n"
        "    match: {service: llm-d, team: {regex: 'sre|platform'}}\n"
        "    namespace: inference\n"
        "    decode: {name: ms-decode, kind: LeaderWorkerSet}\n"
        "    prefill: ms-prefill\n"
    )
    assert main(["coverage", "--json", "--catalog", str(catalog), guide]) == 0
    after = json.loads(capsys.readouterr().out)["files"][0]["alerts"]
    assert len(after) == 6
    assert {a["target"] for a in after} == {
        "from the service catalog: llm-d-prod → inference/ms-decode"
        " (entry matched on service=llm-d, team=sre)"
    }
    # Text output too; an entry without a workload leaves the workload to discovery.
    catalog.write_text(
        "version: 1\nservices:\n  - name: ns-only\n    match: {team: sre}\n    namespace: llm-d\n"
    )
    assert main(["coverage", "--catalog", str(catalog), guide]) == 0
    out = capsys.readouterr().out
    assert out.count("target: from the service catalog: ns-only → llm-d (workload by discovery)") == 6
    # A broken catalog is a bad input (exit 2, one line), like a broken policy.
    catalog.write_text("version: 1\nservices:\n  - name: x\n    match: {}\n    namespace: llm-d\n")
    assert main(["coverage", "--catalog", str(catalog), guide]) == 2
    assert capsys.readouterr().err.startswith("error: ")


LLMD_23 = [
    "LLMDHighErrorRate", "LLMDModelHighErrorRate", "LLMDSchedulerDown", "LLMDNoHealthyBackends",
    "LLMDExtremeTTFT", "LLMDElevatedErrorRate", "LLMDHighLatencyP99", "LLMDHighTTFT",
    "LLMDHighPreemptions", "LLMDKVCacheSaturation", "LLMDRequestQueueBuildup",
    "LLMDLowPrefixCacheHitRate", "LLMDGPUUnderutilization", "LLMDPrefillDecodeImbalance",
    "LLMDPrefillQueueSaturation", "LLMDDecodeKVCacheCritical", "LLMDAvailabilitySLOBurn",
    "LLMDLatencySLOViolation", "LLMDTTFTSLO", "LLMDPodRestartLoop", "LLMDMemoryPressure",
    "LLMDLowReplicaCount", "LLMDPodsPending",
]  # fmt: skip
KUBE_8 = [
    "KubePodCrashLooping", "KubePodNotReady", "KubeDeploymentReplicasMismatch",
    "KubeDeploymentRolloutStuck", "KubeStatefulSetReplicasMismatch", "KubeHpaMaxedOut",
    "KubeContainerWaiting", "TargetDown",
]  # fmt: skip
LLMD_RULES = Path("tests/fixtures/rules/llmd-prometheusrule.yaml")
KUBE_RULES = Path("tests/fixtures/rules/kube-prometheus.yaml")


def _coverage_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    code = main(["coverage", "--strict", "--json", str(path)])
    data = json.loads(capsys.readouterr().out)
    assert code == 0, json.dumps(data["summary"])
    assert data["errors"] == [] and data["summary"]["not_covered"] == 0 and data["summary"]["outdated"] == 0
    return {a["alert"]: a for a in data["files"][0]["alerts"]}


def _acts_or_notifies(row: dict[str, object]) -> None:
    assert row["severity"] in {"P0", "P1", "P2", "P3"}
    if row["status"] == "notify only":
        assert row["runbooks"] == [] and row["notify_only"] and "notify only" in str(row["explanation"])
    else:
        assert row["status"] == "covered" and row["runbooks"], row


def test_coverage_strict_on_llmd_prometheusrule(capsys: pytest.CaptureFixture[str]) -> None:
    manifest = yaml.safe_load(LLMD_RULES.read_text())
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1" and manifest["kind"] == "PrometheusRule"
    rules = [r for g in manifest["spec"]["groups"] for r in g["rules"]]
    assert all(r["labels"]["team"] == "inference-platform" for r in rules)
    assert {r["labels"]["severity"] for r in rules} == {"critical", "warning"}
    rows = _coverage_json(LLMD_RULES, capsys)
    assert sorted(rows) == sorted(LLMD_23)
    for name, row in rows.items():
        _acts_or_notifies(row)
        assert row["rule"], f"{name} fell through to the default level"
    # The guide's levels where llm-d's rules say the same thing.
    assert rows["LLMDSchedulerDown"]["severity"] == "P0" and rows["LLMDNoHealthyBackends"]["severity"] == "P0"
    assert rows["LLMDHighErrorRate"]["runbooks"] == ["high-error-rate"]
    assert rows["LLMDLowPrefixCacheHitRate"]["status"] == "notify only"
    assert rows["LLMDPodsPending"]["runbooks"] == ["pods-pending"]


def test_coverage_strict_on_kube_prometheus_rules(capsys: pytest.CaptureFixture[str]) -> None:
    rules = [r for g in yaml.safe_load(KUBE_RULES.read_text())["groups"] for r in g["rules"]]
    assert all(set(r["labels"]) == {"severity"} for r in rules)  # the rest comes from the series
    rows = _coverage_json(KUBE_RULES, capsys)
    assert sorted(rows) == sorted(KUBE_8)
    for name, row in rows.items():
        _acts_or_notifies(row)
        if name != "TargetDown":
            assert row["rule"], f"{name} fell through to the default level"
    assert rows["KubeDeploymentRolloutStuck"]["runbooks"] == ["rollout-stuck"]
    assert rows["KubeHpaMaxedOut"]["status"] == "notify only"
    # TargetDown's level depends on the `job` its series carry (vLLM / EPP / anything else): the static
    # labels alone say nothing, so the report names the run-time rules instead of a silent P3.
    variants = " | ".join(map(str, rows["TargetDown"]["variants"]))
    assert "epp-target-down" in variants and "vllm-target-down" in variants


def test_fixture_rule_files_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    manifest = yaml.safe_load(LLMD_RULES.read_text())
    extracted = tmp_path / "llmd-rules.yaml"
    extracted.write_text(yaml.safe_dump({"groups": manifest["spec"]["groups"]}))
    plain = [KUBE_RULES, *sorted(Path("tests/fixtures/rules").glob("*.yaml"))]
    plain = [p for p in dict.fromkeys(plain) if p != LLMD_RULES]
    for path in [*plain, extracted]:
        proc = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, f"{path}: {proc.stdout}{proc.stderr}"
    assert (
        "SUCCESS: 23 rules found"
        in subprocess.run(
            [promtool, "check", "rules", str(extracted)], capture_output=True, text=True, check=True
        ).stdout
    )
