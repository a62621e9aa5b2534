"""The audit trail: every accepted or refused command, in the Redis Stream `audit`."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

#: Keep roughly this many audit records (XADD MAXLEN ~).
AUDIT_MAXLEN = 100_000


def _t(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AuditLog:
    """Appends audit records to a Redis Stream and reads them back."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._r = client
        self.key = key

    def record(
        self,
        *,
        actor: str,
        team_id: str,
        action: str,
        outcome: str,
        args: dict[str, Any] | None = None,
        reason: str = "",
        source: str = "slack",
    ) -> str:
        """Append one record (outcome: accepted, refused, failed); returns the stream entry id."""
        fields = {
            "at": f"{time.time():.3f}",
            "source": source,
            "actor": actor,
            "team_id": team_id,
            "action": action,
            "outcome": outcome,
            "args": json.dumps(args or {}, default=str, sort_keys=True),
            "reason": reason,
        }
        return _t(self._r.xadd(self.key, fields, maxlen=AUDIT_MAXLEN, approximate=True))  # type: ignore[arg-type]

    def entries(self, count: int = 1000) -> list[dict[str, str]]:
        """The newest `count` records, oldest first."""
        rows = self._r.xrevrange(self.key, count=count) or []
        return [{_t(k): _t(v) for k, v in (fields or {}).items()} for _, fields in reversed(rows)]
