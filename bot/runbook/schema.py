"""Moved to bot.plan.schema; kept until the test move."""

from __future__ import annotations

import bot.steps  # noqa: F401  (old callers relied on the shipped step types being registered by this import)
from bot.plan.schema import ID_PATTERN as ID_PATTERN
from bot.plan.schema import MAX_STEP_TIMEOUT as MAX_STEP_TIMEOUT
from bot.plan.schema import MatchSpec as MatchSpec
from bot.plan.schema import ParameterSpec as ParameterSpec
from bot.plan.schema import Problem as Problem
from bot.plan.schema import Runbook as Runbook
from bot.plan.schema import Seconds as Seconds
from bot.plan.schema import StepSpec as StepSpec
from bot.plan.schema import check_runbook as check_runbook
from bot.plan.schema import lint_paths as lint_paths
from bot.plan.schema import lint_text as lint_text
from bot.plan.schema import load_runbook as load_runbook
from bot.plan.schema import load_runbooks as load_runbooks
from bot.plan.schema import parse_runbook as parse_runbook
from bot.plan.schema import runbook_files as runbook_files
