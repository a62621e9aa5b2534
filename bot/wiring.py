"""Wiring: the one place that builds Redis clients, the stores, the Celery app and task sender, the adapters,
and the feature objects (runbook engine, rollback flow, Slack runtime, PagerDuty sync) from ``Settings``.

Everything else receives what it needs as arguments. Entry points (``bot/cli*``, ``bot/web``, ``workers/``)
call these functions; features never do.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Callable
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from celery import Celery
from kombu.entity import Queue
from kombu.exceptions import KombuError, OperationalError
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel
from slack_bolt.async_app import AsyncApp

import bot.steps  # noqa: F401  (registers the shipped step types: every process built here runs them)
from bot import tasknames
from bot.catalog import load_catalog
from bot.errors import BrokerUnavailable, TransientError
from bot.incidents.commands import IncidentCommands, StoreIncidentCommands
from bot.intake import Classifier, policy_classifier
from bot.integrations.kube import KubeClient
from bot.integrations.pagerduty import Link, PagerDutyClient
from bot.integrations.prometheus import PrometheusClient
from bot.integrations.slack import SlackWeb, make_web_client
from bot.models import Incident, Severity
from bot.paging import PagerDutySync
from bot.plan.schema import load_runbooks
from bot.rollback.flow import RollbackFlow, lock_ttl_seconds
from bot.rollback.state import RollbackRequests
from bot.runbook.engine import Engine
from bot.runbook.services import Services
from bot.runbook.targets import TargetResolver
from bot.settings import Settings
from bot.severity import load_policy
from bot.slack.app import build_bolt_app
from bot.slack.authz import Authorizer
from bot.slack.controls import SwitchControl, WindowControl
from bot.slack.notifier import DEFERRED_EVENT, SlackNotifier
from bot.slack.render import SlackRenderer
from bot.slack.runtime import SlackRuntime
from bot.slack.service import (
    AutomationControl,
    MaintenanceWindows,
    NoTierStatus,
    RollbackDecisions,
    SlackService,
    TierStatusSource,
)
from bot.storage import broker
from bot.storage.audit import AuditLog
from bot.storage.controls import AutomationControls, AutomationSwitch, Controls
from bot.storage.controls import MaintenanceWindows as WindowStore
from bot.storage.guards import Guards
from bot.storage.incidents import IncidentStore, LifecycleConfig
from bot.storage.markers import Markers
from bot.storage.paging import PagingState
from bot.storage.rollbacks import RollbackStore
from bot.storage.runs import RunStore
from bot.storage.slack_messages import SlackMessages
from bot.storage.usergroups import UserGroupCache
from bot.tasknames import TaskSender, change_notifications

log = logging.getLogger("incident_bot.redis")

# -- Redis ----------------------------------------------------------------------------------------------

#: Who a client is for decides its timeouts (socket, connect), in seconds. "web" uses ENQUEUE_TIMEOUT_SECONDS:
#: a webhook must answer 503 quickly rather than hang its sender.
Role = Literal["web", "metrics", "worker", "runbook", "cli"]
_TIMEOUTS: dict[str, tuple[float, float]] = {
    "metrics": (2.0, 2.0),
    "worker": (5.0, 5.0),
    "runbook": (10.0, 5.0),  # runbook steps hold locks across slower calls
    "cli": (5.0, 3.0),
}


def _timeouts(settings: Settings, role: Role) -> tuple[float, float]:
    if role == "web":
        return settings.enqueue_timeout_seconds, settings.enqueue_timeout_seconds
    return _TIMEOUTS[role]


def redis_client(settings: Settings, role: Role, *, url: str | None = None) -> redis.Redis:
    """A Redis client for the bot's state (or `url`, e.g. the broker) with the timeouts of `role`.

    Under REDIS_SENTINELS it follows the master Sentinel names (``url`` a ``sentinel://`` broker URL or
    None); a move is logged and in-flight commands retry with back-off (REDIS_FAILOVER_RETRIES).
    """
    socket_timeout, connect_timeout = _timeouts(settings, role)
    if _via_sentinel(settings, url):
        manager = _LoggingSentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_kwargs(settings))
        client: redis.Redis = manager.master_for(
            settings.redis_sentinel_master,
            **_master_kwargs(settings, socket_timeout, connect_timeout),
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), settings.redis_failover_retries),
        )
        return client
    return redis.Redis.from_url(
        url or settings.redis_url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout
    )


def async_redis_client(settings: Settings, role: Role, *, url: str | None = None) -> aioredis.Redis:
    """An asyncio Redis client (the web's enqueue path) with the timeouts of `role` (Sentinel as above)."""
    socket_timeout, connect_timeout = _timeouts(settings, role)
    if _via_sentinel(settings, url):
        manager = _AsyncLoggingSentinel(
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_kwargs(settings)
        )
        client: aioredis.Redis = manager.master_for(
            settings.redis_sentinel_master,
            **_master_kwargs(settings, socket_timeout, connect_timeout),
            retry=AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), settings.redis_failover_retries),
        )
        return client
    return aioredis.Redis.from_url(
        url or settings.redis_url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout
    )


def _via_sentinel(settings: Settings, url: str | None) -> bool:
    return bool(settings.redis_sentinels) and (url is None or url.startswith("sentinel://"))


def _tls_kwargs(settings: Settings) -> dict[str, Any]:
    if not settings.redis_tls:
        return {}
    tls: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
    if settings.redis_tls_ca_file is not None:
        tls["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    return tls


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves: short timeouts (discovery moves on to the next one)."""
    password = settings.redis_sentinel_password
    return {
        "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5,
        **({"password": password.get_secret_value()} if password else {}),
        **_tls_kwargs(settings),
    }


def _master_kwargs(settings: Settings, socket_timeout: float, connect_timeout: float) -> dict[str, Any]:
    password = settings.redis_password
    return {
        "db": settings.redis_db,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        **({"password": password.get_secret_value()} if password else {}),
        **_tls_kwargs(settings),
    }


class _MasterMoves:
    """Remembers the master each name had and logs when Sentinel names another one."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, int]] = {}

    def note(self, name: str, address: tuple[str, int]) -> None:
        before = self._seen.get(name)
        if before is not None and tuple(before) != tuple(address):
            log.warning("redis: master %s moved %s:%s -> %s:%s", name, *before, *address)
        self._seen[name] = address


#: One memory for all clients of the process: every pool that rediscovers the master logs the move once.
_MOVES = _MasterMoves()


class _LoggingSentinel(Sentinel):
    def discover_master(self, service_name: str) -> Any:
        address = super().discover_master(service_name)
        _MOVES.note(service_name, address)
        return address


class _AsyncLoggingSentinel(AsyncSentinel):
    async def discover_master(self, service_name: str) -> Any:
        address = await super().discover_master(service_name)
        _MOVES.note(service_name, address)
        return address


def incident_store(
    settings: Settings, client: redis.Redis, *, classify: Classifier | None = None
) -> IncidentStore:
    """The incident store over `client` with the configured prefix, dedup TTL, policy and lifecycle."""

    return IncidentStore(
        client,
        prefix=settings.key_prefix,
        dedup_ttl=settings.dedup_ttl_seconds,
        classify=classify,
        policy=load_policy(settings.severity_policy),
        config=LifecycleConfig.from_settings(settings),
    )


def classifier(settings: Settings) -> Classifier:
    """The severity policy, with live signals from Prometheus when PROMETHEUS_URL is set."""
    source = PrometheusClient.from_settings(settings) if settings.prometheus_url else None
    return policy_classifier(load_policy(settings.severity_policy), source)


# -- Celery -----------------------------------------------------------------------------------------------


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from the bot's settings."""
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport_options": {
            "visibility_timeout": settings.celery_visibility_timeout,
            "socket_connect_timeout": settings.enqueue_timeout_seconds,
            "socket_timeout": settings.enqueue_timeout_seconds,
            **_broker_sentinel_options(settings),
        },
        **_broker_tls(settings),
        **_broker_transport(settings),
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": tasknames.QUEUE_ALERTS,
        "task_queues": [Queue(q, routing_key=q) for q in tasknames.ALL_QUEUES],  # type: ignore[no-untyped-call]
        "task_routes": tasknames.TASK_ROUTES,
        "beat_schedule": {
            "timers-tick": {
                "task": tasknames.TIMERS_TICK,
                "schedule": settings.timer_tick_seconds,
                # a tick nobody picked up before the next one is due is useless: drop it
                "options": {"expires": settings.timer_tick_seconds},
            }
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def _broker_sentinel_options(settings: Settings) -> dict[str, Any]:
    """kombu's Sentinel transport options, when the broker URL is the `sentinel://` one."""
    if not settings.effective_broker_url.startswith("sentinel://"):
        return {}
    return {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(settings),
        "retry_on_timeout": True,
    }


def _broker_transport(settings: Settings) -> dict[str, Any]:
    """Under Sentinel, kombu's transport with the failover fixes of bot.storage.broker."""
    if not settings.effective_broker_url.startswith("sentinel://"):
        return {}
    return {"broker_transport": broker.TRANSPORT}


def _broker_tls(settings: Settings) -> dict[str, Any]:
    if not (settings.redis_tls and settings.effective_broker_url.startswith("sentinel://")):
        return {}
    tls = _tls_kwargs(settings)
    return {"broker_use_ssl": {k: v for k, v in tls.items() if k != "ssl"}}


def make_celery(settings: Settings, *, with_tasks: bool = True) -> Celery:
    """A Celery app for these settings; publishers may leave the tasks out (they use send_task)."""
    # The worker's app must be the current/default app: Task.retry publishes through it from worker threads,
    # and a non-default app sent retries to a default 'localhost' broker (retries were lost).
    celery = Celery("incident_bot", set_as_current=with_tasks)
    celery.conf.update(celery_config(settings))
    if with_tasks:
        celery.conf.include = [
            "workers.tasks",
            "workers.slack_tasks",
            "workers.pagerduty_tasks",
            "workers.timer_tasks",
            "workers.runbook_tasks",
            "workers.rollback_tasks",
        ]
    return celery


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


# -- features -------------------------------------------------------------------------------------------


def automation_controls(client: redis.Redis, settings: Settings) -> Controls:
    """The kill switch and maintenance windows (bot.storage.controls), read from Redis on every check."""
    return AutomationControls(client, settings.key_prefix)


def build_engine(
    settings: Settings,
    *,
    client: redis.Redis | None = None,
    store: IncidentStore | None = None,
    kube: KubeClient | None = None,
    controls: Controls | None = None,
) -> Engine:
    """An Engine over the configured Redis, cluster, vLLM servers and runbooks directory."""

    client = client or redis_client(settings, "runbook")
    store = store or incident_store(settings, client)
    services = Services(
        settings,
        store,
        kube=kube,
        kube_factory=functools.partial(KubeClient.from_settings, settings),
        prometheus_factory=functools.partial(PrometheusClient.from_settings, settings),
    )
    return Engine(
        RunStore(client, settings.key_prefix),
        Guards.from_settings(client, settings),
        store,
        services,
        settings,
        load_runbooks(settings.runbooks_dir),
        controls or automation_controls(client, settings),
        targets=target_resolver(settings, services),
    )


def target_resolver(settings: Settings, services: Services) -> TargetResolver:
    """The service catalog (CATALOG) and, unless TARGET_DISCOVERY is off, discovery through the kube."""
    return TargetResolver(
        load_catalog(settings.catalog),
        (lambda: services.kube) if settings.target_discovery else None,
        allowed_namespaces=settings.kube_allowed_namespaces,
        timeout=settings.target_discovery_timeout_seconds,
    )


def pagerduty_factory(settings: Settings) -> Any:
    """A zero-argument function returning the default-key PagerDuty client, or None without a key."""

    @functools.lru_cache(maxsize=1)
    def make() -> PagerDutyClient | None:
        key = settings.pagerduty_routing_key
        if key is None:
            return None
        verify: Any = True
        if settings.pagerduty_ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(settings.pagerduty_ca_bundle))
        return PagerDutyClient(
            key.get_secret_value(),
            events_url=settings.pagerduty_events_url,
            api_url=settings.pagerduty_api_url,
            verify=verify,
        )

    return make


def build_flow(
    settings: Settings,
    *,
    client: redis.Redis | None = None,
    sender: TaskSender | None = None,
    kube: KubeClient | None = None,
    web: SlackWeb | None = None,
) -> RollbackFlow:
    """A RollbackFlow over the configured Redis, cluster, Slack and PagerDuty."""
    r = client or redis_client(settings, "runbook")
    store = incident_store(settings, r)
    renderer = authorizer = None
    if settings.slack_configured:
        web = web or SlackWeb(
            make_web_client(settings), response_url_prefixes=settings.slack_response_url_prefix_list
        )
        renderer = SlackRenderer(settings.templates_dir)
        authorizer = _authorizer(settings, r, web)
    return _rollback_flow(
        settings,
        r,
        store,
        web,
        renderer,
        authorizer,
        sender or CeleryTaskSender(settings),
        kube=kube,
        pagerduty=pagerduty_factory(settings) if settings.pagerduty_configured else None,
    )


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
    r = client or redis_client(settings, "worker")
    store = incident_store(settings, r)
    web = SlackWeb(make_web_client(settings), response_url_prefixes=settings.slack_response_url_prefix_list)
    renderer = SlackRenderer(settings.templates_dir)
    task_sender = sender or CeleryTaskSender(settings)

    def schedule_flush(channel: str, delay: float) -> None:
        task_sender.send(tasknames.FLUSH_DIGEST, args=(channel,), countdown=delay)

    def notify_default(incident_id: str) -> None:
        for name, args in change_notifications(settings, incident_id):
            task_sender.send(name, args=args)

    def reschedule_sync(incident_id: str, delay: float) -> None:
        task_sender.send(tasknames.NOTIFY_INCIDENT, args=(incident_id, DEFERRED_EVENT), countdown=delay)

    messages = SlackMessages(r, settings.key_prefix)
    notifier = SlackNotifier(
        web,
        store,
        messages,
        renderer,
        settings,
        schedule_digest_flush=schedule_flush,
        reschedule_sync=reschedule_sync,
    )
    authorizer = _authorizer(settings, r, web)
    service = SlackService(
        store=store,
        commands=commands or StoreIncidentCommands(store),
        web=web,
        authorizer=authorizer,
        audit=AuditLog(r, store.key("audit")),
        sender=task_sender,
        renderer=renderer,
        markers=Markers(r, settings.key_prefix),
        notify=notify or notify_default,
        tier=tier or NoTierStatus(),
        automation=automation or SwitchControl(AutomationSwitch(r, settings.key_prefix)),
        maintenance=maintenance or WindowControl(WindowStore(r, settings.key_prefix)),
        rollbacks=rollbacks or _rollback_flow(settings, r, store, web, renderer, authorizer, task_sender),
    )
    return SlackRuntime(settings, store, web, notifier, service, task_sender)


def _authorizer(settings: Settings, client: redis.Redis, web: SlackWeb) -> Authorizer:
    """Who may do what from Slack, with the user-group cache in Redis."""
    return Authorizer(
        web,
        UserGroupCache(client, settings.key_prefix),
        responders=settings.slack_responder_ids,
        approvers=settings.slack_approver_ids,
        cache_seconds=settings.slack_usergroup_cache_seconds,
    )


def _rollback_flow(
    settings: Settings,
    client: redis.Redis,
    store: IncidentStore,
    web: SlackWeb | None,
    renderer: SlackRenderer | None,
    authorizer: Authorizer | None,
    sender: TaskSender,
    *,
    kube: KubeClient | None = None,
    pagerduty: Callable[[], PagerDutyClient | None] | None = None,
) -> RollbackFlow:
    """The rollback flow with its requests, the runbook guards, the kill switch and the audit log in Redis.

    The Slack runtime's flow shares the runtime's Slack parts and gets no cluster (decisions need none).
    """
    requests = RollbackStore(
        client,
        settings.key_prefix,
        active_ttl_seconds=settings.rollback_approval_timeout_seconds + lock_ttl_seconds(settings),
    )
    guards = Guards(
        client,
        settings.key_prefix,
        cooldown_seconds=settings.runbook_cooldown_seconds,
        max_actions=settings.runbook_max_actions,
        window_seconds=settings.runbook_action_window_seconds,
    )
    return RollbackFlow(
        settings,
        store,
        requests=RollbackRequests(requests),
        guards=guards,
        controls=automation_controls(client, settings),
        audit=AuditLog(client, store.key("audit")),
        sender=sender,
        web=web,
        renderer=renderer,
        authorizer=authorizer,
        kube=kube,
        pagerduty=pagerduty,
    )


def _links(incident: Incident) -> list[Link]:
    return [Link(incident.external_url, "Alertmanager")] if incident.external_url.startswith("http") else []


def build_sync(settings: Settings, store: IncidentStore) -> PagerDutySync:
    """A PagerDutySync for these settings."""
    verify: Any = True
    if settings.pagerduty_ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(settings.pagerduty_ca_bundle))

    token = settings.pagerduty_api_token

    @functools.lru_cache(maxsize=8)
    def client_for(routing_key: str) -> PagerDutyClient:
        return PagerDutyClient(
            routing_key,
            api_token=token.get_secret_value() if token else None,
            service_from=settings.pagerduty_from_email,
            events_url=settings.pagerduty_events_url,
            api_url=settings.pagerduty_api_url,
            verify=verify,
        )

    def by_severity(severity: Severity) -> PagerDutyClient:
        key = settings.pagerduty_routing_key_for(severity.value)
        if key is None:
            raise TransientError("PAGERDUTY_ROUTING_KEY is not set")
        return client_for(key)

    return PagerDutySync(
        store=store,
        state=PagingState(store.redis_client, settings.key_prefix),
        commands=StoreIncidentCommands(store),
        policy=load_policy(settings.severity_policy),
        pagerduty=by_severity,
        templates_dir=settings.templates_dir,
        email_by_slack_user=settings.pagerduty_email_by_slack_user,
        links=_links,
    )


# -- web entry point ------------------------------------------------------------------------------------


def build_bolt(settings: Settings, client: redis.Redis, *, sender: TaskSender | None = None) -> AsyncApp:
    """The Slack Bolt app of the web process: edge guard, `/incident`, buttons and mentions over `client`."""
    store = incident_store(settings, client)
    return build_bolt_app(
        settings,
        sender=sender or CeleryTaskSender(settings),
        audit=AuditLog(client, store.key("audit")),
        markers=Markers(client, settings.key_prefix),
    )


def redis_answers(url: str, *, connect_timeout: float) -> bool:
    """Whether a Redis server at `url` answers PING within `connect_timeout` seconds (a probe, no retries)."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=connect_timeout).ping())
    except RedisError:
        return False
