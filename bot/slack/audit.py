"""Moved to bot.storage.audit; kept until the test move."""

from bot.storage.audit import AUDIT_MAXLEN as AUDIT_MAXLEN
from bot.storage.audit import AuditLog as AuditLog
