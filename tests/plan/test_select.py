"""`incident-bot runbook plan`: each shipped runbook against a realistic alert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from tests.support.payloads import alert, notification

# runbook -> (alert name, extra labels, expected severity, step ids that act, {step: runs})
CASES: dict[str, tuple[str, dict[str, str], str, set[str], dict[str, str]]] = {
    "high-latency": (
        "VLLMHighLatency",
        {},
        "P2",
        {"scale_decode", "scale_prefill"},
        {"p95": "yes", "scale_decode": "depends", "verify": "yes"},
    ),
    "service-down": (
        "VLLMServiceDown",
        {"severity": "critical"},
        "P0",
        {"abort_canary", "rollback", "restart"},
        {"abort_canary": "depends", "rollback": "depends", "restart": "depends", "test_completion": "yes"},
    ),
    "gpu-exhaustion": ("GPUMemoryExhausted", {}, "P1", {"replace_oom"}, {"replace_oom": "depends"}),
    "kv-cache-exhaustion": ("VLLMKVCacheExhausted", {}, "P1", {"scale_out"}, {"scale_out": "depends"}),
    "memory-pressure": ("KubePodOOMKilled", {}, "P3", {"replace"}, {"replace": "depends"}),
    "high-error-rate": (
        "VLLMHighErrorRate",
        {"severity": "critical"},
        "P1",
        {"abort_canary", "rollback"},
        {"abort_canary": "depends", "rollback": "depends"},
    ),
    "low-cache-hit": ("VLLMLowPrefixCacheHitRate", {}, "P3", set(), {"advice": "yes"}),
    "model-loading": ("VLLMModelLoading", {"model_name": "llama"}, "P3", set(), {"warmup": "yes"}),
}


def run_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, labels: dict[str, str]) -> Any:
    body = notification(
        [alert(name, deployment="vllm-decode", **labels)], group_key=f'{{}}:{{alertname="{name}"}}'
    )
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(body))
    assert main(["runbook", "plan", "--alert", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("runbook", sorted(CASES))
def test_plan_of_each_shipped_runbook(
    runbook: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, labels, severity, acting, runs = CASES[runbook]
    out = run_plan(tmp_path, capsys, name, labels)
    assert out["severity"] == severity
    assert [p["runbook"] for p in out["plans"]] == [runbook]
    plan = out["plans"][0]
    assert plan["parameters"]["namespace"] == "llm-d"
    assert plan["escalation"]
    steps = {s["id"]: s for s in plan["steps"]}
    assert {s for s, v in steps.items() if v["would_act"]} == acting
    for step_id, fate in runs.items():
        assert steps[step_id]["runs"] == fate, steps[step_id]
    # Placeholders that read only parameters are resolved in the plan.
    assert all("${params." not in json.dumps(s["params"]) for s in plan["steps"])


def test_plan_shows_approval_gates_by_severity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p1 = run_plan(tmp_path, capsys, "GPUMemoryExhausted", {})["plans"][0]
    assert {s["id"]: s["approval"] for s in p1["steps"]}["replace_oom"] is True
    p3 = run_plan(tmp_path, capsys, "KubePodOOMKilled", {})["plans"][0]
    assert {s["id"]: s["approval"] for s in p3["steps"]}["replace"] is False


def test_plan_text_and_no_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.json"
    labels = {"alertname": "VLLMServiceDown", "namespace": "llm-d", "deployment": "vllm-decode"}
    path.write_text(json.dumps({"labels": labels}))
    assert main(["runbook", "plan", "--alert", str(path)]) == 0
    text = capsys.readouterr().out
    assert "runbook service-down (severity P0)" in text
    assert "abort_canary       argo.abort           ACTS  if steps.rollout_state.canary_in_progress" in text
    assert "rollback           k8s.rollout_undo     ACTS  if not steps.rollout_state.is_rollout and" in text
    path.write_text(json.dumps({"labels": {"alertname": "SomethingElse"}}))
    assert main(["runbook", "plan", "--alert", str(path)]) == 0
    assert "no runbook matches" in capsys.readouterr().out
    # Without a deployment label the plan does not guess one (the shipped runbooks have no default target).
    path.write_text(json.dumps({"labels": {"alertname": "VLLMServiceDown", "namespace": "llm-d"}}))
    assert main(["runbook", "plan", "--alert", str(path)]) == 0
    out = capsys.readouterr().out
    assert "runbook service-down: cannot start" in out and "no value for deployment" in out
    assert "vllm-decode" not in out


def test_plan_takes_the_target_from_the_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The guide's LLMDHighLatency has no namespace: the plan uses the catalog, as a run would."""
    path = tmp_path / "a.json"
    guide = {"alertname": "LLMDHighLatency", "severity": "warning", "service": "llm-d", "team": "sre"}
    path.write_text(json.dumps({"labels": guide}))
    assert main(["runbook", "plan", "--alert", str(path), "--json"]) == 0
    (parked,) = json.loads(capsys.readouterr().out)["plans"]
    assert parked["runbook"] == "high-latency" and "no value for namespace" in parked["error"]
    assert "the catalog is empty" in parked["error"] and "waits for a person" in parked["error"]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "version: 1\nservices:\n  - name: prod\n    match: {service: llm-d}\n"
        "    namespace: inference\n    decode: ms-decode\n    prefill: ms-prefill\n"
    )
    assert main(["runbook", "plan", "--alert", str(path), "--catalog", str(catalog), "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)["plans"]
    assert "error" not in item, item
    assert item["parameters"]["namespace"] == "inference"
    assert item["parameters"]["decode_deployment"] == "ms-decode"
    assert item["parameters"]["prefill_deployment"] == "ms-prefill"
    assert item["target"]["source"] == "catalog entry 'prod' (service=llm-d)"
    steps = {s["id"]: s for s in item["steps"]}
    assert steps["scale_decode"]["params"]["deployment"] == "ms-decode"
    assert main(["runbook", "plan", "--alert", str(path), "--catalog", str(catalog)]) == 0
    assert "  target: inference/ms-decode via catalog entry 'prod' (service=llm-d)" in capsys.readouterr().out
