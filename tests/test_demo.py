"""`incident-bot demo` plays its three incidents end to end through the real bot process and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REDIS_BASE

pytestmark = pytest.mark.integration


def test_demo_plays_all_three_incidents_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PAGERDUTY_", "ALERTMANAGER_"))}
    # database 12: the test session's own worker consumes database 15's queues and must not take the demo's
    env["REDIS_URL"] = f"{REDIS_BASE}/12"
    r = subprocess.run(
        [sys.executable, "-m", "bot.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    # act 1: saturation -> P2 -> the runbook scales decode -> resolved
    assert "INC-0001 opened at P2: P2 by rule 'latency-alert'" in out
    assert "runbook scaled vllm-decode to 3 replicas" in out
    assert "INC-0001 resolved" in out
    # act 2: bad rollout -> P0 -> paged -> rolled back -> resolved here and in PagerDuty
    assert "INC-0002 opened at P0: P0 by rule 'outage-alert'" in out
    assert "PagerDuty paged (dedup key llmd-incident-bot/INC-0002)" in out
    assert "vllm-decode rolled back to vllm/vllm-openai:v0.8.5" in out
    assert "PagerDuty alert resolved" in out
    # what people saw: Slack channels rendered from the templates, PagerDuty calls, timelines
    assert "#incidents-medium" in out and "#incidents-critical" in out
    assert "trigger     llmd-incident-bot/INC-0002" in out and "resolve     llmd-incident-bot/INC-0002" in out
    assert "change      k8s.rollout_undo on llm-d/vllm-decode" in out
    assert "runbook_finished       Runbook service-down succeeded" in out
    # act 3: a bad canary of an Argo Rollout -> VLLMHighErrorRate -> the runbook aborts it -> resolved
    assert "INC-0003 opened at" in out
    assert "the high-error-rate runbook aborted vllm-decode-canary: back to the stable ReplicaSet" in out
    assert "errors stopped; INC-0003 resolved" in out
    assert "aborted Rollout llm-d/vllm-decode-canary at canary weight 20%" in out
    assert "runbook_finished       Runbook high-error-rate succeeded" in out
