"""The Redis token bucket: non-blocking takes and the first-come line in front of it (real Redis)."""

from __future__ import annotations

import time

import pytest
import redis

from bot.settings import Settings
from bot.storage.bucket import TokenBucket


def _no_sleep(seconds: float) -> None:
    pytest.fail(f"the bucket slept {seconds}s for a token")


def _bucket(client: redis.Redis, settings: Settings, *, rate: float = 1.0, burst: int = 2) -> TokenBucket:
    return TokenBucket(client, settings.key_prefix + "bucket:t", rate=rate, burst=burst, sleep=_no_sleep)


def test_try_take_never_waits_and_reports_when_a_token_is_due(
    redis_client: redis.Redis, settings: Settings
) -> None:
    bucket = _bucket(redis_client, settings, rate=2.0, burst=2)
    assert [bucket.try_take(), bucket.try_take()] == [0.0, 0.0]  # the burst
    started = time.monotonic()
    wait = bucket.try_take()
    assert time.monotonic() - started < 0.2  # answered at once
    assert 0.3 < wait <= 0.5  # one token per 0.5 s
    time.sleep(wait + 0.02)
    assert bucket.try_take() == 0.0


def test_a_queued_waiter_keeps_its_place_ahead_of_later_callers(
    redis_client: redis.Redis, settings: Settings
) -> None:
    bucket = _bucket(redis_client, settings, rate=10.0, burst=1)
    assert bucket.take_in_turn("a") == 0.0
    wait_b = bucket.take_in_turn("b")
    wait_c = bucket.take_in_turn("c")
    assert 0 < wait_b <= 0.1
    assert wait_c == pytest.approx(wait_b + 0.1, abs=0.02)  # c's turn is one token later
    assert bucket.waiting() == ["b", "c"]
    time.sleep(wait_c + 0.05)  # tokens for both are free now, but c must not jump the line
    assert bucket.take_in_turn("c") > 0
    assert bucket.take_in_turn("late") > 0  # a newcomer queues behind them
    assert bucket.take_in_turn("b") == 0.0
    time.sleep(0.11)
    assert bucket.take_in_turn("c") == 0.0
    assert bucket.waiting() == ["late"]
    bucket.leave("late")
    assert bucket.waiting() == []


def test_a_waiter_that_never_comes_back_loses_its_place(
    redis_client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.storage.bucket.LEASE_GRACE_SECONDS", 0)
    bucket = _bucket(redis_client, settings, rate=20.0, burst=1)
    assert bucket.take_in_turn("a") == 0.0
    assert bucket.take_in_turn("lost") > 0  # queued, then its task is lost
    time.sleep(0.2)  # past its due time (+ no grace)
    assert bucket.take_in_turn("next") == 0.0
    assert bucket.waiting() == []
