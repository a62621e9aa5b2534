"""The worker classifies with live Prometheus signals when PROMETHEUS_URL is set, labels alone otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.models import AlertmanagerWebhook
from bot.settings import Settings
from bot.wiring import classifier
from tests.support.payloads import alert, notification
from tests.support.prometheus import run_prometheus

pytestmark = pytest.mark.integration


def test_worker_classifier_queries_prometheus_only_when_configured(
    settings: Settings, tmp_path: Path
) -> None:
    webhook = AlertmanagerWebhook.model_validate(notification([alert("VLLMHighQueueDepth")]))
    severity, reason = classifier(settings.model_copy(update={"prometheus_url": None}))(webhook)
    assert severity.value == "P2" and "labels alone" in reason
    with run_prometheus(tmp_path / "prom") as prom:  # a real Prometheus with no series for these signals
        live = settings.model_copy(update={"prometheus_url": f"http://127.0.0.1:{prom.port}"})
        severity, reason = classifier(live)(webhook)
    assert severity.value == "P2"
    assert (
        "labels alone" not in reason and "signals unavailable" in reason
    )  # it asked, and said what was missing
