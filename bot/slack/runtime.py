"""What the Slack Celery tasks use, built by ``bot.wiring.build_runtime``."""

from __future__ import annotations

from dataclasses import dataclass

from bot.integrations.slack import SlackWeb
from bot.settings import Settings
from bot.slack.notifier import SlackNotifier
from bot.slack.service import SlackService
from bot.storage.incidents import IncidentStore
from bot.tasknames import TaskSender


@dataclass
class SlackRuntime:
    """Everything the Slack Celery tasks use."""

    settings: Settings
    store: IncidentStore
    web: SlackWeb
    notifier: SlackNotifier
    service: SlackService
    sender: TaskSender
