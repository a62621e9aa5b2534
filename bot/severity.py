"""Severity policy (operator-edited YAML) and the pure classifier.

The policy file (shipped default ``bot/policy/severity.yaml``, overridden by SEVERITY_POLICY) has
four parts::

    version: 1
    default_level: P3                 # the level when no rule matches
    query_labels: [namespace, ...]    # alert labels a signal query may use as $placeholders
    levels:                           # exactly P0, P1, P2, P3
      P1:
        name: high
        response: 15m                 # durations: "90s", "15m", "2h", "1h30m", "1d" or seconds
        escalation: 30m
        status_update_every: 30m      # optional reminder interval
        slack_channel: "#incidents-high"
        page: true
        notify: [oncall-sre, service-owner]
    signals:                          # live values, one PromQL query each
      error_rate_pct:
        query: 100 * sum(rate(errs{namespace=$namespace}[5m])) / sum(rate(reqs{namespace=$namespace}[5m]))
    rules:                            # every condition of a rule must hold (AND)
      - name: error-rate-high
        level: P1
        when:
          labels: {alertname: {in: [A, B]}, namespace: {regex: "prod-.*"}, severity: critical}
          annotations: {summary: {regex: ".*OOM.*"}}
          signals: {error_rate_pct: {gt: 10}}
      - name: cache-hit-low
        level: P3
        reason: tuning, not an outage     # optional; appended to the explanation
        notify_only: true             # known alert; tell people, start no runbook
        when:
          labels: {alertname: LLMDLowPrefixCacheHitRate}

Matching: the most severe matching rule wins (ties: the first in the file); nothing matching gives
``default_level``. Label and annotation matchers are ``equals``, ``not_equals``, ``regex``,
``not_regex`` (anchored, as in Alertmanager), ``in``, ``not_in``; a bare string means ``equals``
and a bare list means ``in``; a missing label reads as "". Signal thresholds are ``gt``, ``gte``,
``lt``, ``lte`` (several in one condition all apply); a signal whose value is unknown never matches.

Notify only: a rule with ``notify_only: true`` marks the alerts it matches as known but not to be
acted on: the classification says so (``Classification.notify_only``, and in its explanation) and no
runbook is started automatically for such an alert (:func:`notify_only_rule`). Whether an alert is
notify-only never depends on live values, so a notify-only rule may match on labels and annotations
only. It still proposes its level like any rule (the most severe match wins the level).

Queries: ``$label`` (or ``${label}``) is replaced by the alert's label value as an escaped PromQL
string literal, quotes included, so write ``namespace=$namespace``, never ``"$namespace"``. Only
labels listed in ``query_labels`` may appear; a signal whose labels the alert lacks is not queried.

Classification is pure: :func:`classify` takes the alert and already-fetched signal values.
:func:`fetch_signals` does the I/O through any :class:`SignalSource`.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from bot.errors import ConfigError, IncidentBotError

log = logging.getLogger(__name__)


class Severity(enum.StrEnum):
    """Incident severity, P0 (critical) to P3 (low)."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        """0 for P0 (most severe) up to 3 for P3."""
        return int(self.value[1])

    def outranks(self, other: Severity) -> bool:
        """Whether this level is more severe than *other*."""
        return self.rank < other.rank


def most_severe(levels: Iterable[Severity]) -> Severity:
    """The most severe of *levels* (ValueError when empty)."""
    return min(levels, key=lambda level: level.rank)


# --------------------------------------------------------------------------------------------
# Durations

_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: object) -> timedelta:
    """Parse "90s", "15m", "2h", "1h30m", "1d" or a number of seconds into a positive timedelta."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    elif isinstance(value, str) and value and (m := _DURATION_RE.fullmatch(value.strip())):
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        result = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    else:
        raise ValueError(f"expected a duration like '15m', '2h', '1h30m' or seconds, got {value!r}")
    if result <= timedelta(0):
        raise ValueError(f"a duration must be positive, got {value!r}")
    return result


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


# --------------------------------------------------------------------------------------------
# PromQL templating

_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class _QueryTemplate(string.Template):
    """``$label`` / ``${label}`` placeholders whose names must be Prometheus label names."""

    idpattern = r"[a-zA-Z_][a-zA-Z0-9_]*"
    flags = re.NOFLAG


def promql_string(value: str) -> str:
    """*value* as a double-quoted PromQL string literal with every special character escaped."""
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def query_placeholders(template: str) -> tuple[str, ...]:
    """The label names a query template refers to, in order of first appearance."""
    return tuple(dict.fromkeys(_QueryTemplate(template).get_identifiers()))


def render_query(template: str, labels: Mapping[str, str]) -> str | None:
    """The query with each ``$label`` replaced by its escaped literal; None if a label is missing."""
    needed = query_placeholders(template)
    if any(name not in labels for name in needed):
        return None
    return _QueryTemplate(template).substitute({name: promql_string(labels[name]) for name in needed})


def _template_problems(template: str, allowed: Iterable[str]) -> list[str]:
    problems = []
    tmpl = _QueryTemplate(template)
    if not tmpl.is_valid():
        problems.append("has a '$' that is not a $label placeholder (write $$ for a literal '$')")
        return problems
    known = set(allowed)
    for match in tmpl.pattern.finditer(template):
        name = match.group("named") or match.group("braced")
        if name is None:
            continue
        if name not in known:
            problems.append(f"uses ${name}, which is not in query_labels {sorted(known)}")
        before = template[: match.start()].rstrip()
        if before.endswith(('"', "'", "`")):
            problems.append(f"quotes ${name}; placeholders expand to a quoted string, write {name}=${name}")
    return problems


# --------------------------------------------------------------------------------------------
# Policy schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LevelSpec(_Strict):
    """What a severity level means operationally: deadlines, channel, paging, who is told."""

    name: str = Field(min_length=1)
    description: str = ""
    response: Duration
    escalation: Duration
    status_update_every: Duration | None = None
    slack_channel: str = Field(pattern=r"^#[a-z0-9][a-z0-9._-]*$")
    page: bool
    notify: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _escalation_after_response(self) -> Self:
        if self.escalation < self.response:
            raise ValueError("escalation must not come before response")
        return self


class LabelMatcher(_Strict):
    """Conditions on one label or annotation value; all given ones must hold."""

    equals: str | None = None
    not_equals: str | None = None
    regex: str | None = None
    not_regex: str | None = None
    in_: tuple[str, ...] | None = Field(None, alias="in")
    not_in: tuple[str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"equals": data}
        if isinstance(data, list):
            return {"in": data}
        return data

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if all(v is None for v in (self.equals, self.not_equals, self.regex, self.not_regex, self.in_)) and (
            self.not_in is None
        ):
            raise ValueError("a matcher needs one of equals, not_equals, regex, not_regex, in, not_in")
        for pattern in (self.regex, self.not_regex):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
        return self

    def matches(self, value: str) -> bool:
        """Whether *value* satisfies every condition of this matcher."""
        return (
            (self.equals is None or value == self.equals)
            and (self.not_equals is None or value != self.not_equals)
            and (self.regex is None or re.fullmatch(self.regex, value) is not None)
            and (self.not_regex is None or re.fullmatch(self.not_regex, value) is None)
            and (self.in_ is None or value in self.in_)
            and (self.not_in is None or value not in self.not_in)
        )

    def describe(self, name: str, value: str) -> str:
        """Human text for a match, e.g. ``alertname="X" in [X, Y]``."""
        parts = []
        if self.not_equals is not None:
            parts.append(f"!= {json.dumps(self.not_equals)}")
        if self.regex is not None:
            parts.append(f"=~ /{self.regex}/")
        if self.not_regex is not None:
            parts.append(f"!~ /{self.not_regex}/")
        if self.in_ is not None:
            parts.append(f"in [{', '.join(self.in_)}]")
        if self.not_in is not None:
            parts.append(f"not in [{', '.join(self.not_in)}]")
        tail = " and ".join(parts)
        return f"{name}={json.dumps(value)}" + (f" {tail}" if tail else "")


def _num(value: float) -> str:
    return f"{value:.6g}"


class Threshold(_Strict):
    """Bounds on a signal value; all given bounds must hold."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a threshold needs one of gt, gte, lt, lte")
        return self

    def matches(self, value: float) -> bool:
        """Whether *value* is within every bound."""
        return (
            (self.gt is None or value > self.gt)
            and (self.gte is None or value >= self.gte)
            and (self.lt is None or value < self.lt)
            and (self.lte is None or value <= self.lte)
        )

    def describe(self, name: str, value: float) -> str:
        """Human text for a match, e.g. ``error_rate_pct=12.4 > 10``."""
        bounds = [
            f"{op} {_num(bound)}"
            for op, bound in ((">", self.gt), (">=", self.gte), ("<", self.lt), ("<=", self.lte))
            if bound is not None
        ]
        return f"{name}={_num(value)} " + " and ".join(bounds)


class Conditions(_Strict):
    """What a rule looks at: alert labels, annotations and live signals."""

    labels: dict[str, LabelMatcher] = {}
    annotations: dict[str, LabelMatcher] = {}
    signals: dict[str, Threshold] = {}

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not (self.labels or self.annotations or self.signals):
            raise ValueError("a rule needs at least one condition (use default_level for a catch-all)")
        return self


class Rule(_Strict):
    """A named condition that, when it holds, proposes a severity level."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    level: Severity
    description: str = ""
    reason: str = ""
    """Why this level, in a few words (e.g. "the guide: Service Down is P0"); shown in the explanation."""
    notify_only: bool = False
    """The bot knows this alert but acts on it by telling people only: no runbook is auto-started."""
    when: Conditions


class SignalSpec(_Strict):
    """A live value: a PromQL query returning one number, with $label placeholders."""

    query: str = Field(min_length=1)
    description: str = ""
    unit: str = ""


class SeverityPolicy(_Strict):
    """The whole policy file."""

    version: int = Field(ge=1, le=1)
    default_level: Severity
    query_labels: tuple[str, ...] = ("namespace",)
    levels: dict[Severity, LevelSpec]
    signals: dict[str, SignalSpec] = {}
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get("defer_cross_check"):
            return self
        problems = cross_check(self)
        if problems:
            loc, message = problems[0]
            raise ValueError(f"{'.'.join(map(str, loc))}: {message}")
        return self

    def level(self, severity: Severity) -> LevelSpec:
        """The operational settings of *severity*."""
        return self.levels[severity]

    def referenced_signals(self) -> tuple[str, ...]:
        """Signal names that at least one rule reads, in file order."""
        names: dict[str, None] = {}
        for rule in self.rules:
            names.update(dict.fromkeys(rule.when.signals))
        return tuple(names)


def cross_check(policy: SeverityPolicy) -> list[tuple[tuple[int | str, ...], str]]:
    """Problems spanning several fields, as (location, message) pairs; empty when consistent."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    missing = [s.value for s in Severity if s not in policy.levels]
    if missing:
        problems.append((("levels",), f"must define every severity; missing {', '.join(missing)}"))
    for index, name in enumerate(policy.query_labels):
        if not _LABEL_NAME_RE.fullmatch(name):
            problems.append((("query_labels", index), f"{name!r} is not a Prometheus label name"))
    for name, spec in policy.signals.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            problems.append((("signals", name), "a signal name is lower_snake_case"))
        problems.extend(
            (("signals", name, "query"), problem)
            for problem in _template_problems(spec.query, policy.query_labels)
        )
    seen: set[str] = set()
    for index, rule in enumerate(policy.rules):
        if rule.name in seen:
            problems.append((("rules", index, "name"), f"duplicate rule name {rule.name!r}"))
        seen.add(rule.name)
        if rule.notify_only and rule.when.signals:
            problems.append(
                (
                    ("rules", index, "notify_only"),
                    "a notify_only rule matches on labels and annotations only (not signals)",
                )
            )
        for signal in rule.when.signals:
            if signal not in policy.signals:
                defined = ", ".join(sorted(policy.signals)) or "none"
                problems.append(
                    (
                        ("rules", index, "when", "signals", signal),
                        f"unknown signal {signal!r}; defined signals: {defined}",
                    )
                )
    return problems


# --------------------------------------------------------------------------------------------
# Loading


def _node_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at pydantic location *loc*, as far as it can be followed."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """Dotted path of *loc*, naming rules by their ``name``: rules[3] ('error-rate-high').level."""
    out = ""
    node: Any = data
    parent: int | str | None = None
    for key in loc:
        item: Any = None
        if key == "[key]":  # pydantic's marker for an invalid mapping key
            out += " (key)"
        elif isinstance(key, int):
            out += f"[{key}]"
            item = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
            if parent == "rules" and isinstance(item, dict) and isinstance(item.get("name"), str):
                out += f" ({item['name']!r})"
        else:
            out += ("." if out else "") + str(key)
            item = node.get(key) if isinstance(node, dict) else None
        parent, node = key, item
    return out


def parse_policy(text: str, source: str = "<policy>") -> SeverityPolicy:
    """Parse and validate policy YAML; ConfigError names *source*, the field and its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the severity policy must be a YAML mapping")
    try:
        policy = SeverityPolicy.model_validate(data, context={"defer_cross_check": True})
    except ValidationError as exc:
        found = [(tuple(e["loc"]), str(e["msg"]).removeprefix("Value error, ")) for e in exc.errors()]
        raise ConfigError(_format_problems(source, found, root, data)) from exc
    problems = cross_check(policy)
    if problems:
        raise ConfigError(_format_problems(source, problems, root, data))
    return policy


def _format_problems(
    source: str, problems: list[tuple[tuple[int | str, ...], str]], root: yaml.Node | None, data: Any
) -> str:
    lines = []
    for loc, message in problems:
        line = _node_line(root, loc)
        at = f":{line}" if line else ""
        lines.append(f"{source}{at}: {_field_path(loc, data) or '(top level)'}: {message}")
    return "invalid severity policy\n  " + "\n  ".join(lines)


def load_policy(path: Path | str) -> SeverityPolicy:
    """Read and validate the policy file at *path* (ConfigError on any problem)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read severity policy: {exc.strerror or exc}") from exc
    return parse_policy(text, str(file))


# --------------------------------------------------------------------------------------------
# Classification


@dataclass(frozen=True)
class AlertView:
    """The parts of an alert the classifier reads."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_alert(cls, alert: Mapping[str, Any]) -> AlertView:
        """Build from one Alertmanager alert object (``labels`` and ``annotations`` maps)."""
        labels = alert.get("labels")
        annotations = alert.get("annotations")
        labels = {} if labels is None else labels
        annotations = {} if annotations is None else annotations
        if not isinstance(labels, Mapping) or not isinstance(annotations, Mapping):
            raise ValueError("alert labels and annotations must be JSON objects")
        return cls(
            labels={str(k): str(v) for k, v in labels.items()},
            annotations={str(k): str(v) for k, v in annotations.items()},
        )


@dataclass(frozen=True)
class Classification:
    """A severity, the rule that chose it (None: the default), and a human explanation."""

    severity: Severity
    rule: str | None
    explanation: str
    signals_used: Mapping[str, float]
    labels_only: bool
    matched_rules: tuple[str, ...] = ()
    notify_only: str | None = None
    """The notify-only rule that matched (None: the bot may act, e.g. start runbooks)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "severity": self.severity.value,
            "rule": self.rule,
            "explanation": self.explanation,
            "signals_used": dict(self.signals_used),
            "labels_only": self.labels_only,
            "matched_rules": list(self.matched_rules),
            "notify_only": self.notify_only,
        }


def _known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _match_rule(
    rule: Rule, alert: AlertView, signals: Mapping[str, float | None]
) -> tuple[list[str], dict[str, float]] | None:
    reasons: list[str] = []
    used: dict[str, float] = {}
    for matchers, values in ((rule.when.labels, alert.labels), (rule.when.annotations, alert.annotations)):
        for name, matcher in matchers.items():
            text = values.get(name, "")
            if not matcher.matches(text):
                return None
            reasons.append(matcher.describe(name, text))
    for name, threshold in rule.when.signals.items():
        number = signals.get(name)
        if number is None or math.isnan(number) or not threshold.matches(number):
            return None
        used[name] = number
        reasons.append(threshold.describe(name, number))
    return reasons, used


def classify(
    alert: AlertView | Mapping[str, str],
    signals: Mapping[str, float | None] | None,
    policy: SeverityPolicy,
) -> Classification:
    """Classify one alert (or bare label map); *signals* None means no Prometheus: labels alone."""
    view = alert if isinstance(alert, AlertView) else AlertView(labels=alert)
    values: Mapping[str, float | None] = signals if signals is not None else {}
    best: tuple[Rule, list[str], dict[str, float]] | None = None
    matched: list[str] = []
    quiet: Rule | None = None
    for rule in policy.rules:
        result = _match_rule(rule, view, values)
        if result is None:
            continue
        matched.append(rule.name)
        if rule.notify_only and quiet is None:
            quiet = rule
        if best is None or rule.level.outranks(best[0].level):
            best = (rule, *result)
    if best is None:
        severity, rule_name, used = policy.default_level, None, dict[str, float]()
        text = f"{severity.value} by default: no rule matched"
    else:
        rule, reasons, used = best
        severity, rule_name = rule.level, rule.name
        text = f"{severity.value} by rule '{rule.name}': " + "; ".join(reasons)
        if rule.reason:
            text += f" ({rule.reason})"
    if quiet is not None:
        text += f"; notify only (rule '{quiet.name}'): no runbook is started automatically"
    if signals is None:
        text += " (classified on labels alone: no Prometheus signals)"
    else:
        unknown = [n for n in policy.referenced_signals() if not _known(signals.get(n))]
        if unknown:
            text += f" (signals unavailable: {', '.join(unknown)})"
    return Classification(
        severity=severity,
        rule=rule_name,
        explanation=text,
        signals_used=used,
        labels_only=signals is None,
        matched_rules=tuple(matched),
        notify_only=None if quiet is None else quiet.name,
    )


def notify_only_rule(alert: AlertView | Mapping[str, str], policy: SeverityPolicy) -> str | None:
    """The first notify-only rule matching *alert* (labels and annotations), or None.

    Runbook auto-start asks this per alert: a notify-only alert starts no runbook.
    """
    view = alert if isinstance(alert, AlertView) else AlertView(labels=alert)
    for rule in policy.rules:
        if rule.notify_only and _match_rule(rule, view, {}) is not None:
            return rule.name
    return None


def most_severe_classification(items: Iterable[Classification]) -> Classification:
    """The most severe of several classifications (the first among equals); ValueError if none."""
    best: Classification | None = None
    for item in items:
        if best is None or item.severity.outranks(best.severity):
            best = item
    if best is None:
        raise ValueError("no classifications to choose from")
    return best


# --------------------------------------------------------------------------------------------
# Fetching signals (the only I/O, through a Protocol)


class SignalSource(Protocol):
    """Anything that can evaluate an instant PromQL query to one number."""

    def query_value(self, promql: str) -> float | None:
        """The query's value now; None when it returns no data.

        Implementations raise the project's TransientError / PermanentError, not vendor errors.
        """
        ...


def signal_queries(alert: AlertView | Mapping[str, str], policy: SeverityPolicy) -> dict[str, str | None]:
    """The rendered query of every signal a rule reads; None where the alert lacks a label."""
    labels = alert.labels if isinstance(alert, AlertView) else alert
    allowed = {k: v for k, v in labels.items() if k in policy.query_labels}
    return {name: render_query(policy.signals[name].query, allowed) for name in policy.referenced_signals()}


def fetch_signals(
    alert: AlertView | Mapping[str, str], policy: SeverityPolicy, source: SignalSource
) -> dict[str, float | None]:
    """Evaluate the policy's signals for *alert*; a failing or unrenderable query gives None."""
    values: dict[str, float | None] = {}
    for name, query in signal_queries(alert, policy).items():
        if query is None:
            values[name] = None
            continue
        try:
            values[name] = source.query_value(query)
        except IncidentBotError as exc:
            log.warning("signal %s unavailable: %s", name, exc)
            values[name] = None
    return values
