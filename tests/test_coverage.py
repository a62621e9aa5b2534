"""bot.coverage: the metric-rename check (the CLI is not built yet)."""

from __future__ import annotations

import bot.steps  # noqa: F401  (registers the shipped step types the runbooks use)
from bot.coverage import Rename, renamed_metrics


def test_every_renamed_metric_is_flagged_with_its_replacement() -> None:
    expr = (
        "max(vllm:gpu_cache_usage_perc) + rate(vllm:gpu_prefix_cache_hits[5m])"
        " + rate(vllm:gpu_prefix_cache_queries[5m]) + rate(vllm:num_preemptions[5m])"
        " + histogram_quantile(0.9, rate(vllm:time_per_output_token_seconds_bucket[5m]))"
        " + rate(inference_model_request_total[5m])"
    )
    assert renamed_metrics(expr) == [
        Rename("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"),
        Rename("vllm:gpu_prefix_cache_hits", "vllm:prefix_cache_hits_total"),
        Rename("vllm:gpu_prefix_cache_queries", "vllm:prefix_cache_queries_total"),
        Rename("vllm:num_preemptions", "vllm:num_preemptions_total"),
        Rename("vllm:time_per_output_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket"),
        Rename("inference_model_request_total", "inference_objective_request_total"),
    ]


def test_current_names_are_not_flagged_whole_identifiers_only() -> None:
    expr = (
        "rate(vllm:num_preemptions_total[5m]) + max(vllm:kv_cache_usage_perc)"
        " + rate(inference_objective_request_total[5m]) + my_inference_model_thing"
    )
    assert renamed_metrics(expr) == []


def test_removed_metric_has_no_replacement() -> None:
    assert renamed_metrics("vllm:cpu_cache_usage_perc > 0") == [Rename("vllm:cpu_cache_usage_perc", None)]


def test_parse_rules_reads_shipped_files_and_manifests() -> None:
    from pathlib import Path

    import pytest

    from bot.coverage import parse_rules

    shipped = parse_rules(Path("deploy/monitoring/rules/incident-bot.rules.yaml").read_text())
    assert "IncidentBotDown" in [r.alert for r in shipped]
    assert all(r.labels.get("severity") for r in shipped)
    manifest = (
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nspec:\n  groups:\n"
        "  - name: g\n    rules:\n    - alert: A\n      expr: up == 0\n      labels: {severity: critical}\n"
    )
    assert [(r.group, r.alert) for r in parse_rules("---\n" + manifest + "---\n{}\n")] == [("g", "A")]
    assert len(parse_rules(Path("tests/fixtures/rules/guide-rules.yaml").read_text())) == 6
    with pytest.raises(ValueError, match="not YAML"):
        parse_rules("groups: [unclosed")
    with pytest.raises(ValueError, match="no rule groups"):
        parse_rules("kind: ConfigMap\n")


def test_target_resolution_from_by_clause_or_catalog() -> None:
    from bot.coverage import AlertRule, target_resolution

    kept = AlertRule("g", "A", "sum by (namespace, deployment) (x) > 0", {}, {})
    lost = AlertRule("g", "B", "sum by (namespace) (x) > 0", {}, {})
    assert target_resolution(kept) == "from labels namespace/deployment"
    assert target_resolution(lost).startswith("namespace from labels; the workload needs a service catalog")
    pod = AlertRule("g", "C", "sum by (namespace, pod) (x) > 0", {}, {})
    assert target_resolution(pod).startswith("by discovery from labels namespace/pod")
    gone = AlertRule("g", "D", "sum(x) > 0", {"team": "sre"}, {})
    assert target_resolution(gone) == (
        "needs a service catalog entry (matching on team): the rule keeps no namespace or pod label"
    )
    suffix = AlertRule("g", "E", "count(up == 0) BY (job, namespace, deployment) > 1", {}, {})
    assert target_resolution(suffix) == "from labels namespace/deployment"
    # the lead can feed the real catalog: a lookup on the static labels wins
    assert target_resolution(gone, lambda labels: f"llm-d/ms-decode ({labels['team']})") == (
        "from the service catalog: llm-d/ms-decode (sre)"
    )


def test_shipped_rules_all_get_a_severity_under_the_shipped_policy() -> None:
    from pathlib import Path

    from bot.coverage import evaluate, parse_rules
    from bot.plan.schema import load_runbooks
    from bot.settings import get_settings
    from bot.severity import load_policy

    settings = get_settings()
    policy = load_policy(settings.severity_policy)
    runbooks = list(load_runbooks(settings.runbooks_dir).values())
    for path in sorted(Path("deploy/monitoring/rules").glob("*.yaml")):
        for rule in parse_rules(path.read_text()):
            result = evaluate(rule, policy, runbooks)
            assert result.classification.severity.value in {"P0", "P1", "P2", "P3"}
            # The one old name shipped today is the deliberate fallback `kv_cache_usage_perc or
            # gpu_cache_usage_perc` (vLLM < 0.9.2), and it is flagged with its replacement.
            expected = (
                (Rename("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc", fallback=True),)
                if "vllm:gpu_cache_usage_perc" in rule.expr
                else ()
            )
            assert result.renames == expected
            assert result.outdated == ()  # a fallback beside its replacement still fires: not outdated
            assert result.status in {"covered", "notify only"}, (rule.alert, result.why)
