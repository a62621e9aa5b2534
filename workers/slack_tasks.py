"""Celery tasks of the Slack side (queue `notifications`): thin wrappers around bot.slack."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from celery import Task

from bot import tasknames
from bot.errors import IncidentBotError, PermanentError, TransientError
from bot.settings import get_settings
from bot.slack.notifier import DEFERRED_EVENT
from bot.slack.runtime import SlackRuntime
from bot.wiring import build_runtime
from workers.celery_app import app

log = logging.getLogger("incident_bot.worker.slack")

_lock = threading.Lock()
_runtime: SlackRuntime | None = None

_RETRY = {
    "bind": True,
    "autoretry_for": (TransientError,),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 8,
}


def runtime() -> SlackRuntime:
    """The worker's Slack runtime, built from settings on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            settings = get_settings()
            if not settings.slack_configured:
                raise PermanentError("Slack is not configured (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET)")
            _runtime = build_runtime(settings)
        return _runtime


def use_runtime(value: SlackRuntime | None) -> None:
    """Replace the worker's Slack runtime (tests and embedding); None rebuilds it from settings."""
    global _runtime
    with _lock:
        _runtime = value


@app.task(name=tasknames.NOTIFY_INCIDENT, **_RETRY)  # type: ignore[untyped-decorator]
def incident_event(self: Task, incident_id: str, event_id: str | None = None) -> str:
    """Bring the incident's Slack messages up to date (root message and one reply per timeline entry)."""
    rt = runtime()
    result = rt.notifier.sync(incident_id, resumed=event_id == DEFERRED_EVENT)
    rt.store.count_task("slack_notify", "deferred" if result.deferred else result.root)
    log.info(
        "slack sync: incident=%s event=%s root=%s replies=%d deferred=%s attempt=%d",
        incident_id,
        event_id,
        result.root,
        len(result.replies),
        f"{result.deferred:.2f}s" if result.deferred else "no",
        self.request.retries,
    )
    return result.root


@app.task(name=tasknames.FLUSH_DIGEST, **_RETRY)  # type: ignore[untyped-decorator]
def flush_digest(self: Task, channel: str) -> str:
    """Re-render the alert-storm digest of one channel."""
    return runtime().notifier.flush_digest(channel)


def _internal_error(rt: SlackRuntime, fields: dict[str, Any], exc: Exception) -> str:
    """Tell the user something broke (with a reference for the logs), never the stack trace."""
    ref = uuid.uuid4().hex[:8]
    log.exception("slack interaction failed (ref %s)", ref, exc_info=exc)
    url = str(fields.get("response_url", ""))
    if url:
        try:
            rt.web.respond(url, f":boom: Internal error (ref `{ref}`); the bot's logs have the details.")
        except IncidentBotError as reply_exc:
            log.warning("could not report internal error ref %s: %s", ref, reply_exc)
    return "error"


@app.task(name=tasknames.SLACK_COMMAND, **_RETRY)  # type: ignore[untyped-decorator]
def slack_command(self: Task, form: dict[str, Any]) -> str:
    """Run a slash command the web side acknowledged."""
    rt = runtime()
    try:
        outcome = rt.service.handle_command(form)
    except TransientError:
        raise
    except Exception as exc:
        return _internal_error(rt, form, exc)
    log.info("slack command: user=%s outcome=%s", form.get("user_id"), outcome.outcome)
    return outcome.outcome


@app.task(name=tasknames.SLACK_ACTION, **_RETRY)  # type: ignore[untyped-decorator]
def slack_action(self: Task, fields: dict[str, Any]) -> str:
    """Handle a button click the web side acknowledged."""
    rt = runtime()
    try:
        outcome = rt.service.handle_action(fields)
    except TransientError:
        raise
    except Exception as exc:
        return _internal_error(rt, fields, exc)
    log.info(
        "slack action: %s by %s outcome=%s", fields.get("action_id"), fields.get("user_id"), outcome.outcome
    )
    return outcome.outcome
