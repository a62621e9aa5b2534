"""Runbook runs in Redis: run records, per-step records, approvals, kick markers and the per-run lock.

Keys (under the store prefix):

    runbook:run:<run id>                         the run (JSON): cursor, status, params, step outputs
    runbook:runs:<incident id>                   list of the incident's run ids
    runbook:seq:<incident id>                    counter behind the incident's run numbers
    runbook:request:<request id>                 run id created for a request (a redelivered `run` task
                                                 finds it and creates nothing)
    incident:step:<incident id>:<run id>:<step>  one step's record: phase, intent, result, who approved
    runbook:runlock:<run id>                     one worker advances a run at a time
    runbook:kick:<run id>:<index>                the task for step <index> has been enqueued
    runbook:approval:<run id>:<step>             the approve/deny decision (first one wins)

Records are stored as the JSON the engine hands over; what they mean is the engine's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

#: A MULTI/EXEC batch: run and step writes and timeline entries (``IncidentStore.append_timeline``) together.
Transaction = redis.client.Pipeline

_REQUEST_TTL = 7 * 86400
_KICK_TTL = 7 * 86400
_DECISION_TTL = 30 * 86400


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RunStore:
    """The runbook engine's records under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._p = prefix

    def key(self, *parts: str) -> str:
        """A key under the store prefix."""
        return self._p + ":".join(parts)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A MULTI/EXEC pipeline, executed when the block ends without an exception."""
        pipe = self._r.pipeline(transaction=True)
        yield pipe
        pipe.execute()

    # --- runs ----------------------------------------------------------------------------------
    def next_number(self, incident_id: str) -> int:
        """The next run number of the incident (1, 2, …)."""
        return int(self._r.incr(self.key("runbook", "seq", incident_id)))

    def run_for_request(self, request_id: str) -> str | None:
        """The id of the run created for this request, if any."""
        existing = self._r.get(self.key("runbook", "request", request_id))
        return _text(existing) if existing is not None else None

    def claim_request(self, request_id: str, run_id: str) -> bool:
        """Tie the request to this run id unless another run claimed it first; True when claimed."""
        return bool(self._r.set(self.key("runbook", "request", request_id), run_id, nx=True, ex=_REQUEST_TTL))

    def add_run(self, incident_id: str, run_id: str, data: str, tx: Transaction) -> None:
        """Store a new run and append it to the incident's runs (inside `tx`)."""
        tx.set(self.key("runbook", "run", run_id), data)
        tx.rpush(self.key("runbook", "runs", incident_id), run_id)

    def run(self, run_id: str) -> str | bytes | None:
        """The stored run (JSON), or None."""
        raw: str | bytes | None = self._r.get(self.key("runbook", "run", run_id))
        return raw

    def save_run(self, run_id: str, data: str, tx: Transaction | None = None) -> None:
        """Overwrite the run (inside `tx` when given)."""
        (tx if tx is not None else self._r).set(self.key("runbook", "run", run_id), data)

    def run_ids(self, incident_id: str) -> list[str]:
        """The incident's run ids, oldest first."""
        return [_text(i) for i in self._r.lrange(self.key("runbook", "runs", incident_id), 0, -1)]

    # --- steps ---------------------------------------------------------------------------------
    def _step_key(self, incident_id: str, run_id: str, step_id: str) -> str:
        return self.key("incident", "step", incident_id, run_id, step_id)

    def step(self, incident_id: str, run_id: str, step_id: str) -> str | bytes | None:
        """The stored record of one step (JSON), or None."""
        raw: str | bytes | None = self._r.get(self._step_key(incident_id, run_id, step_id))
        return raw

    def save_step(
        self, incident_id: str, run_id: str, step_id: str, data: str, tx: Transaction | None = None
    ) -> None:
        """Overwrite one step's record (inside `tx` when given)."""
        (tx if tx is not None else self._r).set(self._step_key(incident_id, run_id, step_id), data)

    # --- advancing -----------------------------------------------------------------------------
    def lock_run(self, run_id: str, ttl_seconds: int) -> bool:
        """Take the run's lock for at most ttl; False when another worker holds it."""
        return bool(self._r.set(self.key("runbook", "runlock", run_id), "1", nx=True, ex=ttl_seconds))

    def unlock_run(self, run_id: str) -> None:
        """Release the run's lock."""
        self._r.delete(self.key("runbook", "runlock", run_id))

    def kicked(self, run_id: str, index: int) -> bool:
        """Whether the task for step *index* of the run has been enqueued."""
        return bool(self._r.exists(self.key("runbook", "kick", run_id, str(index))))

    def mark_kicked(self, run_id: str, index: int) -> None:
        """Remember that the task for step *index* has been enqueued."""
        self._r.set(self.key("runbook", "kick", run_id, str(index)), "1", ex=_KICK_TTL)

    # --- approvals -----------------------------------------------------------------------------
    def decision(self, run_id: str, step_id: str) -> str | bytes | None:
        """The recorded approve/deny decision of a step (JSON), or None."""
        raw: str | bytes | None = self._r.get(self.key("runbook", "approval", run_id, step_id))
        return raw

    def claim_decision(self, run_id: str, step_id: str, data: str) -> bool:
        """Record the decision unless one was recorded first; True when this one counts."""
        key = self.key("runbook", "approval", run_id, step_id)
        return bool(self._r.set(key, data, nx=True, ex=_DECISION_TTL))
