"""Rate limits never hold a worker slot: the notifier re-schedules instead of sleeping for a token.

Real Redis, the Slack emulator through the real slack_sdk client. `Scheduler` stands in for Celery's
countdown: it records each re-run the notifier asks for and runs it when due, in an adversarial order
(the latest-scheduled first), so the per-channel line, not the order of delivery, must keep the order.
"""

from __future__ import annotations

import itertools
import time

import pytest
import redis

from bot.integrations.slack import SlackWeb, make_web_client
from bot.settings import Settings
from bot.slack.notifier import SlackNotifier, SyncResult
from bot.slack.render import SlackRenderer
from bot.storage.incidents import IncidentStore
from bot.storage.slack_messages import SlackMessages
from tests.support.slack import open_incident

HIGH = "C0HIGH0001"  # #incidents-high (P1)


def _no_sleep(seconds: float) -> None:
    pytest.fail(f"the notifier slept {seconds:.2f}s for a token inside the worker slot")


class Scheduler:
    """Celery's countdown, in-process: (due, incident) re-runs, run when due, latest-scheduled first."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, str]] = []
        self.asked = 0

    def __call__(self, incident_id: str, delay: float) -> None:
        assert delay > 0
        self.asked += 1
        self.pending.append((time.monotonic() + delay, incident_id))

    def drain(self, notifier: SlackNotifier, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while self.pending:
            assert time.monotonic() < end, f"re-runs still pending: {self.pending}"
            now = time.monotonic()
            due = [p for p in self.pending if p[0] <= now]
            if not due:
                time.sleep(0.01)  # the test's own clock, not the notifier's
                continue
            for item in reversed(due):
                self.pending.remove(item)
                timed(notifier, item[1], resumed=True)


def timed(notifier: SlackNotifier, incident_id: str, *, resumed: bool = False) -> SyncResult:
    started = time.monotonic()
    result = notifier.sync(incident_id, resumed=resumed)
    assert time.monotonic() - started < 0.5, "a sync held its slot waiting"
    return result


def make_notifier(
    settings: Settings, store: IncidentStore, client: redis.Redis, scheduler: Scheduler, **changes: object
) -> SlackNotifier:
    s = settings.model_copy(update={"slack_storm_threshold": 100, **changes})
    web = SlackWeb(make_web_client(s))
    return SlackNotifier(
        web,
        store,
        SlackMessages(client, s.key_prefix),
        SlackRenderer(s.templates_dir),
        s,
        reschedule_sync=scheduler,
        sleep=_no_sleep,
    )


def test_twenty_roots_on_one_channel_keep_their_order_at_the_channel_rate(
    slack_settings: Settings, store: IncidentStore, redis_client: redis.Redis, emulator
) -> None:
    scheduler = Scheduler()
    notifier = make_notifier(
        slack_settings, store, redis_client, scheduler, slack_posts_per_second=10.0, slack_post_burst=3
    )
    incidents = [open_incident(store, n) for n in range(1, 21)]
    first = [timed(notifier, i.id) for i in incidents]
    assert [r.root for r in first[:3]] == ["posted"] * 3 and all(r.deferred for r in first[3:])
    assert scheduler.asked == 17  # one re-run per waiting incident, none slept
    scheduler.drain(notifier)
    roots = emulator.channel_messages(HIGH, top_level_only=True)
    assert [next(i.id for i in incidents if i.id in m.text) for m in roots] == [i.id for i in incidents]
    posts = [c.at for c in emulator.ok_calls_of("chat.postMessage")]
    assert len(posts) == 20
    gaps = [b - a for a, b in itertools.pairwise(posts[3:])]
    assert min(gaps) >= 0.08  # 10/s after the burst of 3


def test_a_later_notification_waits_behind_the_queued_ones(
    slack_settings: Settings, store: IncidentStore, redis_client: redis.Redis, emulator
) -> None:
    scheduler = Scheduler()
    notifier = make_notifier(
        slack_settings, store, redis_client, scheduler, slack_posts_per_second=5.0, slack_post_burst=1
    )
    a, b, c = (open_incident(store, n) for n in (1, 2, 3))
    assert timed(notifier, a.id).root == "posted"
    assert timed(notifier, b.id).deferred
    time.sleep(0.25)  # a token is free now, but b asked first
    assert timed(notifier, c.id).deferred
    scheduler.drain(notifier)
    roots = emulator.channel_messages(HIGH, top_level_only=True)
    assert [m.text.count(x.id) > 0 for m, x in zip(roots, (a, b, c), strict=True)] == [True] * 3


def test_one_post_per_second_per_channel_and_other_channels_are_not_blocked(
    slack_settings: Settings, store: IncidentStore, redis_client: redis.Redis, emulator
) -> None:
    scheduler = Scheduler()
    notifier = make_notifier(slack_settings, store, redis_client, scheduler)  # 1/s, burst 3 (defaults)
    assert notifier._s.slack_posts_per_second == 1.0
    high = [open_incident(store, n) for n in range(1, 7)]
    for incident in high:
        timed(notifier, incident.id)
    other = open_incident(store, 99, severity="warning")
    assert notifier.channel_for(other) != notifier.channel_for(high[0])
    started = time.monotonic()
    assert timed(notifier, other.id).root == "posted"  # the busy #incidents-high does not hold it up
    assert time.monotonic() - started < 0.5
    scheduler.drain(notifier)
    calls = emulator.ok_calls_of("chat.postMessage")
    posts = [c.at for c in calls if c.params.get("channel") in (HIGH, "#incidents-high")]
    assert len(posts) == 6
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(posts[3:]))  # after the burst: ≤ 1/s
    assert posts[-1] - posts[2] >= 2.9


def test_twenty_thread_replies_arrive_in_timeline_order(
    slack_settings: Settings, store: IncidentStore, redis_client: redis.Redis, emulator
) -> None:
    scheduler = Scheduler()
    notifier = make_notifier(
        slack_settings, store, redis_client, scheduler, slack_posts_per_second=20.0, slack_post_burst=2
    )
    incident = open_incident(store)
    timed(notifier, incident.id)
    for n in range(20):
        store.append_timeline(incident.id, "note", f"note number {n:02d}", {})
    result = timed(notifier, incident.id)
    assert result.deferred and len(result.replies) < 20
    again = timed(notifier, incident.id)  # another event meanwhile: coalesced into the scheduled re-run
    assert again.deferred and scheduler.asked == 1
    scheduler.drain(notifier)
    root = emulator.channel_messages(HIGH, top_level_only=True)[0]
    notes = [m.text for m in emulator.thread(HIGH, root.ts) if "note number" in m.text]
    assert len(notes) == 20
    assert [int(t.split("note number ")[1][:2]) for t in notes] == list(range(20))


def test_the_real_worker_slot_serves_other_channels_while_one_waits_for_tokens(
    slack_settings: Settings, store: IncidentStore, redis_client: redis.Redis, emulator, celery_worker: object
) -> None:
    """One solo worker slot (the session worker): a channel that needs 2 s of tokens does not hold it."""
    import workers.slack_tasks
    from bot import tasknames
    from bot.wiring import CeleryTaskSender, build_runtime
    from tests.support.fixtures import wait_until
    from tests.support.slack import RecordingSender

    sender = RecordingSender(forward=CeleryTaskSender(slack_settings))
    workers.slack_tasks.use_runtime(build_runtime(slack_settings, sender=sender))
    try:
        celery = CeleryTaskSender(slack_settings)
        high = [open_incident(store, n) for n in range(1, 6)]  # 5: the storm threshold, all get roots
        other = open_incident(store, 99, severity="warning")
        for incident in high:
            celery.send(tasknames.NOTIFY_INCIDENT, args=(incident.id, "test"))
        sent = time.monotonic()
        celery.send(tasknames.NOTIFY_INCIDENT, args=(other.id, "test"))
        wait_until(
            lambda: any(
                other.id in m.text
                for m in emulator.channel_messages("C0LOW00001") + emulator.channel_messages("C0MED00001")
            ),
            timeout=10,
        )
        other_at = time.monotonic() - sent
        wait_until(lambda: len(emulator.channel_messages(HIGH, top_level_only=True)) == 5, timeout=15)
        high_posts = sorted(
            c.at for c in emulator.ok_calls_of("chat.postMessage") if c.params["channel"] == "#incidents-high"
        )
        assert high_posts[-1] - high_posts[0] >= 1.9  # burst 3, then 1/s: the channel waited ~2 s
        assert other_at < 1.0  # ... and the only worker slot served the other channel meanwhile
        assert sender.named(tasknames.NOTIFY_INCIDENT)  # the waiting syncs re-scheduled themselves
    finally:
        workers.slack_tasks.use_runtime(None)
