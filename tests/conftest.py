"""Test-wide settings, fixed before anything reads them.

Each test session gets a redis-server of its own on a free loopback port (state in database 15, a spare
broker in 14, scratch in 13), so parallel sessions on one machine never consume each other's Celery
messages or incidents. Set TEST_REDIS_URL (e.g. redis://127.0.0.1:6379, no database number) to use an
existing server instead; its databases 13-15 are then used and keys under the `ibtest:` prefix deleted.
"""

from __future__ import annotations

import atexit
import os

from tests.support.services import RedisServer


def _session_redis() -> str:
    shared = os.environ.get("TEST_REDIS_URL")
    if shared:
        return shared.rstrip("/")  # a server URL without a database number
    server = RedisServer()
    server.start()
    atexit.register(server.cleanup)
    return f"redis://127.0.0.1:{server.port}"


# Must run before bot.settings is read anywhere (workers.celery_app reads it at import).
REDIS_BASE = _session_redis()
os.environ["REDIS_URL"] = f"{REDIS_BASE}/15"
os.environ.pop("BROKER_URL", None)
os.environ.setdefault("KEY_PREFIX", "ibtest:")
os.environ.setdefault("ALERTMANAGER_TOKEN", "test-token-0123456789")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Intake tests count timeline entries; runbook tests start runs explicitly (and turn this on where tested).
os.environ.setdefault("RUNBOOK_AUTO_RUN", "false")

pytest_plugins = ["tests.support.fixtures"]
