"""Rollback tasks: file and preview a request, execute an approved one (queue `runbooks`), change event.

Thin wrappers around `bot.rollback.flow.RollbackFlow`; the worker builds one from settings on first use
(tests and embedding replace it with `use_flow`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from bot import tasknames
from bot.errors import TransientError
from bot.rollback.flow import RollbackFlow
from bot.settings import get_settings
from workers.celery_app import app

log = logging.getLogger("incident_bot.worker.rollback")

_lock = threading.Lock()
_flow: RollbackFlow | None = None

_RETRY: dict[str, Any] = {
    "bind": True,
    "autoretry_for": (TransientError,),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 8,
}


def flow() -> RollbackFlow:
    """The worker's rollback flow, built from settings on first use."""
    global _flow
    with _lock:
        if _flow is None:
            from bot.wiring import build_flow

            _flow = build_flow(get_settings())
        return _flow


def use_flow(value: RollbackFlow | None) -> None:
    """Replace the worker's rollback flow (tests and embedding); None rebuilds it from settings."""
    global _flow
    with _lock:
        _flow = value


@app.task(name=tasknames.ROLLBACK_REQUEST, **_RETRY)  # type: ignore[untyped-decorator]
def rollback_request(
    self: Any,
    namespace: str,
    deployment: str,
    actor: str,
    to_revision: int | None = None,
    incident_id: str | None = None,
    dry_run: bool = False,
    kind: str = "Deployment",
) -> str:
    """File a rollback request, preview it and post the preview (Approve / Cancel) to Slack."""
    req = flow().request(
        namespace,
        deployment,
        actor=actor,
        to_revision=to_revision,
        incident_id=incident_id,
        dry_run=dry_run,
        kind=kind,
    )
    log.info("rollback %s of %s requested by %s: %s", req.id, req.target, actor, req.state.value)
    return req.state.value


@app.task(name=tasknames.ROLLBACK_EXECUTE, **_RETRY)  # type: ignore[untyped-decorator]
def rollback_execute(self: Any, request_id: str) -> str:
    """Execute an approved rollback: undo under the Deployment's lock, wait, verify, announce."""
    req = flow().execute(request_id)
    log.info("rollback %s of %s: %s %s", req.id, req.target, req.state.value, req.reason)
    return req.state.value


@app.task(name=tasknames.ROLLBACK_CHANGE_EVENT, **_RETRY)  # type: ignore[untyped-decorator]
def rollback_change_event(self: Any, request_id: str) -> bool:
    """Tell PagerDuty about a finished rollback (a change event); retried on 429/5xx."""
    return flow().change_event(request_id)
