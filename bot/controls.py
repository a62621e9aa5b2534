"""Moved to bot.storage.controls (storage); kept until the test move."""

from __future__ import annotations

from bot.storage.controls import MAX_WINDOW as MAX_WINDOW
from bot.storage.controls import AutomationControls as AutomationControls
from bot.storage.controls import AutomationSwitch as AutomationSwitch
from bot.storage.controls import Clock as Clock
from bot.storage.controls import Controls as Controls
from bot.storage.controls import InvalidMatcher as InvalidMatcher
from bot.storage.controls import MaintenanceWindows as MaintenanceWindows
from bot.storage.controls import Matcher as Matcher
from bot.storage.controls import MatchOp as MatchOp
from bot.storage.controls import SwitchStatus as SwitchStatus
from bot.storage.controls import Window as Window
