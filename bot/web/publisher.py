"""Durable hand-off of accepted webhooks to Celery."""

from __future__ import annotations

from typing import Protocol

from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import RedisError

from bot.errors import BrokerUnavailable
from bot.settings import Settings
from workers.celery_app import QUEUE_ALERTS, TASK_PROCESS_ALERT_GROUP, make_celery


class Publisher(Protocol):
    """Puts work on the broker; returns only once the message is stored there."""

    def publish_alert_group(self, payload: dict[str, object], delivery_key: str) -> None:
        """Enqueue one Alertmanager notification; raises BrokerUnavailable when it could not."""


class CeleryPublisher:
    """Publishes tasks by name through a Celery app that knows the broker only (no task code)."""

    def __init__(self, settings: Settings) -> None:
        self._celery = make_celery(settings, with_tasks=False)
        self._retry_policy = {
            "max_retries": 1,
            "interval_start": 0.0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        }

    def publish_alert_group(self, payload: dict[str, object], delivery_key: str) -> None:
        """Send `process_alert_group` to the alerts queue (an LPUSH on Redis, done before return)."""
        try:
            self._celery.send_task(
                TASK_PROCESS_ALERT_GROUP,
                args=(payload, delivery_key),
                queue=QUEUE_ALERTS,
                routing_key=QUEUE_ALERTS,
                retry=True,
                retry_policy=self._retry_policy,
                # a short repr: Celery would otherwise saferepr() the whole payload on every publish
                # (a third of the publish cost) and print alert text in worker logs
                argsrepr=f"(<alertmanager notification>, {delivery_key[:12]!r})",
                kwargsrepr="{}",
            )
        except (OperationalError, KombuError, RedisError, OSError) as exc:
            raise BrokerUnavailable(f"broker did not accept the task: {exc}") from exc
