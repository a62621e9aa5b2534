"""The shipped step types; importing this package registers them all."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

from bot.severity import parse_duration


def _seconds(value: object) -> float:
    """A duration ("30s", "5m", "1h30m") or a number of seconds, as float seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"a duration must be positive, got {value!r}")
        return float(value)
    return parse_duration(value).total_seconds()


Seconds = Annotated[float, BeforeValidator(_seconds)]

from bot.steps import flow, k8s, prometheus, vllm  # noqa: E402  (registers the step types)

__all__ = ["Seconds", "flow", "k8s", "prometheus", "vllm"]
