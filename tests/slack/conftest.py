"""Fixtures of the Slack tests: the Web API emulator and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from bot.sandbox.slack_emulator import SlackEmulator
from bot.settings import Settings
from tests.support.slack import APPROVER, GROUP_RESPONDER, RESPONDER, SIGNING_SECRET


@pytest.fixture
def emulator() -> Iterator[SlackEmulator]:
    """A fresh Slack Web API emulator on loopback."""
    with SlackEmulator(
        users={RESPONDER: "rita", APPROVER: "abe", GROUP_RESPONDER: "gus"},
        usergroups={"S0RESPOND": [GROUP_RESPONDER]},
    ) as emu:
        yield emu


@pytest.fixture
def slack_settings(settings: Settings, emulator: SlackEmulator) -> Settings:
    """Test settings with Slack configured against the emulator (responders: a user and a group)."""
    return settings.model_copy(
        update={
            "slack_bot_token": SecretStr(emulator.token),
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_api_url": emulator.api_url,
            "slack_responders": f"{RESPONDER},S0RESPOND",
            "slack_approvers": APPROVER,
            "slack_response_url_prefixes": emulator.base + "/response/,https://hooks.slack.com/",
            "slack_digest_interval_seconds": 0.5,
        }
    )
