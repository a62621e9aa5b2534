"""SLO error budgets and multi-window burn-rate alerting, as plain arithmetic (no I/O).

Vocabulary (as in the Google SRE workbook, chapter "Alerting on SLOs"):

* **target**: the fraction of good events promised, e.g. 0.999 (99.9 % availability).
* **error budget**: ``1 - target``, the fraction of events allowed to fail (0.001). Over a period
  (30 days by default) it is also an amount of time: 0.001 x 30 d = 43.2 min.
* **burn rate**: ``observed error ratio / error budget``. A burn rate of 1 spends the budget
  exactly over the period; 14.4 spends 2 % of a 30-day budget in one hour.
* **multi-window rule**: act only when the burn rate exceeds the threshold over BOTH a long window
  (it is significant) and a short one (it is still happening). Defaults: page when > 14.4 over 1 h
  and 5 m; open a ticket when > 6 over 6 h and 30 m.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

DEFAULT_PERIOD = timedelta(days=30)


def _check_target(target: float) -> None:
    if not 0.0 < target < 1.0:
        raise ValueError(f"an SLO target is a fraction strictly between 0 and 1, got {target!r}")


def error_budget(target: float) -> float:
    """The fraction of events allowed to fail under *target* (0.999 -> 0.001)."""
    _check_target(target)
    return 1.0 - target


def error_budget_time(target: float, period: timedelta = DEFAULT_PERIOD) -> timedelta:
    """The error budget as time over *period* (0.999 over 30 days -> 43.2 minutes)."""
    return period * error_budget(target)


def burn_rate(error_ratio: float, target: float) -> float:
    """How fast the budget burns: observed error ratio / (1 - target)."""
    if error_ratio < 0.0:
        raise ValueError(f"an error ratio cannot be negative, got {error_ratio!r}")
    return error_ratio / error_budget(target)


def error_ratio_for_burn_rate(rate: float, target: float) -> float:
    """The error ratio that burns at *rate* under *target* (14.4 at 0.999 -> 0.0144)."""
    return rate * error_budget(target)


def budget_consumed(rate: float, window: timedelta, period: timedelta = DEFAULT_PERIOD) -> float:
    """Fraction of the period's budget spent by burning at *rate* for *window* (14.4, 1 h -> 0.02)."""
    return rate * (window / period)


def burn_rate_for_budget(fraction: float, window: timedelta, period: timedelta = DEFAULT_PERIOD) -> float:
    """The burn rate that spends *fraction* of the budget in *window* (0.02 in 1 h of 30 d -> 14.4)."""
    return fraction * (period / window)


def time_to_exhaustion(rate: float, period: timedelta = DEFAULT_PERIOD) -> timedelta | None:
    """How long a full budget lasts at *rate*; None when nothing is burning."""
    if rate <= 0.0:
        return None
    return period / rate


@dataclass(frozen=True)
class SLO:
    """A service level objective: a name, a target fraction and the budget period."""

    name: str
    target: float
    period: timedelta = DEFAULT_PERIOD

    def __post_init__(self) -> None:
        _check_target(self.target)

    @property
    def budget(self) -> float:
        """The error budget as a fraction of events."""
        return error_budget(self.target)

    @property
    def budget_time(self) -> timedelta:
        """The error budget as time over the period."""
        return error_budget_time(self.target, self.period)

    def burn_rate(self, error_ratio: float) -> float:
        """The burn rate of *error_ratio* against this SLO."""
        return burn_rate(error_ratio, self.target)


AVAILABILITY = SLO("availability", 0.999)
"""99.9 % of inference requests succeed at the gateway (llm-d EPP request/error counters)."""

SUCCESS_RATE = SLO("success-rate", 0.995)
"""99.5 % of requests finish successfully at the model server."""


@dataclass(frozen=True)
class MultiWindowRule:
    """Act when the burn rate exceeds *threshold* over both the long and the short window."""

    name: str
    action: Literal["page", "ticket"]
    long_window: timedelta
    short_window: timedelta
    threshold: float

    def fires(self, rates: Mapping[timedelta, float | None]) -> bool:
        """Whether both windows' burn rates are known and strictly above the threshold."""
        long_rate = rates.get(self.long_window)
        short_rate = rates.get(self.short_window)
        if long_rate is None or short_rate is None or math.isnan(long_rate) or math.isnan(short_rate):
            return False
        return long_rate > self.threshold and short_rate > self.threshold


PAGE_RULE = MultiWindowRule("fast-burn", "page", timedelta(hours=1), timedelta(minutes=5), 14.4)
TICKET_RULE = MultiWindowRule("slow-burn", "ticket", timedelta(hours=6), timedelta(minutes=30), 6.0)
DEFAULT_RULES: tuple[MultiWindowRule, ...] = (PAGE_RULE, TICKET_RULE)


@dataclass(frozen=True)
class BurnDecision:
    """The outcome of the multi-window rules: page, ticket or nothing, and why."""

    action: Literal["page", "ticket", "none"]
    rule: MultiWindowRule | None
    explanation: str


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def evaluate_burn_rates(
    rates: Mapping[timedelta, float | None], rules: Sequence[MultiWindowRule] = DEFAULT_RULES
) -> BurnDecision:
    """The first rule (pages before tickets) whose two windows both burn too fast, explained."""
    for rule in rules:
        if rule.fires(rates):
            return BurnDecision(
                rule.action,
                rule,
                f"{rule.action} by {rule.name}: burn rate "
                f"{promql_duration(rule.long_window)}={_fmt(rates.get(rule.long_window))} and "
                f"{promql_duration(rule.short_window)}={_fmt(rates.get(rule.short_window))} "
                f"both > {rule.threshold:g}",
            )
    seen = ", ".join(f"{promql_duration(w)}={_fmt(r)}" for w, r in sorted(rates.items()))
    return BurnDecision("none", None, f"no burn-rate rule fired ({seen or 'no rates'})")


def promql_duration(window: timedelta) -> str:
    """A window as a PromQL duration, largest whole unit first (1 h -> "1h", 90 s -> "1m30s")."""
    seconds = int(window.total_seconds())
    if seconds <= 0 or seconds != window.total_seconds():
        raise ValueError(f"a PromQL window is a positive whole number of seconds, got {window}")
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def burn_rate_promql(
    *, errors_metric: str, total_metric: str, target: float, window: timedelta, matchers: str = ""
) -> str:
    """PromQL for the burn rate over *window*: error ratio of two counters divided by the budget.

    *matchers* is the text between the braces, already safe (e.g. built with
    ``bot.severity.promql_string``, or a policy template such as ``namespace=$namespace``).
    """
    selector = "{" + matchers + "}" if matchers else ""
    span = promql_duration(window)
    budget = f"{error_budget(target):.12g}"
    return (
        f"(sum(rate({errors_metric}{selector}[{span}])) / sum(rate({total_metric}{selector}[{span}])))"
        f" / {budget}"
    )
