"""Test-wide settings: a private Redis database and key prefix, set before anything reads settings."""

from __future__ import annotations

import os

# Must run before bot.settings is imported anywhere: tests never touch the operator's database 0.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("KEY_PREFIX", "ibtest:")
os.environ.setdefault("ALERTMANAGER_TOKEN", "test-token-0123456789")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Intake tests count timeline entries; runbook tests start runs explicitly (and turn this on where tested).
os.environ.setdefault("RUNBOOK_AUTO_RUN", "false")

pytest_plugins = ["tests.support.fixtures"]
