"""Severity policy: the shipped file, loading errors, query templating and classification."""

from __future__ import annotations

import math
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import ConfigError, TransientError
from bot.settings import Settings
from bot.severity import (
    AlertView,
    Classification,
    Severity,
    SeverityPolicy,
    classify,
    fetch_signals,
    load_policy,
    most_severe,
    most_severe_classification,
    parse_duration,
    parse_policy,
    promql_string,
    query_placeholders,
    render_query,
    signal_queries,
)

SHIPPED = Path(__file__).resolve().parents[1] / "bot" / "policy" / "severity.yaml"


@pytest.fixture(scope="module")
def policy() -> SeverityPolicy:
    return load_policy(SHIPPED)


# ---- the shipped policy -------------------------------------------------------------------------


def test_settings_point_at_the_shipped_policy_and_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().severity_policy.resolve() == SHIPPED
    own = tmp_path / "mine.yaml"
    monkeypatch.setenv("SEVERITY_POLICY", str(own))
    assert Settings().severity_policy == own


@pytest.mark.parametrize(
    ("level", "response", "escalation", "channel", "pages", "notify", "updates"),
    [
        ("P0", 5, 15, "#incidents-critical", True, {"oncall-sre", "service-owner", "incident-commander"}, 30),
        ("P1", 15, 30, "#incidents-high", True, {"oncall-sre", "service-owner"}, 30),
        ("P2", 30, 120, "#incidents-medium", False, {"oncall-sre"}, None),
        ("P3", 120, 480, "#incidents-low", False, {"service-owner"}, None),
    ],
)
def test_shipped_levels_follow_the_sre_guide(
    policy: SeverityPolicy,
    level: str,
    response: int,
    escalation: int,
    channel: str,
    pages: bool,
    notify: set[str],
    updates: int | None,
) -> None:
    spec = policy.level(Severity(level))
    assert spec.response == timedelta(minutes=response)
    assert spec.escalation == timedelta(minutes=escalation)
    assert spec.slack_channel == channel
    assert spec.page is pages
    assert set(spec.notify) == notify
    assert spec.status_update_every == (None if updates is None else timedelta(minutes=updates))


def test_shipped_policy_uses_real_vllm_and_llmd_metric_names(policy: SeverityPolicy) -> None:
    text = " ".join(s.query for s in policy.signals.values())
    for metric in (
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:request_success_total",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",  # pre-0.33 name, still accepted
        "inference_objective_request_error_total",
        "inference_objective_request_total",
        "inference_pool_ready_pods",
    ):
        assert metric in text
    assert policy.default_level is Severity.P3


# ---- classification on labels alone ------------------------------------------------------------

ALERTS: list[tuple[dict[str, str], str, str | None]] = [
    # (labels, expected level, expected rule)
    (
        {"alertname": "VLLMAllReplicasDown", "namespace": "llm-d", "severity": "critical"},
        "P0",
        "outage-alert",
    ),
    ({"alertname": "InferencePoolNoReadyPods", "namespace": "team-a"}, "P0", "outage-alert"),
    (
        {"alertname": "TargetDown", "service": "llm-d-inference-gateway", "namespace": "llm-d"},
        "P0",
        "gateway-target-down",
    ),
    # TargetDown of some other service is not an outage; warning severity → default.
    ({"alertname": "TargetDown", "service": "node-exporter", "severity": "warning"}, "P3", None),
    (
        {"alertname": "VLLMHighErrorRate", "namespace": "prod-eu", "severity": "critical"},
        "P1",
        "critical-alert",
    ),
    # critical outside production namespaces: regex is anchored, "staging-prod" does not match.
    ({"alertname": "VLLMHighErrorRate", "namespace": "staging-prod", "severity": "critical"}, "P3", None),
    ({"alertname": "VLLMKVCacheExhausted", "namespace": "dev"}, "P1", "gpu-exhaustion-alert"),
    ({"alertname": "KubeNodeNotReady", "node": "gpu-node-3"}, "P2", "single-node-failure"),
    (
        {"alertname": "NodeGPUUnavailable", "node": "gpu-node-1", "severity": "warning"},
        "P2",
        "single-node-failure",
    ),
    ({"alertname": "InferencePoolCapacityLow", "namespace": "llm-d"}, "P3", "capacity-warning-alert"),
    ({"alertname": "VLLMKVCacheHighWarning", "namespace": "dev"}, "P3", "capacity-warning-alert"),
    ({"alertname": "Watchdog", "severity": "none"}, "P3", None),
    ({}, "P3", None),
]


@pytest.mark.parametrize(("labels", "level", "rule"), ALERTS)
def test_classify_realistic_alerts_on_labels_alone(
    policy: SeverityPolicy, labels: dict[str, str], level: str, rule: str | None
) -> None:
    result = classify(labels, None, policy)
    assert result.severity is Severity(level)
    assert result.rule == rule
    assert result.labels_only is True
    assert result.signals_used == {}
    assert result.explanation.endswith("(classified on labels alone: no Prometheus signals)")
    if rule is None:
        assert result.explanation.startswith(f"{level} by default: no rule matched")
    else:
        assert result.explanation.startswith(f"{level} by rule '{rule}': ")


def test_highest_matching_rule_wins_on_labels(policy: SeverityPolicy) -> None:
    labels = {"alertname": "VLLMAllReplicasDown", "namespace": "prod", "severity": "critical"}
    result = classify(labels, None, policy)
    assert result.matched_rules == ("outage-alert", "critical-alert")
    assert (result.severity, result.rule) == (Severity.P0, "outage-alert")


def test_label_explanation_names_rule_and_values(policy: SeverityPolicy) -> None:
    result = classify({"alertname": "KubeNodeNotReady"}, None, policy)
    assert result.explanation == (
        "P2 by rule 'single-node-failure': "
        'alertname="KubeNodeNotReady" in [KubeNodeNotReady, KubeNodeUnreachable, NodeGPUUnavailable]'
        " (classified on labels alone: no Prometheus signals)"
    )


# ---- classification with signals ---------------------------------------------------------------

BASE = {"alertname": "VLLMSomethingOdd", "namespace": "llm-d"}


@pytest.mark.parametrize(
    ("signals", "level", "rule"),
    [
        ({"error_rate_pct": 12.4}, "P1", "error-rate-high"),
        ({"error_rate_pct": 10.0}, "P2", "error-rate-medium"),  # "> 10" is strict; 2-10 inclusive
        ({"error_rate_pct": 10.01}, "P1", "error-rate-high"),
        ({"error_rate_pct": 2.0}, "P2", "error-rate-medium"),
        ({"error_rate_pct": 1.99}, "P3", None),
        ({"error_rate_pct": 95.0}, "P1", "error-rate-high"),
        ({"error_rate_pct": 96.0}, "P0", "error-rate-outage"),
        ({"p95_latency_seconds": 7.5}, "P1", "latency-p95-high"),
        ({"p95_latency_seconds": 3.75}, "P2", "latency-p95-medium"),
        ({"p95_latency_seconds": 0.4}, "P3", None),
        ({"kv_cache_usage": 0.97}, "P1", "kv-cache-exhausted"),
        ({"kv_cache_usage": 0.85}, "P3", "kv-cache-high"),
        ({"ready_pods": 0.0}, "P0", "no-ready-pods"),
        ({"ready_pods": 3.0}, "P3", None),
        ({"burn_rate_1h": 20.0, "burn_rate_5m": 20.0}, "P1", "slo-fast-burn"),
        ({"burn_rate_1h": 20.0, "burn_rate_5m": 3.0}, "P3", None),  # both windows needed
        (
            {"burn_rate_1h": 9.0, "burn_rate_5m": 50.0, "burn_rate_6h": 7.0, "burn_rate_30m": 8.0},
            "P2",
            "slo-slow-burn",
        ),
        ({"queue_size": 12.0}, "P3", "queue-growing"),
        ({"aborted_pct": 6.0}, "P3", "requests-aborting"),
        # Highest wins across signals: P2 error rate + P1 latency + P3 KV cache → P1.
        (
            {"error_rate_pct": 4.0, "p95_latency_seconds": 6.0, "kv_cache_usage": 0.85},
            "P1",
            "latency-p95-high",
        ),
        # Burn 20x at 99.9 % is only 2 % errors (P2 by error rate) but pages via the burn rule.
        ({"error_rate_pct": 2.0, "burn_rate_1h": 20.0, "burn_rate_5m": 20.0}, "P1", "slo-fast-burn"),
        # Unknown values never match.
        ({"error_rate_pct": None, "kv_cache_usage": math.nan}, "P3", None),
        ({}, "P3", None),
    ],
)
def test_classify_with_signals(
    policy: SeverityPolicy, signals: dict[str, float | None], level: str, rule: str | None
) -> None:
    result = classify(BASE, signals, policy)
    assert (result.severity, result.rule) == (Severity(level), rule)
    assert result.labels_only is False
    assert "labels alone" not in result.explanation


def test_signal_explanation_text(policy: SeverityPolicy) -> None:
    signals = dict.fromkeys(policy.referenced_signals(), 0.0) | {"error_rate_pct": 12.4, "ready_pods": 2.0}
    result = classify(BASE, signals, policy)
    assert result.explanation == "P1 by rule 'error-rate-high': error_rate_pct=12.4 > 10"
    assert result.signals_used == {"error_rate_pct": 12.4}


def test_explanation_lists_unavailable_signals(policy: SeverityPolicy) -> None:
    result = classify(BASE, {"error_rate_pct": 3.5, "kv_cache_usage": math.nan}, policy)
    assert result.explanation.startswith("P2 by rule 'error-rate-medium': error_rate_pct=3.5 >= 2 and <= 10")
    assert "signals unavailable: " in result.explanation
    assert "kv_cache_usage" in result.explanation
    assert "error_rate_pct," not in result.explanation


def test_rule_combining_labels_and_signals_and_annotations() -> None:
    policy = parse_policy(
        _policy_text(
            """
            signals:
              err: {query: "sum(x{namespace=$namespace})"}
            rules:
              - name: prod-errors
                level: P1
                when:
                  labels: {namespace: {regex: "prod-.*"}, team: {not_in: [sandbox]}}
                  annotations: {summary: {regex: "(?i).*oom.*"}}
                  signals: {err: {gt: 5}}
            """
        )
    )
    alert = AlertView({"namespace": "prod-1", "team": "ml"}, {"summary": "GPU OOM on pod x"})
    assert classify(alert, {"err": 6.0}, policy).rule == "prod-errors"
    assert classify(alert, {"err": 5.0}, policy).rule is None
    assert classify(alert, None, policy).rule is None
    other = AlertView({"namespace": "prod-1", "team": "sandbox"}, {"summary": "GPU OOM"})
    assert classify(other, {"err": 6.0}, policy).rule is None
    no_oom = AlertView({"namespace": "prod-1"}, {"summary": "slow"})
    assert classify(no_oom, {"err": 6.0}, policy).rule is None


def test_ties_go_to_the_first_rule_in_the_file() -> None:
    policy = parse_policy(
        _policy_text(
            """
            rules:
              - {name: first, level: P2, when: {labels: {a: x}}}
              - {name: second, level: P2, when: {labels: {b: y}}}
            """
        )
    )
    assert classify({"a": "x", "b": "y"}, None, policy).rule == "first"


def test_missing_label_reads_as_empty_string() -> None:
    policy = parse_policy(
        _policy_text(
            """
            rules:
              - {name: no-team, level: P2, when: {labels: {team: ""}}}
              - {name: not-prod, level: P1, when: {labels: {env: {not_equals: prod}}}}
            """
        )
    )
    assert classify({}, None, policy).matched_rules == ("no-team", "not-prod")
    assert classify({"team": "a", "env": "prod"}, None, policy).rule is None


def test_most_severe_helpers(policy: SeverityPolicy) -> None:
    assert most_severe([Severity.P3, Severity.P1, Severity.P2]) is Severity.P1
    items = [classify(labels, None, policy) for labels, _, _ in ALERTS[3:]]
    assert most_severe_classification(items).rule == "critical-alert"
    with pytest.raises(ValueError, match="no classifications"):
        most_severe_classification([])


def test_classification_to_dict_is_json_shaped(policy: SeverityPolicy) -> None:
    data = classify(BASE, {"error_rate_pct": 12.4}, policy).to_dict()
    assert data["severity"] == "P1"
    assert data["rule"] == "error-rate-high"
    assert data["signals_used"] == {"error_rate_pct": 12.4}
    assert data["labels_only"] is False
    assert isinstance(Classification(**{**data, "severity": Severity.P1}).explanation, str)


# ---- PromQL templating --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("llm-d", '"llm-d"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("line\nbreak\ttab\r", '"line\\nbreak\\ttab\\r"'),
        ("bell\x07", '"bell\\x07"'),
        ("ünï", '"ünï"'),
        ("", '""'),
    ],
)
def test_promql_string_escapes(value: str, literal: str) -> None:
    assert promql_string(value) == literal


def test_injection_stays_inside_the_literal() -> None:
    hostile = 'x"} or vector(1000) or up{a="'
    query = render_query("sum(up{namespace=$namespace})", {"namespace": hostile})
    assert query == 'sum(up{namespace="x\\"} or vector(1000) or up{a=\\""})'


def test_substituted_values_are_not_expanded_again() -> None:
    assert render_query("x{namespace=$namespace}", {"namespace": "$namespace"}) == 'x{namespace="$namespace"}'


def test_render_query_substitutes_only_placeholders() -> None:
    template = 'sum(x{namespace=$namespace, pod=~"a.*"}) + $${not a placeholder}'
    assert query_placeholders(template) == ("namespace",)
    assert (
        render_query(template, {"namespace": "n"})
        == 'sum(x{namespace="n", pod=~"a.*"}) + ${not a placeholder}'
    )
    assert render_query(template, {}) is None


def test_signal_queries_use_only_known_labels(policy: SeverityPolicy) -> None:
    queries = signal_queries({"namespace": "llm-d", "pod": "p-1"}, policy)
    assert set(queries) == set(policy.referenced_signals())
    assert all(q is not None and 'namespace="llm-d"' in q for q in queries.values())
    assert all(q is None for q in signal_queries({"pod": "p-1"}, policy).values())


class _RecordingSource:
    def __init__(self, values: dict[str, float | None], fail: str | None = None) -> None:
        self.values = values
        self.fail = fail
        self.queries: list[str] = []

    def query_value(self, promql: str) -> float | None:
        self.queries.append(promql)
        if self.fail and self.fail in promql:
            raise TransientError("prometheus timed out")
        for marker, value in self.values.items():
            if marker in promql:
                return value
        return None


def test_fetch_signals_queries_each_referenced_signal(policy: SeverityPolicy) -> None:
    source = _RecordingSource({"histogram_quantile": 6.2, "kv_cache_usage_perc": 0.5}, fail="ready_pods")
    values = fetch_signals({"namespace": "ns-1", "alertname": "X"}, policy, source)
    assert len(source.queries) == len(policy.referenced_signals())
    assert values["p95_latency_seconds"] == 6.2
    assert values["kv_cache_usage"] == 0.5
    assert values["ready_pods"] is None  # the failing query degrades to "unknown"
    result = classify({"namespace": "ns-1"}, values, policy)
    assert result.explanation.startswith("P1 by rule 'latency-p95-high': p95_latency_seconds=6.2 > 5")
    assert "ready_pods" in result.explanation


def test_fetch_signals_skips_queries_the_alert_cannot_fill(policy: SeverityPolicy) -> None:
    source = _RecordingSource({})
    values = fetch_signals({"alertname": "KubeNodeNotReady"}, policy, source)
    assert source.queries == []
    assert set(values.values()) == {None}


# ---- durations and loading errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("1d", timedelta(days=1)),
        (300, timedelta(minutes=5)),
    ],
)
def test_parse_duration(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "5 minutes", "m", "-5m", 0, -3, True, None])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


LEVELS = """
levels:
  P0: {name: critical, response: 5m, escalation: 15m, slack_channel: "#c", page: true}
  P1: {name: high, response: 15m, escalation: 30m, slack_channel: "#h", page: true}
  P2: {name: medium, response: 30m, escalation: 2h, slack_channel: "#m", page: false}
  P3: {name: low, response: 2h, escalation: 8h, slack_channel: "#l", page: false}
"""


def _policy_text(body: str, levels: str = LEVELS) -> str:
    body = textwrap.dedent(body)
    if "rules:" not in body:
        body += "\nrules: []\n"
    return "version: 1\ndefault_level: P3\n" + levels + body


def _load_error(tmp_path: Path, text: str) -> str:
    file = tmp_path / "policy.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_policy(file)
    return str(info.value)


def test_minimal_policy_loads() -> None:
    assert parse_policy(_policy_text("")).rules == ()


@pytest.mark.parametrize(
    ("body", "levels", "expected"),
    [
        ("rules:\n  - {name: r, level: P5, when: {labels: {a: b}}}\n", LEVELS, "rules[0] ('r').level"),
        (
            "rules:\n  - {name: r, level: P1, when: {}}\n",
            LEVELS,
            "rules[0] ('r').when: a rule needs at least one",
        ),
        (
            "rules:\n  - {name: r, level: P1, when: {labels: {a: {regex: '(unclosed'}}}}\n",
            LEVELS,
            "rules[0] ('r').when.labels.a: invalid regex",
        ),
        (
            "rules:\n  - {name: r, level: P1, when: {labels: {a: {contains: x}}}}\n",
            LEVELS,
            "rules[0] ('r').when.labels.a.contains: Extra inputs are not permitted",
        ),
        (
            "rules:\n  - {name: r, level: P1, when: {signals: {nope: {gt: 1}}}}\n",
            LEVELS,
            "rules[0] ('r').when.signals.nope: unknown signal 'nope'",
        ),
        (
            "rules:\n  - {name: r, level: P1, when: {labels: {a: b}}}\n"
            "  - {name: r, level: P2, when: {labels: {a: c}}}\n",
            LEVELS,
            "rules[1] ('r').name: duplicate rule name 'r'",
        ),
        (
            "signals:\n  s: {query: 'up{namespace=\"$namespace\"}'}\n",
            LEVELS,
            "signals.s.query: quotes $namespace; placeholders expand to a quoted string",
        ),
        (
            "signals:\n  s: {query: 'up{pod=$pod}'}\n",
            LEVELS,
            "signals.s.query: uses $pod, which is not in query_labels",
        ),
        ("signals:\n  s: {query: 'up{a=$ 1}'}\n", LEVELS, "signals.s.query: has a '$' that is not a $label"),
        (
            "",
            LEVELS.replace('"#h"', '"incidents-high"'),
            "levels.P1.slack_channel: String should match pattern",
        ),
        ("", LEVELS.replace("response: 5m", "response: soon"), "levels.P0.response: expected a duration"),
        (
            "",
            LEVELS.replace("escalation: 8h", "escalation: 1h"),
            "levels.P3: escalation must not come before",
        ),
        (
            "",
            LEVELS.replace("  P2: {name: medium", "  P9: {name: medium"),
            "levels.P9 (key): Input should be 'P0', 'P1', 'P2' or 'P3'",
        ),
    ],
)
def test_loading_errors_name_file_and_field(tmp_path: Path, body: str, levels: str, expected: str) -> None:
    message = _load_error(tmp_path, _policy_text(body, levels))
    assert str(tmp_path / "policy.yaml") in message
    assert expected in message


def test_loading_error_gives_the_line(tmp_path: Path) -> None:
    text = _policy_text(
        "rules:\n  - name: ok\n    level: P1\n    when: {labels: {a: b}}\n"
        "  - name: bad\n    level: P7\n    when: {labels: {a: b}}\n"
    )
    line = text.splitlines().index("    level: P7") + 1
    message = _load_error(tmp_path, text)
    assert f"policy.yaml:{line}: rules[1] ('bad').level" in message


def test_missing_level_is_reported(tmp_path: Path) -> None:
    levels = "\n".join(line for line in LEVELS.splitlines() if "P2:" not in line)
    message = _load_error(tmp_path, _policy_text("", levels))
    assert "levels: must define every severity; missing P2" in message


def test_not_yaml_and_not_a_file(tmp_path: Path) -> None:
    bad = _load_error(tmp_path, "version: 1\nlevels: {a: 1\nrules: [x\n")
    assert "policy.yaml:3:6: not valid YAML: expected ',' or '}', but got ':'" in bad
    assert "must be a YAML mapping" in _load_error(tmp_path, "- just a list\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: cannot read severity policy"):
        load_policy(tmp_path / "nowhere.yaml")


def test_shipped_policy_round_trips_through_yaml(policy: SeverityPolicy) -> None:
    data: Any = yaml.safe_load(SHIPPED.read_text())
    assert [r["name"] for r in data["rules"]] == [r.name for r in policy.rules]
