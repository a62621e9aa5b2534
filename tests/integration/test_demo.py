"""`incident-bot demo` runs end to end and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

pytestmark = pytest.mark.integration


def test_demo_plays_the_scenario(redis_client: redis.Redis) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ALERTMANAGER_TOKEN"}  # the demo makes its own
    r = subprocess.run(
        [sys.executable, "-m", "bot.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "HTTP 401" in r.stdout, r.stdout + r.stderr
    assert "[resolved]" in r.stdout
    assert "opened" in r.stdout and "alerts_changed" in r.stdout
    # the demo's incident is in the store, resolved, with no duplicate from the repeated delivery
    keys = [k.decode() for k in redis_client.keys("ibtest:inc:INC-*") if not k.endswith(b":timeline")]
    assert len(keys) == 1
