"""Building a RollbackFlow from settings: Slack, PagerDuty and the cluster when they are configured."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import redis

from bot.incidents.store import IncidentStore
from bot.integrations.kube import KubeClient
from bot.integrations.pagerduty import PagerDutyClient
from bot.integrations.slack import SlackWeb, make_web_client
from bot.rollback.flow import RollbackFlow, TaskSender
from bot.settings import Settings
from bot.slack.authz import Authorizer
from bot.slack.render import SlackRenderer


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
    from bot.slack.runtime import CeleryTaskSender

    r = client or redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    store = IncidentStore(r, prefix=settings.key_prefix, dedup_ttl=settings.dedup_ttl_seconds)
    renderer = authorizer = None
    if settings.slack_configured:
        web = web or SlackWeb(
            make_web_client(settings), response_url_prefixes=settings.slack_response_url_prefix_list
        )
        renderer = SlackRenderer(settings.templates_dir)
        authorizer = Authorizer(
            web,
            r,
            cache_key_prefix=store.key("slack", "usergroup", ""),
            responders=settings.slack_responder_ids,
            approvers=settings.slack_approver_ids,
            cache_seconds=settings.slack_usergroup_cache_seconds,
        )
    return RollbackFlow(
        settings,
        r,
        store,
        sender=sender or CeleryTaskSender(settings),
        web=web,
        renderer=renderer,
        authorizer=authorizer,
        kube=kube,
        pagerduty=pagerduty_factory(settings) if settings.pagerduty_configured else None,
    )
