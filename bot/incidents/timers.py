"""Moved to bot.lifecycle (planning, core) and bot.storage.timers (sorted set); kept until the test move."""

from __future__ import annotations

from bot.lifecycle import ESCALATE as ESCALATE
from bot.lifecycle import KINDS as KINDS
from bot.lifecycle import REMIND as REMIND
from bot.lifecycle import TimerRef as TimerRef
from bot.lifecycle import arm as arm
from bot.lifecycle import disarm as disarm
from bot.lifecycle import pause_escalation as pause_escalation
from bot.lifecycle import replan_for_level as replan_for_level
from bot.lifecycle import resume_escalation as resume_escalation
from bot.lifecycle import wanted as wanted
from bot.storage.timers import TimerQueue as TimerQueue
