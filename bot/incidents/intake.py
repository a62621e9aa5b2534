"""Moved to bot.intake (core); kept until the test move."""

from __future__ import annotations

from bot.intake import AUTOMATION_ACTOR as AUTOMATION_ACTOR
from bot.intake import Classifier as Classifier
from bot.intake import Decision as Decision
from bot.intake import Entry as Entry
from bot.intake import MaintenanceMark as MaintenanceMark
from bot.intake import Outcome as Outcome
from bot.intake import decide as decide
from bot.intake import policy_classifier as policy_classifier
from bot.intake import severity_entry as severity_entry
