"""Logging set-up: one line per event, secrets redacted."""

from __future__ import annotations

import logging
from collections.abc import Iterable

REDACTED = "***"


class RedactingFilter(logging.Filter):
    """Replaces every configured secret value in a log record's text with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message, then blank out secrets in it."""
        if not self._secrets:
            return True
        text = record.getMessage()
        redacted = text
        for secret in self._secrets:
            redacted = redacted.replace(secret, REDACTED)
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Log to stderr at `level`, with secrets redacted from every handler's output."""
    root = logging.getLogger()
    root.setLevel(level)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
