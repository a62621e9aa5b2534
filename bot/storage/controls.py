"""Operator controls shared by every worker: maintenance windows and the automation kill switch.

Both live in Redis and are read on every check (no caching), so a change made by one client (the CLI,
Slack) is seen by every worker on its next check.

Keys (under the configured prefix)::

    maint:seq           INCR counter behind window ids (MW-1, MW-2, …)
    maint:<id>          one window as JSON, expiring when the window ends (so it disappears by itself)
    maint:index         set of window ids; ids whose key has expired are pruned on read
    automation          hash: enabled ("1"/"0"), by, reason, at (each change also goes to the events stream)

The runbook engine's guards code against :class:`Controls`; :class:`AutomationControls` implements it.
Its checks fail closed: if Redis cannot be read, automation counts as disabled and every alert as in
maintenance, because acting blind is worse than not acting.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import redis
from redis.exceptions import RedisError

from bot.errors import PermanentError, TransientError
from bot.storage.events import EventLog

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MatchOp = Literal["=", "!=", "=~", "!~"]

_MATCHER_RE = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
#: The longest maintenance window accepted; longer ones are usually a mistake.
MAX_WINDOW = timedelta(days=30)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class InvalidMatcher(PermanentError):
    """A label matcher that cannot be parsed."""


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager-style label matcher: name=value, name!=value, name=~regex, name!~regex."""

    name: str
    op: MatchOp
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``namespace=staging``, ``alertname=~VLLM.*`` (quotes around the value are optional)."""
        m = _MATCHER_RE.match(text)
        if m is None:
            raise InvalidMatcher(
                f"bad matcher {text!r}: expected label=value, label!=value, label=~regex or label!~regex"
            )
        name, op, value = m.group(1), m.group(2), m.group(3)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise InvalidMatcher(f"bad matcher {text!r}: invalid regex: {exc}") from exc
        return cls(name=name, op=op, value=value)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether *labels* satisfy this matcher (a missing label reads as "", regexes are anchored)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


@dataclass(frozen=True)
class Window:
    """A maintenance window: alerts whose labels match every matcher are in maintenance."""

    id: str
    matchers: tuple[Matcher, ...]
    starts: datetime
    ends: datetime
    reason: str
    created_by: str

    def active(self, now: datetime) -> bool:
        """Whether the window is in force at *now*."""
        return self.starts <= now < self.ends

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher holds for *labels*."""
        return all(m.matches(labels) for m in self.matchers)

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict."""
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts": self.starts.isoformat(),
            "ends": self.ends.isoformat(),
            "reason": self.reason,
            "created_by": self.created_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Window:
        """The inverse of :meth:`to_dict`."""
        raw = data["matchers"]
        assert isinstance(raw, list)
        return cls(
            id=str(data["id"]),
            matchers=tuple(Matcher.parse(str(m)) for m in raw),
            starts=datetime.fromisoformat(str(data["starts"])),
            ends=datetime.fromisoformat(str(data["ends"])),
            reason=str(data["reason"]),
            created_by=str(data["created_by"]),
        )


class MaintenanceWindows:
    """Maintenance windows in Redis; an expired window disappears by itself (its key expires)."""

    def __init__(self, client: redis.Redis, prefix: str = "ib:", *, clock: Clock = _utcnow) -> None:
        self._r = client
        self._p = prefix
        self._clock = clock

    def _key(self, *parts: str) -> str:
        return self._p + ":".join(("maint", *parts))

    def add(
        self,
        matchers: Sequence[str | Matcher],
        duration: timedelta,
        reason: str,
        who: str,
        *,
        starts: datetime | None = None,
    ) -> Window:
        """Create a window from now (or *starts*) for *duration*; returns it."""
        parsed = tuple(m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers)
        if not parsed:
            raise InvalidMatcher("a maintenance window needs at least one matcher")
        if not reason.strip():
            raise PermanentError("a maintenance window needs a reason")
        if not who.strip():
            raise PermanentError("a maintenance window must say who created it")
        if duration <= timedelta(0) or duration > MAX_WINDOW:
            raise PermanentError(f"duration must be positive and at most {MAX_WINDOW.days} days")
        now = self._clock()
        begin = starts or now
        ends = begin + duration
        ttl = int((ends - now).total_seconds()) + 1
        if ttl <= 1:
            raise PermanentError("that window would already be over")
        try:
            window_id = f"MW-{int(self._r.incr(self._key('seq')))}"
            window = Window(window_id, parsed, begin, ends, reason.strip(), who.strip())
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self._key(window_id), json.dumps(window.to_dict()), ex=ttl)
            pipe.sadd(self._key("index"), window_id)
            pipe.execute()
        except RedisError as exc:
            raise TransientError(f"cannot store the maintenance window: {exc}") from exc
        return window

    def list(self) -> list[Window]:
        """Windows not yet over (current and future), ordered by start."""
        try:
            ids = sorted(_text(i) for i in self._r.smembers(self._key("index")))
            if not ids:
                return []
            raws = self._r.mget([self._key(i) for i in ids])
            gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            if gone:
                self._r.srem(self._key("index"), *gone)
        except RedisError as exc:
            raise TransientError(f"cannot read maintenance windows: {exc}") from exc
        now = self._clock()
        windows = [Window.from_dict(json.loads(raw)) for raw in raws if raw is not None]
        return sorted((w for w in windows if w.ends > now), key=lambda w: (w.starts, w.id))

    def remove(self, window_id: str) -> bool:
        """Delete a window; False if there was none with that id."""
        wid = window_id.strip().upper()
        try:
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._key(wid))
            pipe.srem(self._key("index"), wid)
            deleted, _ = pipe.execute()
        except RedisError as exc:
            raise TransientError(f"cannot remove maintenance window {wid}: {exc}") from exc
        return bool(deleted)

    def matching(self, labels: Mapping[str, str]) -> builtins.list[Window]:
        """Windows in force now whose matchers all hold for *labels*."""
        now = self._clock()
        return [w for w in self.list() if w.active(now) and w.matches(labels)]

    def covering(self, label_sets: Iterable[Mapping[str, str]]) -> Window | None:
        """The first active window matching every one of *label_sets* (None if any set is uncovered)."""
        sets = list(label_sets)
        if not sets:
            return None
        now = self._clock()
        for window in self.list():
            if window.active(now) and all(window.matches(labels) for labels in sets):
                return window
        return None


@dataclass(frozen=True)
class SwitchStatus:
    """The kill switch's state and who set it last."""

    enabled: bool
    by: str | None
    reason: str | None
    at: datetime | None

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict."""
        return {
            "enabled": self.enabled,
            "by": self.by,
            "reason": self.reason,
            "at": self.at.isoformat() if self.at else None,
        }


class AutomationSwitch:
    """The global kill switch for automated actions; read from Redis on every call."""

    def __init__(self, client: redis.Redis, prefix: str = "ib:", *, clock: Clock = _utcnow) -> None:
        self._r = client
        self._key = prefix + "automation"
        self._events = EventLog(client, prefix)
        self._clock = clock

    def enabled(self) -> bool:
        """Whether automation may act (true unless someone switched it off); raises on Redis errors."""
        try:
            value = self._r.hget(self._key, "enabled")
        except RedisError as exc:
            raise TransientError(f"cannot read the automation switch: {exc}") from exc
        return value is None or _text(value) == "1"

    def disable(self, who: str, reason: str) -> SwitchStatus:
        """Switch automation off for every worker."""
        if not who.strip() or not reason.strip():
            raise PermanentError("switching automation off needs who and a reason")
        return self._set(False, who.strip(), reason.strip())

    def enable(self, who: str, reason: str = "") -> SwitchStatus:
        """Switch automation back on."""
        if not who.strip():
            raise PermanentError("switching automation on must say who")
        return self._set(True, who.strip(), reason.strip())

    def _set(self, on: bool, who: str, reason: str) -> SwitchStatus:
        at = self._clock()
        fields = ["enabled", "1" if on else "0", "by", who, "reason", reason, "at", at.isoformat()]
        try:
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._key, items=fields)
            kind = "automation_enabled" if on else "automation_disabled"
            self._events.add(pipe, kind, at, {"actor": who, "reason": reason})
            pipe.execute()
        except RedisError as exc:
            raise TransientError(f"cannot set the automation switch: {exc}") from exc
        return SwitchStatus(on, who, reason or None, at)

    def status(self) -> SwitchStatus:
        """The switch's state with who changed it last, when and why."""
        try:
            raw = {_text(k): _text(v) for k, v in self._r.hgetall(self._key).items()}
        except RedisError as exc:
            raise TransientError(f"cannot read the automation switch: {exc}") from exc
        return SwitchStatus(
            enabled=raw.get("enabled", "1") == "1",
            by=raw.get("by") or None,
            reason=raw.get("reason") or None,
            at=datetime.fromisoformat(raw["at"]) if raw.get("at") else None,
        )


class Controls(Protocol):
    """What the runbook engine's guards ask before acting."""

    def automation_enabled(self) -> bool:
        """Whether automated actions are allowed right now."""
        ...

    def in_maintenance(self, labels: Mapping[str, str]) -> str | None:
        """The reason of a maintenance window covering *labels*, or None."""
        ...


class AutomationControls:
    """The kill switch and maintenance windows behind the :class:`Controls` Protocol (fails closed)."""

    def __init__(self, client: redis.Redis, prefix: str = "ib:", *, clock: Clock = _utcnow) -> None:
        self.switch = AutomationSwitch(client, prefix, clock=clock)
        self.windows = MaintenanceWindows(client, prefix, clock=clock)

    def automation_enabled(self) -> bool:
        """Whether automated actions are allowed; False when the switch cannot be read."""
        try:
            return self.switch.enabled()
        except TransientError as exc:
            log.warning("automation treated as disabled: %s", exc)
            return False

    def in_maintenance(self, labels: Mapping[str, str]) -> str | None:
        """The reason of the first window matching *labels*; a reason too when Redis cannot be read."""
        try:
            found = self.windows.matching(labels)
        except TransientError as exc:
            log.warning("alert treated as in maintenance: %s", exc)
            return f"maintenance state unavailable ({exc})"
        return found[0].reason if found else None
