"""The project's exception tree.

    IncidentBotError
    ├── ConfigError            settings or files an operator wrote are wrong; fix and restart
    ├── TransientError         worth retrying: a dependency is down, slow or rate-limiting
    │   └── BrokerUnavailable  Redis / the Celery broker cannot take the message right now
    └── PermanentError         retrying will not help: bad input, refused by policy, not found
        ├── InvalidTransition  an incident lifecycle move that the transition table forbids
        └── IntentMissing      a runbook step tried a change before recording its intent

Integrations translate vendor exceptions into these at the boundary, so Celery retries on
``TransientError`` only and everything else fails fast with a message a person can act on.
"""

from __future__ import annotations


class IncidentBotError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(IncidentBotError):
    """Configuration or an operator-edited file is invalid."""


class TransientError(IncidentBotError):
    """A failure that may succeed when retried later."""


class BrokerUnavailable(TransientError):
    """The broker (Redis) could not durably accept a message."""


class PermanentError(IncidentBotError):
    """A failure that retrying will not fix."""


class InvalidTransition(PermanentError):
    """An incident state change that the lifecycle table does not allow."""


class IntentMissing(PermanentError):
    """A mutating call was attempted before the step recorded its intent (a bug in the step)."""
