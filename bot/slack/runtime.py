"""Wiring the Slack side together from settings (one place, so tests can swap any part)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import RedisError

from bot.controls import AutomationSwitch
from bot.controls import MaintenanceWindows as WindowStore
from bot.errors import BrokerUnavailable
from bot.fanout import change_notifications
from bot.incidents.commands import IncidentCommands, StoreIncidentCommands
from bot.incidents.store import IncidentStore
from bot.integrations.slack import SlackWeb, make_web_client
from bot.settings import Settings
from bot.slack import tasknames
from bot.slack.audit import AuditLog
from bot.slack.authz import Authorizer
from bot.slack.controls import SwitchControl, WindowControl
from bot.slack.notifier import SlackNotifier
from bot.slack.render import SlackRenderer
from bot.slack.service import (
    AutomationControl,
    MaintenanceWindows,
    NoTierStatus,
    RollbackDecisions,
    SlackService,
    TaskSender,
    TierStatusSource,
)
from workers.celery_app import make_celery


class CeleryTaskSender:
    """TaskSender through a Celery app that knows only the broker and the routes (not the task code)."""

    def __init__(self, settings: Settings) -> None:
        self._celery = make_celery(settings, with_tasks=False)

    def send(
        self,
        name: str,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        countdown: float | None = None,
    ) -> str:
        """send_task by name (queue from task_routes); raises BrokerUnavailable."""
        try:
            result = self._celery.send_task(
                name,
                args=args,
                kwargs=kwargs or {},
                countdown=countdown,
                retry=True,
                retry_policy={
                    "max_retries": 1,
                    "interval_start": 0.0,
                    "interval_step": 0.2,
                    "interval_max": 0.2,
                },
            )
        except (OperationalError, KombuError, RedisError, OSError) as exc:
            raise BrokerUnavailable(f"broker did not accept {name}: {exc}") from exc
        return str(result.id)


@dataclass
class SlackRuntime:
    """Everything the Slack Celery tasks use."""

    settings: Settings
    client: redis.Redis
    store: IncidentStore
    web: SlackWeb
    notifier: SlackNotifier
    service: SlackService
    sender: TaskSender


def build_runtime(
    settings: Settings,
    *,
    client: redis.Redis | None = None,
    sender: TaskSender | None = None,
    commands: IncidentCommands | None = None,
    tier: TierStatusSource | None = None,
    automation: AutomationControl | None = None,
    maintenance: MaintenanceWindows | None = None,
    notify: Callable[[str], None] | None = None,
    rollbacks: RollbackDecisions | None = None,
) -> SlackRuntime:
    """Build the Slack runtime for these settings; parts may be passed in (tests, other issues' adapters)."""
    r = client or redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    store = IncidentStore(r, prefix=settings.key_prefix, dedup_ttl=settings.dedup_ttl_seconds)
    web = SlackWeb(make_web_client(settings), response_url_prefixes=settings.slack_response_url_prefix_list)
    renderer = SlackRenderer(settings.templates_dir)
    task_sender = sender or CeleryTaskSender(settings)

    def schedule_flush(channel: str, delay: float) -> None:
        task_sender.send(tasknames.FLUSH_DIGEST, args=(channel,), countdown=delay)

    def notify_default(incident_id: str) -> None:
        for name, args in change_notifications(settings, incident_id):
            task_sender.send(name, args=args)

    notifier = SlackNotifier(web, store, r, renderer, settings, schedule_digest_flush=schedule_flush)
    authorizer = Authorizer(
        web,
        r,
        cache_key_prefix=store.key("slack", "usergroup", ""),
        responders=settings.slack_responder_ids,
        approvers=settings.slack_approver_ids,
        cache_seconds=settings.slack_usergroup_cache_seconds,
    )
    service = SlackService(
        store=store,
        commands=commands or StoreIncidentCommands(store),
        web=web,
        authorizer=authorizer,
        audit=AuditLog(r, store.key("audit")),
        sender=task_sender,
        renderer=renderer,
        client=r,
        notify=notify or notify_default,
        tier=tier or NoTierStatus(),
        automation=automation or SwitchControl(AutomationSwitch(r, settings.key_prefix)),
        maintenance=maintenance or WindowControl(WindowStore(r, settings.key_prefix)),
        rollbacks=rollbacks or _rollback_flow(settings, r, store, web, renderer, authorizer, task_sender),
    )
    return SlackRuntime(settings, r, store, web, notifier, service, task_sender)


def _rollback_flow(
    settings: Settings,
    client: redis.Redis,
    store: IncidentStore,
    web: SlackWeb,
    renderer: SlackRenderer,
    authorizer: Authorizer,
    sender: TaskSender,
) -> RollbackDecisions:
    """The rollback flow sharing this runtime's Slack parts (decisions need no cluster access)."""
    from bot.rollback.flow import RollbackFlow

    return RollbackFlow(
        settings, client, store, sender=sender, web=web, renderer=renderer, authorizer=authorizer
    )
