"""Parsing `/incident …` into a typed command (pure; no I/O), with usage text for every mistake."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from bot.errors import PermanentError
from bot.models import Severity


class Role(IntEnum):
    """Who may run a command: everyone, the responder group, or the approver group."""

    EVERYONE = 0
    RESPONDER = 1
    APPROVER = 2


USAGE = """\
*`/incident` commands*
• `help` — this text
• `list` — open incidents
• `show INC-0042` — one incident and its latest timeline
• `status` — the serving tier at a glance
• `ack INC-0042` — acknowledge _(responders)_
• `resolve INC-0042 [note]` — resolve by hand _(responders)_
• `sev INC-0042 P1 [reason]` — change severity (P0 to P3) _(responders)_
• `commander INC-0042 @user` — name the incident commander _(responders)_
• `runbook INC-0042 NAME [--dry-run] [key=value …]` — run a runbook for the incident; `namespace=…` \
`deployment=…` name its target when the bot could not _(approvers)_
• `rollback NAMESPACE/DEPLOYMENT [--to-revision N] [--incident INC-0042] [--kind lws|sts|rollout]` — roll \
back (a Deployment unless `--kind` names a LeaderWorkerSet, StatefulSet or Argo Rollout) _(approvers)_
• `automation on|off|status [reason]` — the automation kill switch _(approvers; status: everyone)_
• `maintenance list` · `maintenance start TARGET DURATION [reason]` · `maintenance end ID` — \
maintenance windows; TARGET = NAMESPACE or NAMESPACE/DEPLOYMENT, DURATION like 30m, 2h, 1h30m \
_(approvers; list: everyone)_"""

_INCIDENT = re.compile(r"^(?:INC-)?(\d{1,9})$", re.IGNORECASE)
_USER = re.compile(r"^<@([UW][A-Z0-9]{2,20})(?:\|[^>]*)?>$|^([UW][A-Z0-9]{2,20})$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_RUNBOOK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_PARAM = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PARAM_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,252}$")
_DURATION = re.compile(r"^(?:(\d{1,3})d)?(?:(\d{1,4})h)?(?:(\d{1,5})m)?$")
MAX_MAINTENANCE_SECONDS = 7 * 86_400


class UsageError(PermanentError):
    """The command text is not a valid `/incident` command; the message says how to fix it."""


@dataclass(frozen=True)
class Command:
    """A parsed `/incident` command."""

    name: str  # e.g. "ack", "automation", "maintenance"
    args: dict[str, Any] = field(default_factory=dict)
    role: Role = Role.EVERYONE

    @property
    def label(self) -> str:
        """A short name for audit and logs, e.g. `automation off`."""
        action = self.args.get("action")
        return f"{self.name} {action}" if action else self.name


def incident_id(text: str) -> str:
    """`INC-0042`, `inc-42` or `42` -> `INC-0042`."""
    m = _INCIDENT.match(text)
    if not m:
        raise UsageError(f"`{text}` is not an incident id (like INC-0042)")
    return f"INC-{int(m.group(1)):04d}"


def user_id(text: str) -> str:
    """A Slack mention `<@U123|name>` or a bare user ID -> `U123`."""
    m = _USER.match(text)
    if not m:
        raise UsageError(
            f"`{text}` is not a user mention: pick the person from the @-menu so Slack sends their ID"
        )
    return m.group(1) or m.group(2)


def duration_seconds(text: str) -> int:
    """`30m`, `2h`, `1h30m`, `1d` -> seconds (at most 7 days)."""
    m = _DURATION.match(text.lower())
    if not text or not m or not any(m.groups()):
        raise UsageError(f"`{text}` is not a duration (like 30m, 2h, 1h30m)")
    days, hours, minutes = (int(g or 0) for g in m.groups())
    seconds = days * 86_400 + hours * 3600 + minutes * 60
    if not 0 < seconds <= MAX_MAINTENANCE_SECONDS:
        raise UsageError("a maintenance window lasts between 1 minute and 7 days")
    return seconds


def _target(text: str, *, deployment_required: bool) -> tuple[str, str | None]:
    namespace, _, deployment = text.partition("/")
    if not _DNS_LABEL.match(namespace):
        raise UsageError(f"`{namespace}` is not a Kubernetes namespace name")
    if deployment_required and not deployment:
        raise UsageError(f"`{text}`: name the deployment as NAMESPACE/DEPLOYMENT")
    if deployment and not _DNS_SUBDOMAIN.match(deployment):
        raise UsageError(f"`{deployment}` is not a Kubernetes deployment name")
    return namespace, deployment or None


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: fall back to plain words
        return text.split()


def _need(words: list[str], n: int, usage: str) -> None:
    if len(words) < n:
        raise UsageError(f"usage: `/incident {usage}`")


def _flags(words: list[str], known: dict[str, bool]) -> tuple[list[str], dict[str, str | bool]]:
    """Split `--flag [value]` options (known maps flag -> takes a value) from positional words."""
    positional: list[str] = []
    flags: dict[str, str | bool] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            name = word[2:]
            if name not in known:
                raise UsageError(f"unknown option `{word}` (known: {', '.join('--' + k for k in known)})")
            if known[name]:
                if i + 1 >= len(words):
                    raise UsageError(f"`{word}` needs a value")
                flags[name] = words[i + 1]
                i += 2
                continue
            flags[name] = True
        else:
            positional.append(word)
        i += 1
    return positional, flags


def _show(rest: list[str]) -> Command:
    _need(rest, 1, "show INC-0042")
    return Command("show", {"incident_id": incident_id(rest[0])})


def _ack(rest: list[str]) -> Command:
    _need(rest, 1, "ack INC-0042")
    return Command("ack", {"incident_id": incident_id(rest[0])}, Role.RESPONDER)


def _resolve(rest: list[str]) -> Command:
    _need(rest, 1, "resolve INC-0042 [note]")
    return Command(
        "resolve", {"incident_id": incident_id(rest[0]), "note": " ".join(rest[1:])[:500]}, Role.RESPONDER
    )


def _sev(rest: list[str]) -> Command:
    _need(rest, 2, "sev INC-0042 P1 [reason]")
    try:
        severity = Severity(rest[1].upper())
    except ValueError:
        raise UsageError(f"`{rest[1]}` is not a severity: use P0, P1, P2 or P3") from None
    args = {
        "incident_id": incident_id(rest[0]),
        "severity": severity.value,
        "reason": " ".join(rest[2:])[:500],
    }
    return Command("sev", args, Role.RESPONDER)


def _commander(rest: list[str]) -> Command:
    _need(rest, 2, "commander INC-0042 @user")
    return Command(
        "commander", {"incident_id": incident_id(rest[0]), "commander": user_id(rest[1])}, Role.RESPONDER
    )


def _runbook(rest: list[str]) -> Command:
    positional, flags = _flags(rest, {"dry-run": False})
    _need(positional, 2, "runbook INC-0042 NAME [--dry-run] [key=value …]")
    if not _RUNBOOK.match(positional[1]):
        raise UsageError(f"`{positional[1]}` is not a runbook name")
    overrides = {}
    for word in positional[2:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise UsageError("usage: `/incident runbook INC-0042 NAME [--dry-run] [key=value …]`")
        if not _PARAM.match(key) or not _PARAM_VALUE.match(value):
            raise UsageError(f"`{word}` is not a parameter override (like namespace=llm-d)")
        overrides[key] = value
    args: dict[str, Any] = {
        "incident_id": incident_id(positional[0]),
        "runbook": positional[1],
        "dry_run": bool(flags.get("dry-run")),
    }
    if overrides:
        args["overrides"] = overrides
    return Command("runbook", args, Role.APPROVER)


#: `--kind` spellings (kubectl's names and short names) -> the workload kind.
KIND_ALIASES = {
    "deployment": "Deployment",
    "deploy": "Deployment",
    "statefulset": "StatefulSet",
    "sts": "StatefulSet",
    "leaderworkerset": "LeaderWorkerSet",
    "lws": "LeaderWorkerSet",
    "rollout": "Rollout",
    "ro": "Rollout",
}


def workload_kind(raw: str) -> str:
    """The workload kind named by `--kind` (kubectl's names, any case)."""
    key = raw.lower()
    kind = KIND_ALIASES.get(key) or KIND_ALIASES.get(key.removesuffix("s"))
    if kind is None:
        raise UsageError(
            f"`--kind {raw[:40]}`: one of deployment, statefulset (sts), leaderworkerset (lws), rollout"
        )
    return kind


def _rollback(rest: list[str]) -> Command:
    positional, flags = _flags(rest, {"to-revision": True, "incident": True, "dry-run": False, "kind": True})
    if len(positional) != 1:
        raise UsageError(
            "usage: `/incident rollback NAMESPACE/DEPLOYMENT [--to-revision N] [--incident INC-0042]`"
        )
    namespace, deployment = _target(positional[0], deployment_required=True)
    revision: int | None = None
    if "to-revision" in flags:
        raw = str(flags["to-revision"])
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError(f"`--to-revision {raw}`: a revision is a positive number")
        revision = int(raw)
    inc = incident_id(str(flags["incident"])) if "incident" in flags else None
    args = {
        "namespace": namespace,
        "deployment": deployment,
        "to_revision": revision,
        "incident_id": inc,
        "dry_run": bool(flags.get("dry-run")),
    }
    kind = workload_kind(str(flags["kind"])) if "kind" in flags else "Deployment"
    if kind != "Deployment":
        args["kind"] = kind
    return Command("rollback", args, Role.APPROVER)


def _automation(rest: list[str]) -> Command:
    _need(rest, 1, "automation on|off|status [reason]")
    action = rest[0].lower()
    if action == "status":
        return Command("automation", {"action": "status"})
    if action not in ("on", "off"):
        raise UsageError("usage: `/incident automation on|off|status [reason]`")
    return Command("automation", {"action": action, "reason": " ".join(rest[1:])[:500]}, Role.APPROVER)


def _maintenance(rest: list[str]) -> Command:
    _need(rest, 1, "maintenance list|start|end …")
    action = rest[0].lower()
    if action == "list":
        return Command("maintenance", {"action": "list"})
    if action == "start":
        _need(rest, 3, "maintenance start NAMESPACE[/DEPLOYMENT] DURATION [reason]")
        namespace, deployment = _target(rest[1], deployment_required=False)
        args = {
            "action": "start",
            "namespace": namespace,
            "deployment": deployment,
            "seconds": duration_seconds(rest[2]),
            "reason": " ".join(rest[3:])[:500],
        }
        return Command("maintenance", args, Role.APPROVER)
    if action == "end":
        _need(rest, 2, "maintenance end ID")
        if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", rest[1]):
            raise UsageError(f"`{rest[1]}` is not a maintenance window id")
        return Command("maintenance", {"action": "end", "window_id": rest[1]}, Role.APPROVER)
    raise UsageError("usage: `/incident maintenance list|start|end …`")


#: Subcommand -> its parser (given the words after the subcommand).
_SUBCOMMANDS: dict[str, Callable[[list[str]], Command]] = {
    "list": lambda _rest: Command("list"),
    "status": lambda _rest: Command("status"),
    "show": _show,
    "ack": _ack,
    "resolve": _resolve,
    "sev": _sev,
    "severity": _sev,
    "commander": _commander,
    "runbook": _runbook,
    "rollback": _rollback,
    "automation": _automation,
    "maintenance": _maintenance,
}


def parse(text: str) -> Command:
    """Parse the text after `/incident`; raises UsageError with a helpful message."""
    words = _words(text.strip())
    if not words or words[0].lower() in ("help", "-h", "--help", "?"):
        return Command("help")
    subcommand = _SUBCOMMANDS.get(words[0].lower())
    if subcommand is None:
        raise UsageError(f"unknown subcommand `{words[0][:40]}`")
    return subcommand(words[1:])
