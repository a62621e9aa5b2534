"""Moved to bot.plan.expr; kept until the test move."""

from __future__ import annotations

from bot.plan.expr import MAX_LENGTH as MAX_LENGTH
from bot.plan.expr import ExprError as ExprError
from bot.plan.expr import Expression as Expression
from bot.plan.expr import check_value as check_value
from bot.plan.expr import compile_expr as compile_expr
from bot.plan.expr import is_whole_placeholder as is_whole_placeholder
from bot.plan.expr import placeholders as placeholders
from bot.plan.expr import render_value as render_value
