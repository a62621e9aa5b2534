"""CLI pieces for operations: maintenance windows, the kill switch, postmortems and the report."""

from __future__ import annotations

import argparse
import json
import os
import pwd

import redis

from bot import wiring
from bot.errors import PermanentError
from bot.incidents.postmortem import render_postmortem
from bot.incidents.report import collect_report, format_report
from bot.settings import Settings
from bot.severity import parse_duration
from bot.storage.controls import AutomationSwitch, MaintenanceWindows, Window
from bot.storage.incidents import IncidentStore


def _redis(settings: Settings) -> redis.Redis:
    return wiring.redis_client(settings, "cli")


def _store(settings: Settings) -> IncidentStore:
    return wiring.incident_store(settings, _redis(settings))


def _me() -> str:
    """The local account name, the default for --by."""
    return pwd.getpwuid(os.getuid()).pw_name


def _duration(text: str) -> object:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _window_line(w: Window) -> str:
    matchers = ", ".join(str(m) for m in w.matchers)
    return (
        f"{w.id:<6} {w.starts:%Y-%m-%d %H:%M} - {w.ends:%Y-%m-%d %H:%M} UTC  "
        f"[{matchers}]  {w.reason} (by {w.created_by})"
    )


# --- maintenance --------------------------------------------------------------------------------
def cmd_maintenance_add(args: argparse.Namespace, settings: Settings) -> int:
    """Add a maintenance window."""
    windows = MaintenanceWindows(_redis(settings), settings.key_prefix)
    window = windows.add(args.matcher, args.duration, args.reason, args.by or _me())
    print(f"added {_window_line(window)}")
    return 0


def cmd_maintenance_list(args: argparse.Namespace, settings: Settings) -> int:
    """List current and future maintenance windows."""
    found = MaintenanceWindows(_redis(settings), settings.key_prefix).list()
    if args.json:
        print(json.dumps([w.to_dict() for w in found], indent=2))
        return 0
    if not found:
        print("no maintenance windows")
    for w in found:
        print(_window_line(w))
    return 0


def cmd_maintenance_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Remove a maintenance window by id."""
    if not MaintenanceWindows(_redis(settings), settings.key_prefix).remove(args.id):
        raise PermanentError(f"no maintenance window {args.id!r} (it may have ended already)")
    print(f"removed {args.id.upper()}")
    return 0


# --- automation kill switch ---------------------------------------------------------------------
def cmd_automation(args: argparse.Namespace, settings: Settings) -> int:
    """Switch automated actions off or on for every worker, or show the switch."""
    switch = AutomationSwitch(_redis(settings), settings.key_prefix)
    if args.action == "off":
        if not args.reason:
            raise PermanentError("automation off needs --reason (it is shown to everyone who asks why)")
        state = switch.disable(args.by or _me(), args.reason)
    elif args.action == "on":
        state = switch.enable(args.by or _me(), args.reason or "")
    else:
        state = switch.status()
    if args.json:
        print(json.dumps(state.to_dict(), indent=2))
        return 0
    line = f"automation is {'ON' if state.enabled else 'OFF'}"
    if state.by:
        line += f" (set by {state.by} at {state.at:%Y-%m-%d %H:%M:%S} UTC" if state.at else f" (by {state.by}"
        line += f": {state.reason})" if state.reason else ")"
    print(line)
    return 0


# --- postmortem and report ----------------------------------------------------------------------
def cmd_postmortem(args: argparse.Namespace, settings: Settings) -> int:
    """Print the postmortem draft of an incident."""
    store = _store(settings)
    incident = store.get(args.id.upper())
    text = render_postmortem(
        incident, store.timeline(incident.id), templates_dir=settings.templates_dir, policy=store.policy
    )
    print(text, end="")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """Print the operations report for the last --since."""
    report = collect_report(_store(settings), period=args.since)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


# --- parsers ------------------------------------------------------------------------------------
def add_ops_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `maintenance`, `automation` and `report`."""
    mnt = sub.add_parser("maintenance", help="maintenance windows: no pages, no actions for matching alerts")
    msub = mnt.add_subparsers(dest="maintenance_command", metavar="ACTION", required=True)
    p = msub.add_parser("add", help="add a window starting now")
    p.add_argument(
        "--matcher",
        action="append",
        required=True,
        help="label matcher, repeatable (all must hold): name=v, name!=v, name=~regex, name!~regex",
    )
    p.add_argument("--duration", type=_duration, required=True, help="how long, e.g. 90m, 2h, 1d")
    p.add_argument("--reason", required=True, help="why (shown on incidents it covers)")
    p.add_argument("--by", help="who (default: your account name)")
    p.set_defaults(handler=cmd_maintenance_add)
    p = msub.add_parser("list", help="current and future windows")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_maintenance_list)
    p = msub.add_parser("remove", help="end a window now")
    p.add_argument("id", help="window id, e.g. MW-3")
    p.set_defaults(handler=cmd_maintenance_remove)

    p = sub.add_parser("automation", help="the global kill switch for automated actions")
    p.add_argument("action", choices=["off", "on", "status"])
    p.add_argument("--reason", help="why (required for off)")
    p.add_argument("--by", help="who (default: your account name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_automation)

    p = sub.add_parser("report", help="incidents by severity, MTTA/MTTR, actions, escalations, flapping")
    p.add_argument("--since", type=_duration, default=_duration("30d"), help="period, e.g. 7d, 24h (30d)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_report)


def add_postmortem_parser(isub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `incidents postmortem ID`."""
    p = isub.add_parser("postmortem", help="print the postmortem draft of an incident (Markdown)")
    p.add_argument("id", help="incident id, e.g. INC-0042")
    p.set_defaults(handler=cmd_postmortem)
