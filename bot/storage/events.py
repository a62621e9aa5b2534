"""The notification events stream: what the Slack and PagerDuty layers consume.

One Redis Stream, ``<prefix>events``, capped at about EVENTS_MAXLEN entries. Each entry has two fields:
``type`` (for cheap filtering) and ``data`` (a JSON object holding every field, ``type`` included).
Events are written in the same MULTI/EXEC as the state change they report, so a consumer never sees an
event whose change did not happen, and a redelivered task never writes an event twice. The schema is
in the README ("Events stream").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import redis

from bot.models import Incident

#: Every event type written today.
EVENT_TYPES = frozenset(
    {
        "escalated",
        "reminder",
        "flapping",
        "postmortem_ready",
        "reopened",
        "severity_changed",
        "automation_disabled",
        "automation_enabled",
    }
)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Event:
    """One entry read back from the events stream."""

    id: str
    type: str
    data: dict[str, object]


def incident_fields(incident: Incident, *, page: bool) -> dict[str, object]:
    """The fields every incident event carries."""
    return {
        "incident_id": incident.id,
        "title": incident.title,
        "severity": incident.severity.value,
        "status": incident.status.value,
        "group_key": incident.group_key,
        "in_maintenance": incident.in_maintenance,
        "maintenance_reason": incident.maintenance_reason,
        "page": page and not incident.in_maintenance,
    }


class EventLog:
    """Appends to and reads the events stream."""

    def __init__(self, client: redis.Redis, prefix: str = "ib:", *, maxlen: int = 100_000) -> None:
        self._r = client
        self.key = prefix + "events"
        self._maxlen = maxlen

    def add(
        self,
        pipe: redis.client.Pipeline | redis.Redis,
        type_: str,
        at: datetime,
        fields: Mapping[str, object],
    ) -> None:
        """Queue one event on *pipe* (a MULTI pipeline, or the client itself to write at once)."""
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type_!r}")
        body = {"type": type_, "at": at.isoformat(), **fields}
        pipe.xadd(
            self.key,
            {"type": type_, "data": json.dumps(body, default=str, sort_keys=True)},
            maxlen=self._maxlen,
            approximate=True,
        )

    def read(self, *, after: str = "-", count: int = 1000, type_: str | None = None) -> list[Event]:
        """Events after stream id *after* (exclusive; "-" from the start), oldest first."""
        start = after if after == "-" else f"({after}"
        out = []
        for entry_id, fields in self._r.xrange(self.key, min=start, count=count) or []:
            f = {_text(k): _text(v) for k, v in (fields or {}).items()}
            if type_ is not None and f.get("type") != type_:
                continue
            out.append(Event(_text(entry_id), f.get("type", ""), json.loads(f.get("data", "{}"))))
        return out
