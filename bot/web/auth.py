"""Authentication of Alertmanager webhooks (Bearer token or basic auth, constant-time)."""

from __future__ import annotations

import base64
import binascii
import hmac

from bot.settings import Settings


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def alertmanager_authorized(settings: Settings, authorization: str | None) -> bool:
    """Whether an Authorization header value carries credentials the settings accept."""
    if settings.alertmanager_allow_anonymous and not settings.alertmanager_auth_configured:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and settings.alertmanager_token is not None:
        return _eq(value, settings.alertmanager_token.get_secret_value())
    if (
        scheme == "basic"
        and settings.alertmanager_username is not None
        and settings.alertmanager_password is not None
    ):
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        # evaluate both comparisons so timing does not reveal which part was wrong
        ok_user = _eq(user, settings.alertmanager_username)
        ok_pass = _eq(password, settings.alertmanager_password.get_secret_value())
        return bool(sep) and ok_user and ok_pass
    return False
