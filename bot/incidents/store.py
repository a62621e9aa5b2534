"""Moved to bot.storage.incidents (storage); kept until the test move."""

from __future__ import annotations

from bot.lifecycle import EVENT_KINDS as EVENT_KINDS
from bot.lifecycle import FlapState as FlapState
from bot.storage.incidents import GROUP_STATE_TTL as GROUP_STATE_TTL
from bot.storage.incidents import ApplyResult as ApplyResult
from bot.storage.incidents import FlappingGroup as FlappingGroup
from bot.storage.incidents import IncidentNotFound as IncidentNotFound
from bot.storage.incidents import IncidentStore as IncidentStore
from bot.storage.incidents import LifecycleConfig as LifecycleConfig
from bot.storage.incidents import format_incident_id as format_incident_id
