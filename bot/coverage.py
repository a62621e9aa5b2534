"""Pure checks for Prometheus alert rules: metric names vLLM or the inference extension renamed or removed.

Work in progress for issue 15 ("coverage"): only the metric-name check is here so far.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from bot.plan.schema import Runbook
from bot.plan.select import select
from bot.severity import AlertView, Classification, SeverityPolicy, classify

#: Old metric name -> replacement (None: removed without replacement). From INTEGRATION_NOTES.md.
RENAMED: dict[str, str | None] = {
    "vllm:gpu_cache_usage_perc": "vllm:kv_cache_usage_perc",
    "vllm:gpu_prefix_cache_queries": "vllm:prefix_cache_queries_total",
    "vllm:gpu_prefix_cache_hits": "vllm:prefix_cache_hits_total",
    "vllm:gpu_prefix_cache_queries_total": "vllm:prefix_cache_queries_total",
    "vllm:gpu_prefix_cache_hits_total": "vllm:prefix_cache_hits_total",
    "vllm:time_per_output_token_seconds": "vllm:inter_token_latency_seconds",
    "vllm:num_preemptions": "vllm:num_preemptions_total",
    "vllm:num_requests_swapped": None,
    "vllm:cpu_cache_usage_perc": None,
    "vllm:cpu_prefix_cache_hit_rate": None,
    "vllm:gpu_prefix_cache_hit_rate": None,
    "vllm:time_in_queue_requests": None,
    "vllm:model_forward_time_milliseconds": None,
    "vllm:model_execute_time_milliseconds": None,
}

_IDENT_RE = re.compile(r"(?<![A-Za-z0-9_:])[A-Za-z_:][A-Za-z0-9_:]*")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Rename:
    """A metric an expression uses that was renamed (replacement) or removed (replacement None)."""

    metric: str
    replacement: str | None


def _lookup(name: str) -> Rename | None:
    if name in RENAMED:
        return Rename(name, RENAMED[name])
    if name.startswith("inference_model_"):
        return Rename(name, "inference_objective_" + name.removeprefix("inference_model_"))
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in RENAMED:
            new = RENAMED[base]
            return Rename(name, None if new is None else new + suffix)
    return None


def renamed_metrics(expr: str) -> list[Rename]:
    """Renamed/removed metrics used in *expr*, matched as whole PromQL identifiers, in order, once each."""
    found: dict[str, Rename] = {}
    for match in _IDENT_RE.finditer(expr):
        hit = _lookup(match.group(0))
        if hit is not None:
            found.setdefault(hit.metric, hit)
    return list(found.values())


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule from a rule file: its group, name, expression and static labels/annotations."""

    group: str
    alert: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]


def _groups_of(doc: object) -> list[Any]:
    if not isinstance(doc, dict):
        return []
    if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return [g for item in doc["items"] for g in _groups_of(item)]
    if doc.get("kind") == "PrometheusRule":
        spec = doc.get("spec")
        groups = spec.get("groups") if isinstance(spec, dict) else None
    else:
        groups = doc.get("groups")
    return list(groups) if isinstance(groups, list) else []


def parse_rules(text: str) -> list[AlertRule]:
    """The alerting rules in a rule file, PrometheusRule manifest, multi-document YAML or List.

    ValueError (one line) when the text is not YAML or has no rule groups.
    """
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {str(exc).splitlines()[0]}") from exc
    groups = [g for doc in docs for g in _groups_of(doc)]
    if not groups:
        raise ValueError("no rule groups (expected 'groups:' or a PrometheusRule with spec.groups)")
    rules = []
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("rules", []), list):
            raise ValueError("a rule group must be a mapping with a 'rules' list")
        for rule in group.get("rules") or []:
            if isinstance(rule, dict) and "alert" in rule:
                rules.append(
                    AlertRule(
                        group=str(group.get("name", "")),
                        alert=str(rule["alert"]),
                        expr=str(rule.get("expr", "")),
                        labels={str(k): str(v) for k, v in (rule.get("labels") or {}).items()},
                        annotations={str(k): str(v) for k, v in (rule.get("annotations") or {}).items()},
                    )
                )
    return rules


_BY_RE = re.compile(r"\bby\s*\(([^)]*)\)")
_TARGET_LABELS = ("namespace", "deployment")


def target_resolution(rule: AlertRule) -> str:
    """How an incident's target would be found: from the alert's labels, or (not yet) the service catalog."""
    kept = set(rule.labels)
    for match in _BY_RE.finditer(rule.expr):
        kept.update(name.strip() for name in match.group(1).split(","))
    if all(label in kept for label in _TARGET_LABELS):
        return "from labels namespace/deployment"
    return "needs the service catalog (not yet built)"


@dataclass(frozen=True)
class AlertCoverage:
    """What the bot would do with one alert: severity, runbooks, target, and outdated metric names."""

    rule: AlertRule
    classification: Classification
    runbooks: tuple[str, ...]
    target: str
    renames: tuple[Rename, ...]

    @property
    def status(self) -> str:
        """ "covered" (a runbook), "notify only" (a severity rule, no runbook), or "NOT COVERED"."""
        if self.runbooks:
            return "covered"
        return "notify only" if self.classification.rule is not None else "NOT COVERED"


def evaluate(rule: AlertRule, policy: SeverityPolicy, runbooks: Iterable[Runbook]) -> AlertCoverage:
    """Classify *rule*'s static labels (plus alertname; no live signals) and select its runbooks."""
    labels = {**rule.labels, "alertname": rule.alert}
    result = classify(AlertView(labels=labels, annotations=rule.annotations), None, policy)
    chosen = select(runbooks, [labels], result.severity)
    return AlertCoverage(
        rule=rule,
        classification=result,
        runbooks=tuple(s.runbook.name for s in chosen),
        target=target_resolution(rule),
        renames=tuple(renamed_metrics(rule.expr)),
    )
