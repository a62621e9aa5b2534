"""The incident lifecycle, tested exhaustively against a table written here independently."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import InvalidTransition, PermanentError
from bot.lifecycle import (
    DEFAULT_REOPEN_WINDOW,
    Effects,
    Entry,
    Event,
    FlapAction,
    FlapState,
    MaintenanceMark,
    SeverityChangeRefused,
    State,
    TimerRef,
    allowed_events,
    automatic_severity_change,
    escalate,
    event_change,
    fire,
    flap_state,
    flapping_entry,
    is_allowed,
    is_open,
    manual_severity_change,
    remind,
    severity_update,
    timer_applies,
    timers_after_notification,
    transition,
)
from bot.models import AlertStatus, Incident, IncidentStatus
from bot.settings import Settings
from bot.severity import LevelSpec, Severity

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


def test_the_lifecycle_states_are_the_incident_statuses() -> None:
    assert State is IncidentStatus
    assert [s.value for s in State] == ["triggered", "acknowledged", "mitigating", "resolved"]


# ---- escalations, reminders, flapping (pure decisions the store applies) -------------------------

LEVEL = LevelSpec(
    name="P1",
    response=timedelta(minutes=5),
    escalation=timedelta(minutes=15),
    status_update_every=timedelta(minutes=30),
    slack_channel="#inc",
    page=True,
    notify=("@oncall", "@lead"),
)
QUIET = LEVEL.model_copy(update={"status_update_every": None})


def _incident(**update: object) -> Incident:
    base = Incident(
        id="INC-0007",
        group_key="{}:{alertname=X}",
        title="X",
        status=IncidentStatus.TRIGGERED,
        severity=Severity.P1,
        severity_reason="rule",
        receiver="bot",
        external_url="",
        common_labels={},
        alerts={},
        truncated_alerts=0,
        created_at=NOW - timedelta(minutes=20),
        updated_at=NOW - timedelta(minutes=20),
    )
    return base.model_copy(update=update)


def test_escalation_moves_one_level_and_plans_the_next() -> None:
    updated, effects = escalate(_incident(escalation_level=0), LEVEL, NOW, max_levels=3)
    assert (updated.escalation_level, updated.escalation_due) == (1, NOW + timedelta(minutes=15))
    data = {"actor": "incident-bot", "level": 1, "escalation_seconds": 900, "notify": ["@oncall", "@lead"]}
    message = "Escalated (level 1): P1 not acknowledged within 15 min; notifying @oncall, @lead."
    assert effects.entries == [Entry("escalated", message, data)]
    next_at = (NOW + timedelta(minutes=15)).isoformat()
    assert effects.events == [("escalated", data | {"open_seconds": 1200, "next_escalation_at": next_at})]


def test_the_last_escalation_plans_no_other_and_notifies_on_call_by_default() -> None:
    level = LEVEL.model_copy(update={"notify": ()})
    updated, effects = escalate(_incident(escalation_level=2), level, NOW, max_levels=3)
    assert (updated.escalation_level, updated.escalation_due) == (3, None)
    assert effects.entries[0].message.endswith("notifying on-call.")
    assert effects.events[0][1]["next_escalation_at"] is None


def test_a_reminder_counts_and_plans_the_next_one() -> None:
    updated, effects = remind(_incident(reminders_sent=2), LEVEL, NOW)
    assert (updated.reminders_sent, updated.next_reminder_at) == (3, NOW + timedelta(minutes=30))
    assert effects == Effects(
        events=[("reminder", {"reminder": 3, "every_seconds": 1800, "open_seconds": 1200})]
    )


def test_a_level_without_reminders_stops_them_silently() -> None:
    updated, effects = remind(_incident(next_reminder_at=NOW), QUIET, NOW)
    assert (updated.next_reminder_at, updated.reminders_sent) == (None, 0)
    assert effects == Effects()


@pytest.mark.parametrize(
    ("status", "last", "is_change"),
    [
        (AlertStatus.FIRING, None, True),  # a group never seen counts as resolved
        (AlertStatus.RESOLVED, None, False),
        (AlertStatus.FIRING, "firing", False),
        (AlertStatus.RESOLVED, "firing", True),
        (AlertStatus.FIRING, "resolved", True),
    ],
)
def test_flap_state_counts_a_change_of_status(status: AlertStatus, last: str | None, is_change: bool) -> None:
    state = flap_state(status, last, 3, was_flapping=False)
    assert state == FlapState(is_change=is_change, changes=3 + int(is_change), was_flapping=False)


@pytest.mark.parametrize(
    ("is_change", "changes", "was_flapping", "action"),
    [
        (False, 9, False, FlapAction.NONE),
        (False, 9, True, FlapAction.NONE),
        (True, 4, False, FlapAction.COUNT),  # at the threshold: not yet
        (True, 5, False, FlapAction.START),  # over it
        (True, 1, True, FlapAction.EXTEND),  # flapping already: settles only after a quiet window
    ],
)
def test_flap_action(is_change: bool, changes: int, was_flapping: bool, action: FlapAction) -> None:
    state = FlapState(is_change=is_change, changes=changes, was_flapping=was_flapping)
    assert state.action(4) is action
    assert state.flapping(4) is (was_flapping or changes > 4)


def test_flapping_entry() -> None:
    entry = flapping_entry(5, threshold=4, window=timedelta(hours=1))
    assert entry == Entry(
        "flapping",
        "Group is flapping: 5 fire/resolve changes within 60 min (threshold 4). No new incidents or actions "
        "until it has been quiet for 60 min.",
        {"actor": "incident-bot", "changes": 5, "window_seconds": 3600, "threshold": 4},
    )


def _plan(incident: Incident, **flags: bool) -> Incident:
    given = {"opened": False, "resolved": False, "severity_changed": False} | flags
    return timers_after_notification(incident, LEVEL, NOW, max_levels=3, **given)


def test_timers_after_a_notification() -> None:
    fresh = _incident()
    assert (_plan(fresh, opened=True).escalation_due, _plan(fresh, opened=True).next_reminder_at) == (
        NOW + timedelta(minutes=15),
        NOW + timedelta(minutes=30),
    )
    armed = _incident(escalation_due=NOW + timedelta(hours=1), next_reminder_at=NOW + timedelta(hours=1))
    assert (_plan(armed, resolved=True).escalation_due, _plan(armed, resolved=True).next_reminder_at) == (
        None,
        None,
    )
    replanned = _plan(armed, severity_changed=True)
    assert (replanned.escalation_due, replanned.next_reminder_at) == (
        NOW + timedelta(minutes=15),
        NOW + timedelta(minutes=30),
    )
    assert _plan(armed) == armed


def _event(incident: Incident, event: str, note: str = "") -> tuple[Incident, Effects]:
    return event_change(
        incident,
        event,
        who="alice",
        note=note,
        now=NOW,
        level=LEVEL,
        reopen_window=timedelta(minutes=30),
        max_levels=3,
    )


def test_ack_pauses_escalation_keeps_reminders_and_remembers_the_first_ack() -> None:
    armed = _incident(escalation_due=NOW + timedelta(minutes=5), next_reminder_at=NOW + timedelta(minutes=9))
    updated, effects = _event(armed, "ack", " on it ")
    assert updated.status is IncidentStatus.ACKNOWLEDGED
    assert (updated.acknowledged_at, updated.acknowledged_by) == (NOW, "alice")
    assert (updated.escalation_due, updated.next_reminder_at) == (None, NOW + timedelta(minutes=9))
    data = {"actor": "alice", "event": "ack", "from": "triggered", "to": "acknowledged", "note": "on it"}
    assert effects == Effects(entries=[Entry("acknowledged", "Acknowledged by alice. on it", data)])


def test_resolve_disarms_and_offers_the_postmortem() -> None:
    armed = _incident(escalation_due=NOW, next_reminder_at=NOW)
    updated, effects = _event(armed, "resolve")
    assert (updated.status, updated.resolved_at) == (IncidentStatus.RESOLVED, NOW)
    assert (updated.escalation_due, updated.next_reminder_at) == (None, None)
    assert effects.events == [("postmortem_ready", {"command": "incident-bot incidents postmortem INC-0007"})]
    assert effects.entries[0].message == "Resolved by alice."


def test_reopen_counts_resets_the_escalation_and_arms_the_timers() -> None:
    done = _incident(
        status=IncidentStatus.RESOLVED, resolved_at=NOW - timedelta(minutes=10), escalation_level=2
    )
    updated, effects = _event(done, "reopen")
    assert (updated.status, updated.resolved_at, updated.reopened_count) == (
        IncidentStatus.TRIGGERED,
        None,
        1,
    )
    assert (updated.escalation_level, updated.escalation_due) == (0, NOW + timedelta(minutes=15))
    assert effects.events == [("reopened", {"reopened_count": 1, "actor": "alice"})]


def test_a_forbidden_event_raises() -> None:
    with pytest.raises(InvalidTransition, match="cannot unack INC-0007 in state triggered"):
        _event(_incident(), "unack")


def test_severity_update_replans_for_the_new_level() -> None:
    change = manual_severity_change(Severity.P1, Severity.P0, who="bob", why="customers down")
    armed = _incident(escalation_due=NOW + timedelta(hours=1), next_reminder_at=None)
    updated, effects = severity_update(armed, change, LEVEL, NOW)
    assert (updated.severity, updated.severity_reason) == (Severity.P0, "P0 set by bob: customers down")
    assert (updated.escalation_due, updated.next_reminder_at) == (
        NOW + timedelta(minutes=15),
        NOW + timedelta(minutes=30),
    )
    assert [e.kind for e in effects.entries] == ["severity_changed"]
    assert effects.events == [
        (
            "severity_changed",
            {
                "from": "P1",
                "to": "P0",
                "raised": True,
                "automatic": False,
                "actor": "bob",
                "reason": "customers down",
            },
        )
    ]


def test_a_timer_applies_only_while_its_open_incident_wants_exactly_it() -> None:
    due = NOW - timedelta(seconds=1)
    armed = _incident(escalation_due=due, next_reminder_at=due)
    escalation, reminder = TimerRef.of("escalate", armed.id, due), TimerRef.of("remind", armed.id, due)
    assert timer_applies(escalation, armed) and timer_applies(reminder, armed)
    assert not timer_applies(TimerRef.of("escalate", armed.id, NOW), armed)  # rescheduled since
    acked = armed.model_copy(update={"status": IncidentStatus.ACKNOWLEDGED})
    assert not timer_applies(escalation, acked) and timer_applies(reminder, acked)
    done = armed.model_copy(update={"status": IncidentStatus.RESOLVED})
    assert not timer_applies(reminder, done)


def test_firing_a_timer_inside_a_maintenance_window_disarms_instead() -> None:
    armed = _incident(escalation_due=NOW, next_reminder_at=NOW)
    timer = TimerRef.of("escalate", armed.id, NOW)
    mark = MaintenanceMark("MW-2", "node drain", "bob")
    outcome, updated, effects = fire(timer, armed, mark, LEVEL, NOW, max_levels=3)
    assert outcome == "maintenance"
    assert (updated.in_maintenance, updated.maintenance_reason) == (True, "node drain")
    assert (updated.escalation_due, updated.next_reminder_at) == (None, None)
    assert [e.kind for e in effects.entries] == ["in_maintenance"] and effects.events == []
    assert fire(timer, armed, None, LEVEL, NOW, max_levels=3)[0] == "escalated"
    assert fire(TimerRef.of("remind", armed.id, NOW), armed, None, LEVEL, NOW, max_levels=3)[0] == "reminded"
