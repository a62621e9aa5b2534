"""Who may do what from Slack: everyone reads, responders change incidents, approvers act on systems.

Groups are configured as Slack user IDs (``U…``/``W…``) and/or user-group IDs (``S…``). User-group
membership comes from ``usergroups.users.list`` and is cached in Redis for a short while, so a person
removed from a group loses the right within SLACK_USERGROUP_CACHE_SECONDS. Approvers may also do what
responders may.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.errors import PermanentError
from bot.integrations.slack import SlackWeb
from bot.slack.commands import Role
from bot.storage.usergroups import UserGroupCache

log = logging.getLogger("incident_bot.slack.authz")

ROLE_NAMES = {Role.EVERYONE: "everyone", Role.RESPONDER: "responders", Role.APPROVER: "approvers"}


@dataclass(frozen=True)
class Decision:
    """The answer to "may this user do this?" with the reason shown to a refused user."""

    allowed: bool
    reason: str


class Authorizer:
    """Checks a Slack user against the responder and approver groups."""

    def __init__(
        self,
        web: SlackWeb,
        cache: UserGroupCache,
        *,
        responders: frozenset[str],
        approvers: frozenset[str],
        cache_seconds: int = 60,
    ) -> None:
        self._web = web
        self._cache = cache
        self._groups = {Role.RESPONDER: responders, Role.APPROVER: approvers}
        self._cache_seconds = cache_seconds

    def _usergroup(self, group_id: str) -> frozenset[str]:
        if self._cache_seconds > 0:
            cached = self._cache.get(group_id)
            if cached is not None:
                return frozenset(cached)
        try:
            members = self._web.usergroup_members(group_id)
        except PermanentError as exc:  # a misconfigured group must not lock everybody out with a crash
            log.warning("user group %s could not be resolved: %s; treated as empty", group_id, exc)
            members = []
        if self._cache_seconds > 0:
            self._cache.put(group_id, members, self._cache_seconds)
        return frozenset(members)

    def _member(self, user_id: str, entries: frozenset[str]) -> bool:
        if user_id in entries:
            return True
        return any(user_id in self._usergroup(e) for e in sorted(entries) if e.startswith("S"))

    def has_role(self, user_id: str, role: Role) -> bool:
        """Whether the user holds `role` (approvers hold the responder role too)."""
        if role is Role.EVERYONE:
            return True
        if self._member(user_id, self._groups[Role.APPROVER]):
            return True
        return role is Role.RESPONDER and self._member(user_id, self._groups[Role.RESPONDER])

    def check(self, user_id: str, role: Role, what: str) -> Decision:
        """Decide whether `user_id` may do `what`, which needs `role`."""
        if self.has_role(user_id, role):
            return Decision(True, "")
        if not self._groups[role] and not (role is Role.RESPONDER and self._groups[Role.APPROVER]):
            why = f"no {ROLE_NAMES[role]} are configured (SLACK_{ROLE_NAMES[role].upper()})"
        else:
            why = f"only {ROLE_NAMES[role]} may do that"
        return Decision(False, f"Refused: `{what}` — {why}. Nothing was changed.")
