"""Which settings decide the fan-out of incident changes (the process settings unless a test overrides)."""

from __future__ import annotations

from bot.settings import Settings, get_settings

_override: Settings | None = None


def fanout_settings() -> Settings:
    """The settings that decide which integrations hear about changes (the process settings by default)."""
    return _override or get_settings()


def use_settings(settings: Settings | None) -> None:
    """Decide the fan-out with other settings (tests and embedding); None goes back to the process's."""
    global _override
    _override = settings
