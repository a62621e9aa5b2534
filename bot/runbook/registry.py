"""Moved to bot.plan.steptypes; kept until the test move."""

from __future__ import annotations

from collections.abc import Mapping

from bot.errors import IntentMissing as IntentMissing
from bot.plan.steptypes import REGISTRY as REGISTRY
from bot.plan.steptypes import ROOT_NAMES as ROOT_NAMES
from bot.plan.steptypes import RecoverFn as RecoverFn
from bot.plan.steptypes import Recovery as Recovery
from bot.plan.steptypes import StepContext as StepContext
from bot.plan.steptypes import StepFn as StepFn
from bot.plan.steptypes import StepParams as StepParams
from bot.plan.steptypes import StepResult as StepResult
from bot.plan.steptypes import StepServices as StepServices
from bot.plan.steptypes import StepStatus as StepStatus
from bot.plan.steptypes import StepType as StepType
from bot.plan.steptypes import TargetParams as TargetParams
from bot.plan.steptypes import TypedStepFn as TypedStepFn
from bot.plan.steptypes import expression_context as expression_context
from bot.plan.steptypes import recoverer as recoverer
from bot.plan.steptypes import step as step
from bot.plan.steptypes import step_types as _step_types


def step_types() -> Mapping[str, StepType]:
    """Every registered step type, the shipped ones included (the old entry point, until the test move)."""
    import bot.steps  # noqa: F401  (registers on import; the core registry itself never imports it)

    return _step_types()
