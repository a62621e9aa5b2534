"""`incident-bot runbook …`: lint, plan, run (inline), approve/deny, status.

Handlers are called as ``handler(args, settings) -> int``. Exit status: 0 fine; 1 a run did not succeed
or a decision was refused; 2 lint problems or unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bot.steps  # noqa: F401  (registers the shipped step types: lint and plan check against them)
from bot.catalog import load_catalog
from bot.errors import ConfigError
from bot.models import AlertmanagerWebhook, Severity
from bot.plan.schema import Runbook, lint_paths, load_runbooks
from bot.plan.select import MissingParameter, plan, resolve_parameters, select
from bot.runbook.targets import TargetResolver
from bot.settings import Settings
from bot.severity import AlertView, classify, load_policy, most_severe_classification

EXIT_OK, EXIT_FAILED, EXIT_BAD = 0, 1, 2


def add_runbook_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `runbook lint|plan|run|approve|deny|status`."""
    parser = subparsers.add_parser("runbook", help="check, plan, run and approve runbooks")
    sub = parser.add_subparsers(dest="runbook_command", metavar="ACTION", required=True)

    p = sub.add_parser("lint", help="check runbook files (schema, step types, params, conditions)")
    p.add_argument("paths", nargs="*", type=Path, help="files or directories (default: RUNBOOKS_DIR)")
    p.set_defaults(handler=cmd_lint)

    p = sub.add_parser("plan", help="which runbooks an alert would start, and what each step would do")
    p.add_argument(
        "--alert", required=True, help="Alertmanager webhook body or one alert (JSON; - for stdin)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--catalog", type=Path, metavar="FILE", help="service catalog for targets (default: CATALOG)"
    )
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser("run", help="run a runbook for an incident in this process")
    p.add_argument("name", help="runbook name")
    p.add_argument("--incident", required=True, help="incident id, e.g. INC-0042")
    p.add_argument(
        "--dry-run", action="store_true", help="reads for real, every change a server-side dry run"
    )
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    p.set_defaults(handler=cmd_run)

    for verb in ("approve", "deny"):
        p = sub.add_parser(verb, help=f"{verb} a step that waits for approval")
        p.add_argument("incident", help="incident id")
        p.add_argument("step", help="step id, or RUN:STEP as shown in the approval request")
        p.add_argument("--actor", default="cli", help="who decides (recorded in the timeline)")
        p.add_argument("--no-enqueue", action="store_true", help="do not ask a worker to resume the run")
        p.set_defaults(handler=cmd_decide, decision=verb)

    p = sub.add_parser("status", help="the runbook runs of an incident and their steps")
    p.add_argument("incident", help="incident id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)
    return parser


def cmd_lint(args: argparse.Namespace, settings: Settings) -> int:
    """Lint runbook files; every problem is printed as file:line: where: why."""
    paths = args.paths or [settings.runbooks_dir]
    problems, count = lint_paths(paths)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {count} file(s)", file=sys.stderr)
        return EXIT_BAD
    print(f"{count} runbook file(s) OK")
    return EXIT_OK


def _read_alert(source: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """(label sets of the firing alerts, common labels) from a webhook body or a single alert."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: not JSON: {exc}") from exc
    if isinstance(data, dict) and "alerts" in data:
        webhook = AlertmanagerWebhook.model_validate(data)
        firing = [a for a in webhook.alerts if a.status.value == "firing"] or list(webhook.alerts)
        return [{**webhook.commonLabels, **a.labels} for a in firing], dict(webhook.commonLabels)
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        labels = {str(k): str(v) for k, v in data["labels"].items()}
        return [labels], labels
    raise ConfigError(f"{source}: neither an Alertmanager webhook body nor an alert with labels")


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    """Show which runbooks match the alert, their parameters and each step's fate."""
    label_sets, _common = _read_alert(args.alert)
    policy = load_policy(settings.severity_policy)
    severity = most_severe_classification(
        [classify(AlertView(labels=labels, annotations={}), None, policy) for labels in label_sets]
    ).severity
    runbooks = load_runbooks(settings.runbooks_dir)
    # The catalog only: a plan never queries the cluster (discovery runs when the run starts).
    resolver = TargetResolver(load_catalog(args.catalog or settings.catalog), None)
    plans = [
        _plan_one(resolver, s.runbook, s.labels, severity)
        for s in select(runbooks.values(), label_sets, severity)
    ]
    if args.json:
        print(json.dumps({"severity": severity.value, "plans": plans}, indent=2, default=str))
        return EXIT_OK
    if not plans:
        print(f"severity {severity.value}: no runbook matches")
        return EXIT_OK
    for item in plans:
        if "error" in item:
            print(f"runbook {item['runbook']}: cannot start: {item['error']}")
            continue
        print(f"runbook {item['runbook']} (severity {severity.value})")
        if item["target"]["source"] not in ("", "alert labels"):
            print(f"  target: {item['target']['target']} via {item['target']['source']}")
        print(f"  parameters: {json.dumps(item['parameters'], sort_keys=True)}")
        if item["escalation"]:
            print(f"  escalates: {item['escalation']}")
        for number, s in enumerate(item["steps"], 1):
            kind = "ACTS" if s["would_act"] else ("acts?" if s["mutating"] else "read")
            fate = {"yes": "runs", "no": "skipped", "depends": f"if {s['condition']}"}[s["runs"]]
            gate = " [approval]" if s["approval"] else ""
            print(f"  {number:>2}. {s['id']:<18} {s['type']:<20} {kind:<5} {fate}{gate}")
    return EXIT_OK


def _plan_one(
    resolver: TargetResolver, runbook: Runbook, labels: Mapping[str, str], severity: Severity
) -> dict[str, Any]:
    """One runbook's plan with its target from the labels or the catalog, or why it cannot start."""
    resolution = resolver.resolve(labels)
    tried = [t for t in resolution.tried if not t.startswith("discovery is off")]
    try:
        params = resolve_parameters(runbook, resolution.labels)
    except MissingParameter as exc:
        why = "; ".join([str(exc), *tried])
        return {
            "runbook": runbook.name,
            "error": f"{why}; at run time discovery may still find the target, else the run waits for "
            f"a person (/incident runbook INC-… {runbook.name} key=value …)",
            "target": {"target": None, "source": resolution.source, "tried": tried},
        }
    item = plan(runbook, resolution.labels, severity, params).as_dict()
    item["target"] = {"target": resolution.target, "source": resolution.source, "tried": tried}
    return item


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run a runbook inline against the configured cluster and print its story."""
    from bot.runbook.engine import RunStatus
    from bot.wiring import build_engine

    overrides: dict[str, Any] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        overrides[key] = value
    engine = build_engine(settings)
    run, _ = engine.create_run(
        args.incident.upper(), args.name, dry_run=args.dry_run, trigger="cli", overrides=overrides or None
    )
    print(f"{run.id}: runbook {run.runbook}{' (dry run)' if run.dry_run else ''}")
    run = engine.run_inline(run.id)
    for entry in engine.store.timeline(run.incident_id):
        if entry.data.get("run_id") == run.id:
            print(f"  {entry.kind:<18} {entry.message}")
    print(f"{run.id}: {run.status.value} ({run.reason})")
    return EXIT_OK if run.status is RunStatus.SUCCEEDED else EXIT_FAILED


def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    """Approve or deny a paused step; the run resumes in a worker (or the `runbook run` process)."""
    from bot.wiring import build_engine

    engine = build_engine(settings)
    decision = engine.decide(args.incident.upper(), args.step, args.decision, args.actor)
    print(decision.message)
    if not decision.accepted:
        return EXIT_FAILED
    if not args.no_enqueue and decision.run_id is not None and decision.index is not None:
        from bot import tasknames
        from bot.wiring import CeleryTaskSender

        CeleryTaskSender(settings).send(tasknames.RUNBOOK_STEP, args=(decision.run_id, decision.index))
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the incident's runs and their steps."""
    from bot.wiring import build_engine

    engine = build_engine(settings)
    runs = engine.runs_of(args.incident.upper())
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
        return EXIT_OK
    if not runs:
        print("no runbook runs")
    for run in runs:
        print(
            f"{run.id}  {run.runbook}  {run.status.value}{' (dry run)' if run.dry_run else ''}  {run.reason}"
        )
        for step_id, out in run.outputs.items():
            print(f"    {step_id:<18} {out.get('status', ''):<8} {out.get('summary', '')}")
    return EXIT_OK
