"""Rollback requests in Redis and the one table of moves between their states.

    requested ──▶ previewed ──(approve)──▶ approved ──▶ executing ──▶ verified
        │            │  │                     │              └──────▶ failed
        ▼            │  └──(cancel)──▶ cancelled               │
     refused ◀───────┴─────────────────────┘ (re-checks)      ▼
                     └──(deadline passed)──▶ expired

Keys (under the store prefix):

    rollback:seq                     request numbers (RB-0001 …)
    rollback:req:<id>                the request (JSON)
    rollback:active:<ns>/<name>      the one open request of a Deployment (SET NX); removed with the
                                     move to a terminal state, and expires by itself as a safety net

Every move is a WATCHed read-check-write, so two workers (two clicks, a click and an expiry) cannot
both move a request out of the same state: the second one finds the state changed and is refused.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field

from bot.errors import PermanentError


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


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RollbackStore:
    """Rollback requests in Redis; every state change goes through :meth:`move`."""

    def __init__(self, client: redis.Redis, prefix: str, *, active_ttl_seconds: int) -> None:
        self._r = client
        self._p = prefix
        self.active_ttl_seconds = active_ttl_seconds

    def key(self, *parts: str) -> str:
        """A key under the prefix."""
        return self._p + ":".join(("rollback", *parts))

    def get(self, request_id: str) -> RollbackRequest:
        """The request with this id."""
        raw = self._r.get(self.key("req", request_id))
        if raw is None:
            raise RequestNotFound(f"no rollback request {request_id!r}")
        return RollbackRequest.model_validate_json(raw)

    def active(self, namespace: str, deployment: str) -> str | None:
        """The id of the Deployment's open request, if any."""
        raw = self._r.get(self.key("active", f"{namespace}/{deployment}"))
        return _text(raw) if raw is not None else None

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
    ) -> RollbackRequest:
        """A new request in state `requested`; with `claim` it must own its Deployment (raises Busy)."""
        number = int(self._r.incr(self.key("seq")))
        request = RollbackRequest(
            id=f"RB-{number:04d}",
            namespace=namespace,
            deployment=deployment,
            requested_revision=requested_revision,
            incident_id=incident_id,
            requester=requester,
            dry_run=dry_run,
            created_at=now,
            history=[Step(state=State.REQUESTED, at=now, actor=requester)],
        )
        if claim:
            active = self.key("active", request.target)
            if not self._r.set(active, request.id, nx=True, ex=self.active_ttl_seconds):
                holder = _text(self._r.get(active) or b"?")
                raise Busy(f"rollback {holder} of {request.target} is still open", holder)
        self._r.set(self.key("req", request.id), request.model_dump_json(), ex=90 * 86400)
        return request

    def release_stale(self, namespace: str, deployment: str, holder: str) -> bool:
        """Free the Deployment's claim if `holder` still has it (the holder ended or never got saved)."""
        key = self.key("active", f"{namespace}/{deployment}")
        with self._r.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                if _text(pipe.get(key) or b"") != holder:
                    return False
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def move(
        self, request_id: str, to: State, actor: str, *, at: datetime, note: str = "", **changes: Any
    ) -> RollbackRequest:
        """Move a request to `to` (allowed by TRANSITIONS from its current state) with field changes."""
        key = self.key("req", request_id)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        raise RequestNotFound(f"no rollback request {request_id!r}")
                    current = RollbackRequest.model_validate_json(raw)
                    if to not in TRANSITIONS[current.state]:
                        raise InvalidMove(
                            f"rollback {request_id} is {current.state.value}; it cannot become {to.value}"
                        )
                    updated = current.model_copy(
                        update={
                            **changes,
                            "state": to,
                            "history": [*current.history, Step(state=to, at=at, actor=actor, note=note)],
                        }
                    )
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json(), ex=90 * 86400)
                    if to.terminal:
                        active = self.key("active", current.target)
                        pipe.eval(
                            "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end",
                            1,
                            active,
                            request_id,
                        )
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue

    def update(self, request_id: str, **changes: Any) -> RollbackRequest:
        """Change fields other than the state (Slack message ids, verification notes)."""
        key = self.key("req", request_id)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        raise RequestNotFound(f"no rollback request {request_id!r}")
                    updated = RollbackRequest.model_validate_json(raw).model_copy(update=changes)
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json(), ex=90 * 86400)
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue

    def recent(self, limit: int = 20) -> list[RollbackRequest]:
        """The newest requests, newest first."""
        last = int(_text(self._r.get(self.key("seq")) or b"0"))
        out = []
        for number in range(last, max(0, last - limit), -1):
            raw = self._r.get(self.key("req", f"RB-{number:04d}"))
            if raw is not None:
                out.append(RollbackRequest.model_validate_json(raw))
        return out


def dumps(request: RollbackRequest) -> str:
    """The request as compact JSON (for logs and the CLI)."""
    return json.dumps(request.model_dump(mode="json"), sort_keys=True)
