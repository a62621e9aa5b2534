"""The bot's own Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from bot.models import Severity
from bot.storage.incidents import IncidentStore
from bot.tasknames import ALL_QUEUES


class WebMetrics:
    """Counters and histograms the web process updates, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "incident_bot_webhooks_received_total",
            "Webhook deliveries received, by source and result.",
            ["source", "result"],
            registry=self.registry,
        )
        self.enqueue_seconds = Histogram(
            "incident_bot_enqueue_seconds",
            "Time to put an accepted webhook durably on the broker.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )


class StoreCollector(Collector):
    """Reads shared state from Redis at scrape time: open incidents, task outcomes, queue backlog."""

    def __init__(self, store: IncidentStore, broker: redis.Redis) -> None:
        self._store = store
        self._broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Yield the Redis-backed metrics; redis_up 0 when Redis cannot be read."""
        up = GaugeMetricFamily("incident_bot_redis_up", "1 when Redis answered this scrape.")
        try:
            open_counts = self._store.open_by_severity()
            tasks = self._store.task_stats()
            backlog = {q: int(self._broker.llen(q)) for q in ALL_QUEUES}
        except RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        inc = GaugeMetricFamily(
            "incident_bot_incidents_open", "Incidents not yet resolved, by severity.", labels=["severity"]
        )
        for sev in Severity:
            inc.add_metric([sev.value], open_counts.get(sev.value, 0))
        yield inc
        done = CounterMetricFamily(
            "incident_bot_tasks",
            "Tasks finished by workers, by task and outcome.",
            labels=["task", "outcome"],
        )
        for key, count in sorted(tasks.items()):
            task, _, outcome = key.partition(":")
            done.add_metric([task, outcome], count)
        yield done
        queue = GaugeMetricFamily(
            "incident_bot_queue_length", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for name, length in backlog.items():
            queue.add_metric([name], length)
        yield queue
