"""Moved to bot.storage.events (storage); kept until the test move."""

from __future__ import annotations

from bot.storage.events import EVENT_TYPES as EVENT_TYPES
from bot.storage.events import Event as Event
from bot.storage.events import EventLog as EventLog
from bot.storage.events import incident_fields as incident_fields
