"""Rollback requests and the one table of moves between their states.

    requested ──▶ previewed ──(approve)──▶ approved ──▶ executing ──▶ verified
        │            │  │                     │              └──────▶ failed
        ▼            │  └──(cancel)──▶ cancelled               │
     refused ◀───────┴─────────────────────┘ (re-checks)      ▼
                     └──(deadline passed)──▶ expired

The records, their keys and the one open request per Deployment live in bot/storage/rollbacks.py.

Every move is a WATCHed read-check-write, so two workers (two clicks, a click and an expiry) cannot
both move a request out of the same state: the second one finds the state changed and is refused.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from bot.errors import PermanentError
from bot.storage.rollbacks import Rewrite, RollbackStore


class State(StrEnum):
    """Where a rollback request is."""

    REQUESTED = "requested"
    PREVIEWED = "previewed"
    APPROVED = "approved"
    EXECUTING = "executing"
    VERIFIED = "verified"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REFUSED = "refused"

    @property
    def terminal(self) -> bool:
        """Whether nothing more happens to a request in this state."""
        return self in TERMINAL


TERMINAL = frozenset({State.VERIFIED, State.FAILED, State.CANCELLED, State.EXPIRED, State.REFUSED})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.REQUESTED: frozenset({State.PREVIEWED, State.REFUSED}),
    State.PREVIEWED: frozenset({State.APPROVED, State.CANCELLED, State.EXPIRED, State.REFUSED}),
    State.APPROVED: frozenset({State.EXECUTING, State.REFUSED}),
    State.EXECUTING: frozenset({State.VERIFIED, State.FAILED}),
    State.VERIFIED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
    State.EXPIRED: frozenset(),
    State.REFUSED: frozenset(),
}


class InvalidMove(PermanentError):
    """The request is not in a state that allows this move (someone else moved it first)."""


class RequestNotFound(PermanentError):
    """No rollback request has that id."""


class Busy(PermanentError):
    """Another rollback request of the same Deployment is still open."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class Step(BaseModel):
    """One move in a request's history."""

    state: State
    at: datetime
    actor: str
    note: str = ""


class RollbackRequest(BaseModel):
    """A person's request to roll one Deployment back, from preview to verified outcome."""

    id: str
    namespace: str
    deployment: str
    kind: str = "Deployment"
    """The workload's kind (Deployment, StatefulSet, LeaderWorkerSet, Rollout); ``deployment`` is its name."""
    requested_revision: int | None = None
    incident_id: str | None = None
    requester: str
    dry_run: bool = False
    state: State = State.REQUESTED
    created_at: datetime
    expires_at: datetime | None = None
    two_person: bool = False
    preview: dict[str, Any] = Field(default_factory=dict)
    approved_by: str | None = None
    decided_by: str | None = None
    reason: str = ""
    from_revision: int | None = None
    to_revision: int | None = None
    intent_generation: int | None = None
    verification: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    slack_channel: str | None = None
    slack_ts: str | None = None
    history: list[Step] = Field(default_factory=list)

    @property
    def target(self) -> str:
        """`namespace/deployment`."""
        return f"{self.namespace}/{self.deployment}"

    @property
    def duration_s(self) -> float | None:
        """Seconds from the start of execution to the outcome."""
        if self.started_at and self.finished_at:
            return round((self.finished_at - self.started_at).total_seconds(), 3)
        return None


class RollbackRequests:
    """Rollback requests over their records in bot.storage.rollbacks; every state change is :meth:`move`."""

    def __init__(self, store: RollbackStore) -> None:
        self._store = store

    def get(self, request_id: str) -> RollbackRequest:
        """The request with this id."""
        return _parse(request_id, self._store.load(request_id))

    def active(self, namespace: str, deployment: str) -> str | None:
        """The id of the Deployment's open request, if any."""
        return self._store.holder(f"{namespace}/{deployment}")

    def create(
        self,
        *,
        namespace: str,
        deployment: str,
        requested_revision: int | None,
        incident_id: str | None,
        requester: str,
        dry_run: bool,
        now: datetime,
        claim: bool = True,
        kind: str = "Deployment",
    ) -> RollbackRequest:
        """A new request in state `requested`; with `claim` it must own its Deployment (raises Busy)."""
        number = self._store.next_number()
        request = RollbackRequest(
            id=f"RB-{number:04d}",
            namespace=namespace,
            deployment=deployment,
            kind=kind,
            requested_revision=requested_revision,
            incident_id=incident_id,
            requester=requester,
            dry_run=dry_run,
            created_at=now,
            history=[Step(state=State.REQUESTED, at=now, actor=requester)],
        )
        if claim:
            holder = self._store.claim(request.target, request.id)
            if holder is not None:
                raise Busy(f"rollback {holder} of {request.target} is still open", holder)
        self._store.save(request.id, request.model_dump_json())
        return request

    def release_stale(self, namespace: str, deployment: str, holder: str) -> bool:
        """Free the Deployment's claim if `holder` still has it (the holder ended or never got saved)."""
        return self._store.release_if_held(f"{namespace}/{deployment}", holder)

    def move(
        self, request_id: str, to: State, actor: str, *, at: datetime, note: str = "", **changes: Any
    ) -> RollbackRequest:
        """Move a request to `to` (allowed by TRANSITIONS from its current state) with field changes."""
        moved: list[RollbackRequest] = []

        def change(raw: str | None) -> Rewrite:
            current = _parse(request_id, raw)
            if to not in TRANSITIONS[current.state]:
                raise InvalidMove(
                    f"rollback {request_id} is {current.state.value}; it cannot become {to.value}"
                )
            step = Step(state=to, at=at, actor=actor, note=note)
            updated = current.model_copy(update={**changes, "state": to, "history": [*current.history, step]})
            moved[:] = [updated]
            return Rewrite(updated.model_dump_json(), current.target if to.terminal else None)

        self._store.rewrite(request_id, change)
        return moved[0]

    def update(self, request_id: str, **changes: Any) -> RollbackRequest:
        """Change fields other than the state (Slack message ids, verification notes)."""
        updated: list[RollbackRequest] = []

        def change(raw: str | None) -> Rewrite:
            updated[:] = [_parse(request_id, raw).model_copy(update=changes)]
            return Rewrite(updated[0].model_dump_json())

        self._store.rewrite(request_id, change)
        return updated[0]

    def recent(self, limit: int = 20) -> list[RollbackRequest]:
        """The newest requests, newest first."""
        last = self._store.last_number()
        out = []
        for number in range(last, max(0, last - limit), -1):
            raw = self._store.load(f"RB-{number:04d}")
            if raw is not None:
                out.append(RollbackRequest.model_validate_json(raw))
        return out


def _parse(request_id: str, raw: str | None) -> RollbackRequest:
    if raw is None:
        raise RequestNotFound(f"no rollback request {request_id!r}")
    return RollbackRequest.model_validate_json(raw)


def dumps(request: RollbackRequest) -> str:
    """The request as compact JSON (for logs and the CLI)."""
    return json.dumps(request.model_dump(mode="json"), sort_keys=True)
