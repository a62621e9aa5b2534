"""Moved to bot.lifecycle (core); kept until the test move."""

from __future__ import annotations

from bot.lifecycle import DEFAULT_REOPEN_WINDOW as DEFAULT_REOPEN_WINDOW
from bot.lifecycle import OPEN_STATES as OPEN_STATES
from bot.lifecycle import TRANSITIONS as TRANSITIONS
from bot.lifecycle import Event as Event
from bot.lifecycle import SeverityChange as SeverityChange
from bot.lifecycle import SeverityChangeRefused as SeverityChangeRefused
from bot.lifecycle import State as State
from bot.lifecycle import allowed_events as allowed_events
from bot.lifecycle import automatic_severity_change as automatic_severity_change
from bot.lifecycle import is_allowed as is_allowed
from bot.lifecycle import is_open as is_open
from bot.lifecycle import manual_severity_change as manual_severity_change
from bot.lifecycle import transition as transition
