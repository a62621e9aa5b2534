"""Moved to bot.storage.bucket; kept until the test move."""

from bot.storage.bucket import TokenBucket as TokenBucket
