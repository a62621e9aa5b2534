"""`incident-bot rollback NAMESPACE/NAME [--kind K] [--to-revision N] [--incident ID] [--dry-run] [--json]`"""

from __future__ import annotations

import argparse
import getpass
import json
import re
from datetime import UTC, datetime
from typing import Any

from bot.integrations.kube import KubeClient
from bot.rollback.preview import Refused, preview_lines
from bot.rollback.preview_argo import preview_workload
from bot.settings import Settings
from bot.wiring import build_flow

_TARGET = re.compile(r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)/([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$")


def add_rollback_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `incident-bot rollback`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "rollback",
        help="preview a rollback (--dry-run), or request one to be approved in Slack",
        description="Without --dry-run the request is posted to Slack, where an approver approves it.",
    )
    p.add_argument("target", help="NAMESPACE/DEPLOYMENT")
    p.add_argument(
        "--kind",
        default="Deployment",
        choices=["Deployment", "StatefulSet", "LeaderWorkerSet", "Rollout"],
        help="the workload's kind (default Deployment)",
    )
    p.add_argument("--to-revision", type=int, help="roll back to this revision (default: the previous one)")
    p.add_argument("--incident", help="link the rollback to an incident, e.g. INC-0042")
    p.add_argument("--dry-run", action="store_true", help="print the preview; change nothing, store nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_rollback)
    return p


def cmd_rollback(args: argparse.Namespace, settings: Settings, *, kube: KubeClient | None = None) -> int:
    """Print a rollback's preview (--dry-run) or file the request for approval in Slack."""
    m = _TARGET.match(args.target)
    if not m:
        print(f"incident-bot: {args.target!r} is not NAMESPACE/DEPLOYMENT")
        return 2
    namespace, deployment = m.group(1), m.group(3)
    kube = kube or KubeClient.from_settings(settings)
    if args.dry_run:
        try:
            preview = preview_workload(
                kube, namespace, deployment, args.to_revision, now=datetime.now(UTC), kind=args.kind
            )
        except Refused as exc:
            print(json.dumps({"refused": exc.code, "reason": str(exc)}) if args.json else f"refused: {exc}")
            return 1
        data = preview.to_dict()
        print(json.dumps(data, indent=2) if args.json else "\n".join(preview_lines(data)))
        print("" if args.json else "(dry run: nothing was changed)")
        return 0
    if not settings.slack_configured:
        print(
            "incident-bot: rollbacks are approved in Slack, which is not configured; use --dry-run to preview"
        )
        return 2
    flow = build_flow(settings, kube=kube)
    actor = f"cli:{getpass.getuser()}"
    req = flow.request(
        namespace,
        deployment,
        actor=actor,
        to_revision=args.to_revision,
        incident_id=args.incident,
        kind=args.kind,
    )
    if args.json:
        print(json.dumps(req.model_dump(mode="json"), indent=2))
    else:
        if req.preview:
            print("\n".join(preview_lines(req.preview)))
        print(f"{req.id}: {req.state.value}" + (f" ({req.reason})" if req.reason else ""))
        if req.state.value == "previewed":
            until = f"{req.expires_at:%H:%M:%S} UTC" if req.expires_at else "?"
            print(f"waiting for an approver in Slack ({flow.channel_for(req)}) until {until}")
    return 0 if req.state.value == "previewed" else 1
