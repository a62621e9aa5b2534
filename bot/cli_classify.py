"""`incident-bot classify`: show the severity the policy gives an alert, and why.

Usage::

    incident-bot classify --alert FILE [--json] [--policy FILE] [--prometheus URL]

FILE (``-`` for stdin) is an Alertmanager v4 webhook body or one alert object (``labels``,
``annotations``). Without ``--prometheus`` the alert is classified on its labels alone, and the
output says so. The main CLI wires this in with :func:`add_classify_parser` and calls
``args.handler(args)``.

Exit status: 0 classified; 2 the alert file or the policy is unusable.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx

from bot.errors import ConfigError, PermanentError, TransientError
from bot.settings import get_settings
from bot.severity import (
    AlertView,
    Classification,
    SeverityPolicy,
    SignalSource,
    classify,
    fetch_signals,
    load_policy,
    most_severe_classification,
)

EXIT_OK = 0
EXIT_BAD_INPUT = 2


class HttpxPrometheusSource:
    """A minimal SignalSource over Prometheus' HTTP API (``GET /api/v1/query``).

    Stand-in until ``bot.integrations.prometheus`` exists; :func:`make_signal_source` is the seam.
    A vector result with several series yields the largest value; no data or NaN yields None.
    """

    def __init__(self, base_url: str, *, timeout: float = 5.0, client: httpx.Client | None = None) -> None:
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self._client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        """Close the underlying HTTP client."""
        self._client.close()

    def query_value(self, promql: str) -> float | None:
        """Evaluate *promql* now and reduce the result to one number."""
        try:
            response = self._client.get(self._url, params={"query": promql})
        except httpx.HTTPError as exc:
            raise TransientError(f"prometheus query failed: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"prometheus answered {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise PermanentError(f"prometheus answered {response.status_code} with non-JSON") from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise PermanentError(f"prometheus refused the query: {body.get('error', response.status_code)}")
        return _reduce(body.get("data") or {})


def _reduce(data: Mapping[str, Any]) -> float | None:
    kind = data.get("resultType")
    result = data.get("result")
    if kind not in ("scalar", "vector") or not isinstance(result, list):
        raise PermanentError(f"expected an instant vector or scalar, got {kind!r}")
    try:
        values = [float(result[1])] if kind == "scalar" else [float(item["value"][1]) for item in result]
    except (LookupError, TypeError, ValueError) as exc:
        raise PermanentError(f"malformed {kind} result from prometheus: {exc!r}") from exc
    known = [v for v in values if not math.isnan(v)]
    return max(known) if known else None


class _MemoSource:
    """Asks each distinct query once (alerts of one group usually share their labels)."""

    def __init__(self, inner: SignalSource) -> None:
        self._inner = inner
        self._seen: dict[str, float | None] = {}

    def query_value(self, promql: str) -> float | None:
        """The inner source's answer, remembered."""
        if promql not in self._seen:
            self._seen[promql] = self._inner.query_value(promql)
        return self._seen[promql]


def make_signal_source(url: str) -> HttpxPrometheusSource:
    """The SignalSource used for ``--prometheus URL``."""
    return HttpxPrometheusSource(url)


def add_classify_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register the ``classify`` sub-command; its handler is ``args.handler(args) -> int``."""
    parser = subparsers.add_parser(
        "classify",
        help="show the severity the policy gives an alert, and why",
        description="Classify an Alertmanager webhook body or a single alert with the severity policy.",
    )
    parser.add_argument(
        "--alert", required=True, metavar="FILE", help="webhook (v4) or single alert JSON; '-' reads stdin"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    parser.add_argument(
        "--policy", metavar="FILE", type=Path, help="severity policy YAML (default: SEVERITY_POLICY)"
    )
    parser.add_argument(
        "--prometheus", metavar="URL", help="Prometheus base URL for live signals (default: labels only)"
    )
    parser.set_defaults(handler=run_classify)
    return parser


def read_alerts(text: str) -> list[AlertView]:
    """The alerts in a webhook body or single-alert JSON; ValueError names what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object (an Alertmanager webhook or one alert)")
    if "alerts" in data:
        items = data["alerts"]
        if not isinstance(items, list) or not items:
            raise ValueError("alerts: expected a non-empty list")
    elif "labels" in data:
        items = [data]
    else:
        raise ValueError("expected a webhook body with 'alerts' or an alert with 'labels'")
    alerts = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("labels"), dict):
            raise ValueError(f"alerts[{index}].labels: expected an object")
        try:
            alerts.append(AlertView.from_alert(item))
        except ValueError as exc:
            raise ValueError(f"alerts[{index}]: {exc}") from exc
    return alerts


def _alert_name(alert: AlertView) -> str:
    pairs = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(alert.labels.items()) if k != "alertname")
    return f"{alert.labels.get('alertname', '(no alertname)')}{{{pairs}}}"


def run_classify(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Handle ``incident-bot classify``; returns the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        text = sys.stdin.read() if args.alert == "-" else Path(args.alert).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot read {args.alert}: {exc.strerror or exc}", file=err)
        return EXIT_BAD_INPUT
    try:
        alerts = read_alerts(text)
    except ValueError as exc:
        print(f"error: {args.alert}: {exc}", file=err)
        return EXIT_BAD_INPUT
    try:
        policy = load_policy(args.policy or get_settings().severity_policy)
    except ConfigError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_BAD_INPUT

    source = make_signal_source(args.prometheus) if args.prometheus else None
    try:
        results = _classify_all(alerts, policy, source)
    finally:
        if source is not None:
            source.close()
    overall = most_severe_classification(c for _, c, _ in results)
    if args.json:
        document = _finite(_as_json(overall, results, policy, args.prometheus))
        print(json.dumps(document, indent=2, allow_nan=False), file=out)
    else:
        _print_text(out, overall, results, policy, args.prometheus)
    return EXIT_OK


def _classify_all(
    alerts: list[AlertView], policy: SeverityPolicy, source: SignalSource | None
) -> list[tuple[AlertView, Classification, dict[str, float | None] | None]]:
    memo = _MemoSource(source) if source is not None else None
    results = []
    for alert in alerts:
        signals = fetch_signals(alert, policy, memo) if memo is not None else None
        results.append((alert, classify(alert, signals, policy), signals))
    return results


def _print_text(
    out: TextIO,
    overall: Classification,
    results: list[tuple[AlertView, Classification, dict[str, float | None] | None]],
    policy: SeverityPolicy,
    prometheus: str | None,
) -> None:
    level = policy.level(overall.severity)
    if len(results) > 1:
        for index, (alert, item, _) in enumerate(results, start=1):
            print(f"alert {index}/{len(results)} {_alert_name(alert)}: {item.explanation}", file=out)
        print(file=out)
    pages = "pages" if level.page else "no page"
    print(f"severity: {overall.severity.value} ({level.name}; {level.slack_channel}; {pages})", file=out)
    print(f"rule: {overall.rule or '(default)'}", file=out)
    print(f"explanation: {overall.explanation}", file=out)
    if prometheus is None:
        print("signals: none: no --prometheus given, classified on labels alone", file=out)
    else:
        signals = results[0][2] or {}
        shown = ", ".join(f"{k}={'n/a' if v is None else f'{v:.6g}'}" for k, v in signals.items())
        print(f"signals ({prometheus}): {shown}", file=out)


def _finite(value: Any) -> Any:
    """*value* with every non-finite float replaced by None, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _as_json(
    overall: Classification,
    results: list[tuple[AlertView, Classification, dict[str, float | None] | None]],
    policy: SeverityPolicy,
    prometheus: str | None,
) -> dict[str, Any]:
    level = policy.level(overall.severity)
    return {
        **overall.to_dict(),
        "level": {
            "name": level.name,
            "slack_channel": level.slack_channel,
            "page": level.page,
            "notify": list(level.notify),
            "response_seconds": level.response.total_seconds(),
            "escalation_seconds": level.escalation.total_seconds(),
        },
        "prometheus": prometheus,
        "alerts": [
            {"labels": dict(alert.labels), **item.to_dict(), "signals": signals}
            for alert, item, signals in results
        ],
    }
