"""Coverage of a team's Prometheus alert rules by the bot: the pure core of `incident-bot coverage`.

For each alerting rule of a rule file or PrometheusRule manifest (:func:`parse_rules`), :func:`evaluate`
says what the bot would do with the alert it fires: the severity and the policy rule behind it
(classified on the rule's static labels plus ``alertname``, no live signals), the runbooks it would
start, how the incident's target would be found (:func:`target_resolution`, from the labels the rule's
expression keeps), and the metric names vLLM or the inference extension renamed or removed
(:func:`renamed_metrics`), which make an alert that can never fire on current versions.

A status per alert: ``covered`` (a runbook would start), ``notify only`` (a ``notify_only`` policy rule:
known, announced, not acted on) or ``NOT COVERED`` (no policy rule, or a rule but no runbook and no
explicit notify-only marking).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from bot.plan.schema import Runbook
from bot.plan.select import select
from bot.severity import (
    AlertView,
    Classification,
    LabelMatcher,
    SeverityPolicy,
    classify,
    notify_only_rule,
)

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
    """A metric an expression uses that was renamed (replacement) or removed (replacement None).

    ``fallback``: the expression also uses the replacement (``new or old``, for servers still on an old
    version), so the alert still fires on current versions; such a use is reported but not outdated.
    """

    metric: str
    replacement: str | None
    fallback: bool = False

    def describe(self) -> str:
        """``old -> new``, ``old (removed, no replacement)`` or ``old -> new (fallback beside …)``."""
        if self.replacement is None:
            return f"{self.metric} (removed, no replacement)"
        tail = " (kept as a fallback beside the replacement for older vLLM: fine)" if self.fallback else ""
        return f"{self.metric} -> {self.replacement}{tail}"


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
    names = [match.group(0) for match in _IDENT_RE.finditer(expr)]
    found: dict[str, Rename] = {}
    for name in names:
        hit = _lookup(name)
        if hit is not None and hit.metric not in found:
            beside = hit.replacement is not None and hit.replacement in names
            found[hit.metric] = Rename(hit.metric, hit.replacement, fallback=beside)
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


_AGG_RE = re.compile(
    r"\b(sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*"
    r"(?:(by|without)\s*\(([^)]*)\))?\s*\(",
    re.IGNORECASE,
)
_AGG_SUFFIX_RE = re.compile(r"^\s*(by|without)\s*\(([^)]*)\)", re.IGNORECASE)

#: The labels every series of a scraped pod carries (what an expression that does not aggregate keeps).
SERIES_LABELS = ("namespace", "pod", "container", "job", "instance", "service", "model_name")


def _closing(expr: str, start: int) -> int:
    """Index just after the parenthesis that closes the one opened at *start* - 1."""
    depth = 1
    for index in range(start, len(expr)):
        if expr[index] == "(":
            depth += 1
        elif expr[index] == ")":
            depth -= 1
            if depth == 0:
                return index + 1
    return len(expr)


def kept_labels(rule: AlertRule) -> set[str] | None:
    """The labels the alert will carry: static labels plus what the expression keeps.

    None means "every label of the series" (no aggregation, or only ``without (…)``). With several
    aggregations the labels all of them keep (``by (…)`` before or after the argument) count.
    """
    kept: set[str] | None = None
    for match in _AGG_RE.finditer(rule.expr):
        mode, names = match.group(2), match.group(3)
        if mode is None:  # `sum (x) by (l)` puts the clause after the argument
            tail = _AGG_SUFFIX_RE.match(rule.expr[_closing(rule.expr, match.end()) :])
            mode, names = (tail.group(1), tail.group(2)) if tail else (None, "")
        if mode is not None and mode.lower() == "without":
            continue
        these = {n.strip() for n in (names or "").split(",") if n.strip()}
        kept = these if kept is None else kept & these
    if kept is None:
        kept = _recording_levels(rule.expr)
    return None if kept is None else kept | set(rule.labels)


_RECORDED_RE = re.compile(r"(?<![A-Za-z0-9_:])([a-z_]+):[A-Za-z0-9_]+:[A-Za-z0-9_]+")


def _recording_levels(expr: str) -> set[str] | None:
    """Labels kept by recording-rule series (``level:metric:operations``, the level naming them).

    None when the expression reads any series that is not a recorded one.
    """
    metrics = [m for m in _IDENT_RE.findall(expr) if ":" in m or "_" in m]
    recorded = [m for m in metrics if _RECORDED_RE.fullmatch(m)]
    if not recorded or len(recorded) != len([m for m in metrics if ":" in m]):
        return None
    kept: set[str] | None = None
    for name in recorded:
        level = name.split(":", 1)[0]
        labels = {level, *level.split("_")} if level != "model_name" else {level}
        kept = labels if kept is None else kept & labels
    return kept


#: A service-catalog lookup: the alert's (static) labels -> a description of the target, or None.
CatalogLookup = Callable[[Mapping[str, str]], str | None]

#: Labels a catalog entry can match an alert on (issue 15's service catalog).
CATALOG_KEYS = ("service", "team", "job", "model_name", "pod", "name")


def target_resolution(rule: AlertRule, catalog: CatalogLookup | None = None) -> str:
    """How an incident's target would be found: from labels, by discovery from ``pod``, or a catalog entry.

    *catalog*, when given, is asked first with the rule's static labels (plus ``alertname``).
    """
    if catalog is not None:
        found = catalog({**rule.labels, "alertname": rule.alert})
        if found:
            return f"from the service catalog: {found}"
    kept = kept_labels(rule)
    if kept is None:  # not aggregated: the alert keeps the series' labels, whatever the scrape gave them
        keys = sorted(k for k in CATALOG_KEYS if k in set(SERIES_LABELS) | set(rule.labels))
        return (
            "by discovery from labels namespace/pod if the series carry them (Kubernetes service"
            f" discovery adds them), else a service catalog entry (matching on {', '.join(keys)})"
        )
    if {"namespace", "deployment"} <= kept:
        return "from labels namespace/deployment"
    if {"namespace", "pod"} <= kept:
        return "by discovery from labels namespace/pod (pod -> owner ReplicaSet -> Deployment)"
    keys = sorted(k for k in CATALOG_KEYS if k in kept)
    on = f"matching on {', '.join(keys)}" if keys else "matching on alertname only"
    if "namespace" in kept:
        return f"namespace from labels; the workload needs a service catalog entry ({on})"
    return f"needs a service catalog entry ({on}): the rule keeps no namespace or pod label"


@dataclass(frozen=True)
class AlertCoverage:
    """What the bot would do with one alert: severity, runbooks, target, and outdated metric names."""

    rule: AlertRule
    classification: Classification
    runbooks: tuple[str, ...]
    target: str
    renames: tuple[Rename, ...]
    variants: tuple[str, ...] = field(default=())
    """Other policy rules for the same alert name that apply with other label values (e.g. `team`)."""

    @property
    def status(self) -> str:
        """ "covered" (a runbook), "notify only" (explicitly), or "NOT COVERED"."""
        if self.classification.notify_only is not None:
            return "notify only"
        return "covered" if self.runbooks else "NOT COVERED"

    @property
    def outdated(self) -> tuple[Rename, ...]:
        """Renamed/removed metrics the expression relies on (not a fallback beside the replacement)."""
        return tuple(r for r in self.renames if not r.fallback)

    @property
    def why(self) -> str:
        """One line on the status: the runbooks, the notify-only rule, or what is missing."""
        if self.status == "notify only":
            return f"notify only by rule '{self.classification.notify_only}': announced, no runbook started"
        if self.runbooks:
            return "runbook(s) " + ", ".join(self.runbooks)
        if self.classification.rule is None:
            return "no severity rule matches (it would be P3 by default) and no runbook"
        return f"severity rule '{self.classification.rule}' but no runbook, and not marked notify_only"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the shape of one ``alerts[]`` item of ``coverage --json``)."""
        return {
            "alert": self.rule.alert,
            "group": self.rule.group,
            "status": self.status,
            "severity": self.classification.severity.value,
            "rule": self.classification.rule,
            "notify_only": self.classification.notify_only,
            "explanation": self.classification.explanation,
            "runbooks": list(self.runbooks),
            "target": self.target,
            "renamed_metrics": [
                {"metric": r.metric, "replacement": r.replacement, "fallback": r.fallback}
                for r in self.renames
            ],
            "outdated": bool(self.outdated),
            "variants": list(self.variants),
        }


def _matcher_text(name: str, m: LabelMatcher) -> str:
    parts = [
        f"{name}{op}{shown}"
        for op, shown in (
            ("=", m.equals and f'"{m.equals}"'),
            ("!=", m.not_equals and f'"{m.not_equals}"'),
            ("=~", m.regex and f"/{m.regex}/"),
            ("!~", m.not_regex and f"/{m.not_regex}/"),
            (" in ", m.in_ and f"[{', '.join(m.in_)}]"),
            (" not in ", m.not_in and f"[{', '.join(m.not_in)}]"),
        )
        if shown
    ]
    return " and ".join(parts)


def _variants(rule: AlertRule, result: Classification, policy: SeverityPolicy) -> tuple[str, ...]:
    """Policy rules that may apply at run time and raise the level (or make the alert notify-only).

    A candidate's conditions on static labels must hold; the rest must be on labels the rule keeps.

    E.g. "P1 by rule 'critical-alert' if namespace=~/prod.*/" for a rule keeping ``namespace``. Rules that
    do not name the alert and test no label beyond the static ones (signal-only rules) are left out.
    """
    static = {**rule.labels, "alertname": rule.alert}
    kept = kept_labels(rule)
    out = []
    for candidate in policy.rules:
        if candidate.name in result.matched_rules:
            continue
        names_it = "alertname" in candidate.when.labels
        runtime: list[str] = []
        possible = True
        for key, matcher in candidate.when.labels.items():
            if key in static:
                possible = possible and matcher.matches(static[key])
            elif kept is None or key in kept:
                runtime.append(_matcher_text(key, matcher))
            else:
                possible = possible and matcher.matches("")
        raises = candidate.level.outranks(result.severity)
        if not possible or not (names_it or runtime) or not (raises or candidate.notify_only):
            continue
        runtime += [f"annotation {_matcher_text(k, m)}" for k, m in candidate.when.annotations.items()]
        runtime += [f"signal {k}" for k in candidate.when.signals]
        note = " (notify only)" if candidate.notify_only else ""
        out.append(f"{candidate.level.value} by rule '{candidate.name}'{note} if {' and '.join(runtime)}")
    return tuple(out)


def evaluate(
    rule: AlertRule,
    policy: SeverityPolicy,
    runbooks: Iterable[Runbook],
    catalog: CatalogLookup | None = None,
) -> AlertCoverage:
    """Classify *rule*'s static labels (plus alertname; no live signals) and select its runbooks.

    A notify-only alert gets no runbooks, as in the worker's automatic start.
    """
    labels = {**rule.labels, "alertname": rule.alert}
    result = classify(AlertView(labels=labels, annotations=rule.annotations), None, policy)
    quiet = notify_only_rule(AlertView(labels=labels, annotations=rule.annotations), policy)
    chosen = [] if quiet is not None else select(runbooks, [labels], result.severity)
    return AlertCoverage(
        rule=rule,
        classification=result,
        runbooks=tuple(s.runbook.name for s in chosen),
        target=target_resolution(rule, catalog),
        renames=tuple(renamed_metrics(rule.expr)),
        variants=_variants(rule, result, policy),
    )


@dataclass(frozen=True)
class Summary:
    """Counts over a set of alerts (the last line of `incident-bot coverage`)."""

    alerts: int
    covered: int
    notify_only: int
    not_covered: int
    outdated: int

    @classmethod
    def of(cls, items: Iterable[AlertCoverage]) -> Summary:
        """Count *items* by status, and the alerts relying on renamed/removed metrics."""
        rows = list(items)
        return cls(
            alerts=len(rows),
            covered=sum(1 for r in rows if r.status == "covered"),
            notify_only=sum(1 for r in rows if r.status == "notify only"),
            not_covered=sum(1 for r in rows if r.status == "NOT COVERED"),
            outdated=sum(1 for r in rows if r.outdated),
        )

    def line(self) -> str:
        """``12 alerts: 9 covered, 2 notify only, 1 NOT COVERED, 0 with outdated metrics``."""
        return (
            f"{self.alerts} alerts: {self.covered} covered, {self.notify_only} notify only, "
            f"{self.not_covered} NOT COVERED, {self.outdated} with outdated metrics"
        )
