"""The incident lifecycle, tested exhaustively against a table written here independently."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import InvalidTransition, PermanentError
from bot.lifecycle import (
    DEFAULT_REOPEN_WINDOW,
    Event,
    SeverityChangeRefused,
    State,
    allowed_events,
    automatic_severity_change,
    is_allowed,
    is_open,
    manual_severity_change,
    transition,
)
from bot.settings import Settings
from bot.severity import Severity

# The documented lifecycle as a grid: rows are states, columns events, "-" means forbidden.
# Written by hand from the module docstring, not derived from TRANSITIONS.
EVENTS = ["ack", "unack", "start_mitigation", "stop_mitigation", "resolve", "reopen"]
GRID = """
state        | ack          | unack     | start_mitigation | stop_mitigation | resolve  | reopen
triggered    | acknowledged | -         | -                | -               | resolved | -
acknowledged | -            | triggered | mitigating       | -               | resolved | -
mitigating   | -            | -         | -                | acknowledged    | resolved | -
resolved     | -            | -         | -                | -               | -        | triggered
"""


def _expected() -> dict[tuple[str, str], str | None]:
    rows = [line.split("|") for line in GRID.strip().splitlines()]
    header = [cell.strip() for cell in rows[0]]
    assert header[1:] == EVENTS
    table: dict[tuple[str, str], str | None] = {}
    for row in rows[1:]:
        cells = [cell.strip() for cell in row]
        for event, cell in zip(EVENTS, cells[1:], strict=True):
            table[(cells[0], event)] = None if cell == "-" else cell
    return table


EXPECTED = _expected()
STATES = ["triggered", "acknowledged", "mitigating", "resolved"]
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_grid_covers_every_state_and_event_of_the_module() -> None:
    assert sorted(STATES) == sorted(s.value for s in State)
    assert sorted(EVENTS) == sorted(e.value for e in Event)
    assert len(EXPECTED) == len(STATES) * len(EVENTS)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(STATES, EVENTS)))
def test_every_state_event_pair(state: str, event: str) -> None:
    expected = EXPECTED[(state, event)]
    kwargs = {"now": NOW, "resolved_at": NOW - timedelta(minutes=1)}
    if expected is None:
        with pytest.raises(InvalidTransition) as info:
            transition(State(state), Event(event), incident_id="INC-7", **kwargs)
        message = str(info.value)
        assert message.startswith(f"cannot {event} INC-7 in state {state}: allowed events are ")
        allowed = [e for e in EVENTS if EXPECTED[(state, e)] is not None]
        assert message.endswith(", ".join(allowed))
        assert not is_allowed(state, event)
    else:
        assert transition(state, event, **kwargs) is State(expected)
        assert is_allowed(state, event)


@pytest.mark.parametrize("state", STATES)
def test_allowed_events_match_grid(state: str) -> None:
    assert [e.value for e in allowed_events(state)] == [e for e in EVENTS if EXPECTED[(state, e)] is not None]


def test_invalid_transition_is_permanent() -> None:
    with pytest.raises(PermanentError):
        transition(State.RESOLVED, Event.ACK)


def test_message_names_the_incident_and_allowed_events() -> None:
    with pytest.raises(
        InvalidTransition, match=r"^cannot ack INC-42 in state resolved: allowed events are reopen$"
    ):
        transition("resolved", "ack", incident_id="INC-42")
    with pytest.raises(InvalidTransition, match=r"^cannot resolve incident in state resolved"):
        transition("resolved", "resolve")


def test_unknown_state_and_event_are_refused_by_name() -> None:
    with pytest.raises(InvalidTransition, match="unknown incident event 'snooze'"):
        transition("triggered", "snooze")
    with pytest.raises(InvalidTransition, match="unknown incident state 'closed'"):
        transition("closed", "ack")


@pytest.mark.parametrize(
    ("elapsed", "allowed"),
    [
        (timedelta(0), True),
        (timedelta(minutes=29, seconds=59), True),
        (timedelta(minutes=30), True),  # "within" includes the boundary
        (timedelta(minutes=30, seconds=1), False),
        (timedelta(hours=5), False),
        (timedelta(seconds=-5), True),  # clock skew: resolved "in the future" counts as just now
    ],
)
def test_reopen_only_within_default_window(elapsed: timedelta, allowed: bool) -> None:
    resolved_at = NOW - elapsed
    if allowed:
        assert transition("resolved", "reopen", now=NOW, resolved_at=resolved_at) is State.TRIGGERED
    else:
        with pytest.raises(InvalidTransition, match=r"beyond the 30 min reopen window; open a new incident"):
            transition("resolved", "reopen", now=NOW, resolved_at=resolved_at)


def test_reopen_window_is_configurable_through_settings() -> None:
    settings = Settings(reopen_window_seconds=300)
    assert settings.reopen_window == timedelta(minutes=5)
    assert Settings().reopen_window == DEFAULT_REOPEN_WINDOW == timedelta(seconds=1800)
    resolved_at = NOW - timedelta(minutes=6)
    with pytest.raises(InvalidTransition, match="resolved 6 min ago, beyond the 5 min reopen window"):
        transition(
            "resolved", "reopen", now=NOW, resolved_at=resolved_at, reopen_window=settings.reopen_window
        )
    assert (
        transition("resolved", "reopen", now=NOW, resolved_at=resolved_at, reopen_window=timedelta(hours=1))
        is State.TRIGGERED
    )


def test_reopen_window_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REOPEN_WINDOW_SECONDS", "600")
    assert Settings().reopen_window == timedelta(minutes=10)


def test_reopen_needs_aware_times() -> None:
    with pytest.raises(ValueError, match="needs both now and resolved_at"):
        transition("resolved", "reopen", now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        transition("resolved", "reopen", now=datetime(2026, 1, 1), resolved_at=NOW)


def test_open_states() -> None:
    assert [s for s in STATES if is_open(s)] == ["triggered", "acknowledged", "mitigating"]


# ---- severity changes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), [(Severity.P2, Severity.P0), (Severity.P0, Severity.P3)])
def test_person_may_raise_or_lower_with_who_and_why(old: Severity, new: Severity) -> None:
    change = manual_severity_change(old, new, who=" alice ", why=" customer impact confirmed ")
    assert (change.old, change.new, change.by, change.reason, change.automatic) == (
        old,
        new,
        "alice",
        "customer impact confirmed",
        False,
    )
    assert change.raised is new.outranks(old)
    assert change.describe() == f"{old} -> {new} by alice: customer impact confirmed"


@pytest.mark.parametrize(
    ("who", "why", "message"),
    [
        ("", "because", "must say who"),
        ("   ", "because", "must say who"),
        ("bob", "", "bob must give a reason to change severity P2 -> P1"),
        ("bob", "  ", "must give a reason"),
    ],
)
def test_person_must_say_who_and_why(who: str, why: str, message: str) -> None:
    with pytest.raises(SeverityChangeRefused, match=message):
        manual_severity_change(Severity.P2, Severity.P1, who=who, why=why)


def test_manual_change_to_same_level_is_refused() -> None:
    with pytest.raises(SeverityChangeRefused, match="already P2"):
        manual_severity_change(Severity.P2, Severity.P2, who="bob", why="x")


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("firing", [True, False])
@pytest.mark.parametrize("current", list(Severity))
@pytest.mark.parametrize("proposed", list(Severity))
def test_automatic_change_only_raises_while_open_and_firing(
    state: str, firing: bool, current: Severity, proposed: Severity
) -> None:
    change = automatic_severity_change(
        current, proposed, state=state, firing=firing, reason="error rate rose"
    )
    # Severity order written out independently: P0 most severe.
    order = ["P0", "P1", "P2", "P3"]
    higher = order.index(proposed.value) < order.index(current.value)
    if firing and state != "resolved" and higher:
        assert change is not None
        assert (change.old, change.new, change.automatic, change.by) == (
            current,
            proposed,
            True,
            "incident-bot",
        )
        assert change.raised
    else:
        assert change is None
