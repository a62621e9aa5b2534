"""Moved to bot.plan.select; kept until the test move."""

from __future__ import annotations

from bot.plan.select import MissingParameter as MissingParameter
from bot.plan.select import Plan as Plan
from bot.plan.select import PlannedStep as PlannedStep
from bot.plan.select import Selection as Selection
from bot.plan.select import incident_label_sets as incident_label_sets
from bot.plan.select import plan as plan
from bot.plan.select import resolve_parameters as resolve_parameters
from bot.plan.select import select as select
