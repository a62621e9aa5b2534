"""SLO arithmetic against values computed by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot import slo
from bot.settings import Settings
from bot.severity import load_policy, render_query

H = timedelta(hours=1)
M = timedelta(minutes=1)


def test_error_budgets() -> None:
    assert slo.error_budget(0.999) == pytest.approx(0.001)
    assert slo.error_budget(0.995) == pytest.approx(0.005)
    assert slo.AVAILABILITY.budget == pytest.approx(0.001)
    assert slo.SUCCESS_RATE.budget == pytest.approx(0.005)
    # 30 d = 43 200 min; 0.1 % of it = 43.2 min; 0.5 % = 216 min = 3 h 36 min.
    assert slo.error_budget_time(0.999) == pytest.approx(timedelta(minutes=43.2), abs=timedelta(seconds=0.01))
    assert slo.SUCCESS_RATE.budget_time == pytest.approx(
        timedelta(hours=3, minutes=36), abs=timedelta(seconds=0.01)
    )
    # 28-day period: 40 320 min x 0.001 = 40.32 min.
    assert slo.error_budget_time(0.999, timedelta(days=28)) == pytest.approx(
        timedelta(minutes=40.32), abs=timedelta(seconds=0.01)
    )


@pytest.mark.parametrize(
    ("error_ratio", "target", "expected"),
    [
        (0.0144, 0.999, 14.4),  # the page threshold
        (0.006, 0.999, 6.0),  # the ticket threshold
        (0.001, 0.999, 1.0),  # exactly on budget
        (0.0, 0.999, 0.0),
        (0.02, 0.999, 20.0),
        (0.072, 0.995, 14.4),
        (0.12, 0.995, 24.0),
        (1.0, 0.999, 1000.0),
    ],
)
def test_burn_rate(error_ratio: float, target: float, expected: float) -> None:
    assert slo.burn_rate(error_ratio, target) == pytest.approx(expected)
    assert slo.error_ratio_for_burn_rate(expected, target) == pytest.approx(error_ratio)


def test_slo_object_burn_rate() -> None:
    assert slo.AVAILABILITY.burn_rate(0.0144) == pytest.approx(14.4)
    assert slo.SUCCESS_RATE.burn_rate(0.0144) == pytest.approx(2.88)


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5, -0.1])
def test_target_must_be_a_fraction(target: float) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        slo.error_budget(target)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        slo.SLO("x", target)


def test_negative_error_ratio_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        slo.burn_rate(-0.01, 0.999)


def test_budget_consumption_over_30_days() -> None:
    # 14.4 x 1 h / 720 h = 2 %; 6 x 6 h / 720 h = 5 %; 1 x 720 h = 100 %; 36 x 5 m = 0.4167 %.
    assert slo.budget_consumed(14.4, H) == pytest.approx(0.02)
    assert slo.budget_consumed(6, 6 * H) == pytest.approx(0.05)
    assert slo.budget_consumed(1, timedelta(days=30)) == pytest.approx(1.0)
    assert slo.budget_consumed(36, 5 * M) == pytest.approx(36 * 5 / 43_200)
    assert slo.burn_rate_for_budget(0.02, H) == pytest.approx(14.4)
    assert slo.burn_rate_for_budget(0.05, 6 * H) == pytest.approx(6.0)
    assert slo.burn_rate_for_budget(0.10, timedelta(days=3)) == pytest.approx(1.0)


def test_time_to_exhaustion() -> None:
    # 720 h / 14.4 = 50 h; 720 h / 6 = 120 h = 5 d; 720 h / 1000 = 43.2 min.
    assert slo.time_to_exhaustion(14.4) == pytest.approx(50 * H, abs=timedelta(seconds=0.01))
    assert slo.time_to_exhaustion(6) == timedelta(days=5)
    assert slo.time_to_exhaustion(1000) == pytest.approx(timedelta(minutes=43.2), abs=timedelta(seconds=0.01))
    assert slo.time_to_exhaustion(0) is None


def _rates(
    r1h: float | None, r5m: float | None, r6h: float | None, r30m: float | None
) -> dict[timedelta, float | None]:
    return {H: r1h, 5 * M: r5m, 6 * H: r6h, 30 * M: r30m}


@pytest.mark.parametrize(
    ("rates", "action"),
    [
        (_rates(20, 20, 20, 20), "page"),
        (_rates(14.5, 15, 1, 1), "page"),
        (_rates(14.4, 20, 7, 7), "ticket"),  # 1h exactly at threshold is not above it
        (_rates(20, 14.0, 7, 7), "ticket"),  # the spike is over: short window below
        (_rates(10, 30, 1, 30), "none"),  # only the short windows burn
        (_rates(30, 1, 30, 1), "none"),  # only the long windows burn
        (_rates(6.1, 6.1, 6.1, 6.1), "ticket"),
        (_rates(6, 6, 6, 6), "none"),
        (_rates(None, 50, None, 50), "none"),  # unknown long windows never fire
        (_rates(float("nan"), 50, 7, 7), "ticket"),
    ],
)
def test_multi_window_rules(rates: dict[timedelta, float | None], action: str) -> None:
    decision = slo.evaluate_burn_rates(rates)
    assert decision.action == action
    if action == "page":
        assert decision.rule is slo.PAGE_RULE
        assert "both > 14.4" in decision.explanation
    elif action == "ticket":
        assert decision.rule is slo.TICKET_RULE
        assert decision.explanation.startswith("ticket by slow-burn: burn rate 6h=")
    else:
        assert decision.rule is None


def test_page_explanation_names_both_windows() -> None:
    decision = slo.evaluate_burn_rates(_rates(20, 21.5, None, None))
    assert decision.explanation == "page by fast-burn: burn rate 1h=20 and 5m=21.5 both > 14.4"


@pytest.mark.parametrize(
    ("window", "text"),
    [
        (H, "1h"),
        (5 * M, "5m"),
        (30 * M, "30m"),
        (6 * H, "6h"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=3), "3d"),
    ],
)
def test_promql_duration(window: timedelta, text: str) -> None:
    assert slo.promql_duration(window) == text


def test_promql_duration_rejects_fractions() -> None:
    with pytest.raises(ValueError, match="positive whole number"):
        slo.promql_duration(timedelta(milliseconds=1500))
    with pytest.raises(ValueError, match="positive whole number"):
        slo.promql_duration(timedelta(0))


def test_burn_rate_promql() -> None:
    query = slo.burn_rate_promql(
        errors_metric="inference_objective_request_error_total",
        total_metric="inference_objective_request_total",
        target=0.999,
        window=H,
        matchers='namespace="llm"',
    )
    assert query == (
        '(sum(rate(inference_objective_request_error_total{namespace="llm"}[1h]))'
        ' / sum(rate(inference_objective_request_total{namespace="llm"}[1h]))) / 0.001'
    )
    bare = slo.burn_rate_promql(errors_metric="e", total_metric="t", target=0.995, window=30 * M)
    assert bare == "(sum(rate(e[30m])) / sum(rate(t[30m]))) / 0.005"


@pytest.mark.parametrize("window", [5 * M, 30 * M, H, 6 * H])
def test_shipped_policy_burn_rate_queries_match_the_helper(window: timedelta) -> None:
    policy = load_policy(Settings().severity_policy)
    name = f"burn_rate_{slo.promql_duration(window)}"
    labels = {"namespace": "llm-prod"}
    shipped = render_query(" ".join(policy.signals[name].query.split()), labels)
    helper = slo.burn_rate_promql(
        errors_metric="inference_objective_request_error_total",
        total_metric="inference_objective_request_total",
        target=slo.AVAILABILITY.target,
        window=window,
        matchers="namespace=$namespace",
    )
    assert shipped == render_query(helper, labels)
