"""Notify-only policy rules: validation, the explanation, and the auto-start gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.severity import classify, load_policy, notify_only_rule, parse_policy

POLICY = load_policy("bot/policy/severity.yaml")


def test_notify_only_is_stated_in_the_explanation_and_the_dict() -> None:
    result = classify({"alertname": "LLMDLowPrefixCacheHitRate", "team": "inference-platform"}, None, POLICY)
    assert result.notify_only == "tuning-notify-only"
    quiet = "notify only (rule 'tuning-notify-only'): no runbook is started automatically"
    assert quiet in result.explanation
    assert result.to_dict()["notify_only"] == "tuning-notify-only"
    acting = classify({"alertname": "LLMDServiceDown"}, None, POLICY)
    assert acting.notify_only is None and "notify only" not in acting.explanation
    assert "(the guide: Service Down is P0)" in acting.explanation


def test_gate_ignores_signals_and_matches_labels_only() -> None:
    assert notify_only_rule({"alertname": "IncidentBotDown", "severity": "critical"}, POLICY) is not None
    assert notify_only_rule({"alertname": "LLMDServiceDown"}, POLICY) is None


def test_a_notify_only_rule_on_signals_is_rejected() -> None:
    text = Path("bot/policy/severity.yaml").read_text(encoding="utf-8")
    bad = text + (
        "  - name: quiet-by-signal\n    level: P3\n    notify_only: true\n"
        "    when:\n      signals:\n        queue_size: {gte: 1}\n"
    )
    with pytest.raises(ConfigError, match="notify_only rule matches on labels and annotations only"):
        parse_policy(bad, "p.yaml")
