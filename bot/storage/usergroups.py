"""The short-lived cache of Slack user-group members (``usergroups.users.list``), in Redis.

Keys (under the store prefix): ``slack:usergroup:<group id>`` -> JSON list of user ids, with a TTL.
"""

from __future__ import annotations

import json

import redis


class UserGroupCache:
    """Members of Slack user groups as last looked up, kept for a few seconds and shared by workers."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._prefix = prefix + "slack:usergroup:"

    def get(self, group_id: str) -> list[str] | None:
        """The cached members of the group, or None when nothing is cached."""
        cached = self._r.get(f"{self._prefix}{group_id}")
        return None if cached is None else list(json.loads(cached))

    def put(self, group_id: str, members: list[str], seconds: int) -> None:
        """Cache the group's members for `seconds`."""
        self._r.set(f"{self._prefix}{group_id}", json.dumps(members), ex=seconds)
