"""`/incident` text -> typed commands; every mistake gets a usage message, never an exception type leak."""

from __future__ import annotations

import pytest

from bot.slack.commands import Role, UsageError, parse


@pytest.mark.parametrize(
    ("text", "name", "args", "role"),
    [
        ("", "help", {}, Role.EVERYONE),
        ("help", "help", {}, Role.EVERYONE),
        ("list", "list", {}, Role.EVERYONE),
        ("status", "status", {}, Role.EVERYONE),
        ("show inc-7", "show", {"incident_id": "INC-0007"}, Role.EVERYONE),
        ("ack INC-0042", "ack", {"incident_id": "INC-0042"}, Role.RESPONDER),
        ("resolve 42 rolled back, error rate normal", "resolve",
         {"incident_id": "INC-0042", "note": "rolled back, error rate normal"}, Role.RESPONDER),
        ("sev INC-0042 p0 customers see 5xx", "sev",
         {"incident_id": "INC-0042", "severity": "P0", "reason": "customers see 5xx"}, Role.RESPONDER),
        ("commander INC-0042 <@U0ABC123|rita>", "commander",
         {"incident_id": "INC-0042", "commander": "U0ABC123"}, Role.RESPONDER),
        ("runbook INC-0042 scale-decode --dry-run", "runbook",
         {"incident_id": "INC-0042", "runbook": "scale-decode", "dry_run": True}, Role.APPROVER),
        ("runbook INC-0042 service-down namespace=llm-d deployment=ms-decode", "runbook",
         {"incident_id": "INC-0042", "runbook": "service-down", "dry_run": False,
          "overrides": {"namespace": "llm-d", "deployment": "ms-decode"}}, Role.APPROVER),
        ("rollback llm-d/vllm-decode --to-revision 3 --incident INC-0042", "rollback",
         {"namespace": "llm-d", "deployment": "vllm-decode", "to_revision": 3, "incident_id": "INC-0042",
          "dry_run": False}, Role.APPROVER),
        ("rollback llm-d/vllm-decode", "rollback",
         {"namespace": "llm-d", "deployment": "vllm-decode", "to_revision": None, "incident_id": None,
          "dry_run": False}, Role.APPROVER),
        ("rollback llm-d/ms-decode --kind lws", "rollback",
         {"namespace": "llm-d", "deployment": "ms-decode", "to_revision": None, "incident_id": None,
          "dry_run": False, "kind": "LeaderWorkerSet"}, Role.APPROVER),
        ("rollback llm-d/ms-prefill --kind StatefulSets --to-revision 2", "rollback",
         {"namespace": "llm-d", "deployment": "ms-prefill", "to_revision": 2, "incident_id": None,
          "dry_run": False, "kind": "StatefulSet"}, Role.APPROVER),
        ("rollback llm-d/vllm-decode --kind deploy", "rollback",
         {"namespace": "llm-d", "deployment": "vllm-decode", "to_revision": None, "incident_id": None,
          "dry_run": False}, Role.APPROVER),
        ("automation status", "automation", {"action": "status"}, Role.EVERYONE),
        ("automation off flapping pods", "automation",
         {"action": "off", "reason": "flapping pods"}, Role.APPROVER),
        ("maintenance list", "maintenance", {"action": "list"}, Role.EVERYONE),
        ("maintenance start llm-d/vllm-decode 1h30m node upgrade", "maintenance",
         {"action": "start", "namespace": "llm-d", "deployment": "vllm-decode", "seconds": 5400,
          "reason": "node upgrade"}, Role.APPROVER),
        ("maintenance end mw-1", "maintenance", {"action": "end", "window_id": "mw-1"}, Role.APPROVER),
    ],
)  # fmt: skip
def test_valid_commands(text: str, name: str, args: dict[str, object], role: Role) -> None:
    command = parse(text)
    assert (command.name, command.args, command.role) == (name, args, role)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("frobnicate", "unknown subcommand"),
        ("show", "usage: `/incident show"),
        ("ack INCIDENT", "not an incident id"),
        ("sev INC-1 P9", "not a severity"),
        ("commander INC-1 @rita", "pick the person from the @-menu"),
        ("runbook INC-1", "usage: `/incident runbook"),
        ("runbook INC-1 ../../etc/passwd", "not a runbook name"),
        ("runbook INC-1 x --force", "unknown option `--force`"),
        ("runbook INC-1 x llm-d", "usage: `/incident runbook INC-0042 NAME [--dry-run] [key=value …]`"),
        ("runbook INC-1 x Namespace=llm-d", "`Namespace=llm-d` is not a parameter override"),
        ("runbook INC-1 x namespace=<!channel>", "is not a parameter override"),
        ("runbook INC-1 x deployment=", "is not a parameter override"),
        ("rollback vllm-decode", "NAMESPACE/DEPLOYMENT"),
        ("rollback Bad_NS/x", "not a Kubernetes namespace"),
        ("rollback ns/dep --to-revision -1", "positive number"),
        ("rollback ns/dep --to-revision", "needs a value"),
        ("rollback ns/dep --kind daemonset", "one of deployment, statefulset (sts), leaderworkerset (lws)"),
        ("automation maybe", "usage: `/incident automation"),
        ("maintenance start llm-d forever", "not a duration"),
        ("maintenance start llm-d 30d", "between 1 minute and 7 days"),
        ('show "unbalanced', "not an incident id"),
    ],
)
def test_mistakes_get_a_usage_message(text: str, hint: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        parse(text)
    assert hint in str(info.value)


def test_app_manifest_matches_what_the_bot_needs() -> None:
    import yaml

    from bot.settings import REPO_ROOT

    manifest = yaml.safe_load((REPO_ROOT / "deploy" / "slack-app-manifest.yaml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "commands", "usergroups:read", "users:read", "channels:history"} <= scopes
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/incident" and command["should_escape"] is True
    urls = [
        command["url"],
        manifest["settings"]["interactivity"]["request_url"],
        manifest["settings"]["event_subscriptions"]["request_url"],
    ]
    assert all(u.startswith("https://") and u.endswith("/slack/events") for u in urls)
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_mention"]
