"""`incident-bot coverage FILE…`: which of your alert rules the bot understands, and how.

Usage::

    incident-bot coverage FILE_OR_DIR... [--json] [--strict] [--policy FILE] [--runbooks DIR]
                                         [--catalog FILE]

Each FILE is a Prometheus rule file, a PrometheusRule manifest, a multi-document YAML or a List of
them; a directory stands for its ``*.yaml`` / ``*.yml`` files. For every alerting rule it prints the
status (covered / notify only / NOT COVERED), the severity and the policy rule behind it (from the
rule's static labels: no live signals), the runbooks that would start, how the target would be
resolved (the service catalog entry the rule's static labels match, else labels / discovery / what a
catalog entry would have to match on), and renamed or removed metric names with their replacement;
then a summary line.

Bad files: each unreadable or invalid file gets one line on stderr (``error: FILE: why``); the good
files are still reported, and the exit status is 2. Exit status: 0 all good; 1 with ``--strict`` when an
alert is NOT COVERED or relies on a renamed/removed metric; 2 a bad file, policy, catalog or runbooks
directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import bot.steps  # noqa: F401  (registers the step types the runbooks are checked against)
from bot.catalog import Catalog, load_catalog
from bot.coverage import AlertCoverage, Summary, evaluate, parse_rules
from bot.errors import ConfigError
from bot.plan.schema import Runbook, load_runbooks
from bot.settings import Settings
from bot.severity import SeverityPolicy, load_policy

EXIT_OK = 0
EXIT_STRICT = 1
EXIT_BAD_INPUT = 2

EPILOG = """\
status:
  covered       a severity rule applies and a runbook would start
  notify only   the policy marks the alert notify_only: announced, no runbook is started
  NOT COVERED   no severity rule (P3 by default) or a rule but no runbook and no notify_only

--strict exits 1 when any alert is NOT COVERED or relies on a renamed/removed metric (a metric kept
only as a fallback beside its replacement, `new or old`, is reported but not counted).
Exit 2: a file, the policy, the service catalog or the runbooks directory cannot be read or is
invalid (the other files are still reported).
"""


def add_coverage_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``coverage``; its handler is ``args.handler(args, settings) -> int``."""
    parser = subparsers.add_parser(
        "coverage",
        help="which of your Prometheus alert rules the bot understands (onboarding report)",
        description="Read Prometheus rule files / PrometheusRule manifests and say, per alert, what the "
        "bot would do: severity and rule, runbooks, target resolution, outdated metric names.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", type=Path, help="rule files or directories")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if anything is NOT COVERED or uses a renamed metric"
    )
    parser.add_argument(
        "--policy", metavar="FILE", type=Path, help="severity policy YAML (default: SEVERITY_POLICY)"
    )
    parser.add_argument(
        "--runbooks", metavar="DIR", type=Path, help="runbooks directory (default: RUNBOOKS_DIR)"
    )
    parser.add_argument(
        "--catalog",
        metavar="FILE",
        type=Path,
        help="service catalog YAML the targets are looked up in (default: CATALOG, the shipped "
        "bot/policy/catalog.yaml)",
    )
    parser.set_defaults(handler=run_coverage)
    return parser


def _expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            out.append(path)
    return out


def _read(path: Path) -> list[Any]:
    """The alert rules of one file; ValueError with a one-line reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc.reason}") from exc
    return parse_rules(text)


def evaluate_files(
    paths: list[Path], policy: SeverityPolicy, runbooks: list[Runbook], catalog: Catalog | None = None
) -> tuple[dict[str, list[AlertCoverage]], list[str]]:
    """Coverage of each readable file (by path, in order) and one error line per bad file."""
    report: dict[str, list[AlertCoverage]] = {}
    errors: list[str] = []
    files = _expand(paths)
    for path in files:
        try:
            rules = _read(path)
        except ValueError as exc:
            errors.append(f"error: {path}: {exc}")
            continue
        lookup = catalog.describe if catalog is not None and catalog.services else None
        report[str(path)] = [evaluate(rule, policy, runbooks, lookup) for rule in rules]
    if not files:
        errors.append(f"error: no .yaml/.yml files in {', '.join(map(str, paths))}")
    return report, errors


def run_coverage(
    args: argparse.Namespace,
    settings: Settings,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Handle ``incident-bot coverage``; returns the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        policy = load_policy(args.policy or settings.severity_policy)
        runbooks = list(load_runbooks(args.runbooks or settings.runbooks_dir).values())
        catalog = load_catalog(args.catalog or settings.catalog)
    except ConfigError as exc:
        print(f"error: {str(exc).splitlines()[0]}" + _more(str(exc)), file=err)
        return EXIT_BAD_INPUT
    report, errors = evaluate_files(list(args.files), policy, runbooks, catalog)
    for line in errors:
        print(line, file=err)
    rows = [row for items in report.values() for row in items]
    summary = Summary.of(rows)
    if args.json:
        print(json.dumps(_as_json(report, summary, errors), indent=2), file=out)
    else:
        _print_text(out, report, summary)
    if errors:
        return EXIT_BAD_INPUT
    if args.strict and (summary.not_covered or summary.outdated):
        return EXIT_STRICT
    return EXIT_OK


def _more(text: str) -> str:
    lines = text.splitlines()
    return f" ({'; '.join(line.strip() for line in lines[1:])})" if len(lines) > 1 else ""


def _print_text(out: TextIO, report: dict[str, list[AlertCoverage]], summary: Summary) -> None:
    for path, rows in report.items():
        print(f"{path}: {len(rows)} alert(s)", file=out)
        for row in rows:
            rule = row.classification.rule or "(default: no rule matched)"
            print(
                f"  {row.rule.alert}: {row.status}, {row.classification.severity.value} by {rule}", file=out
            )
            print(f"    {row.why}", file=out)
            print(f"    target: {row.target}", file=out)
            for variant in row.variants:
                print(f"    at run time: {variant}", file=out)
            for rename in row.renames:
                kind = "note" if rename.fallback else "OUTDATED metric"
                print(f"    {kind}: {rename.describe()}", file=out)
    print(f"summary: {summary.line()}", file=out)


def _as_json(report: dict[str, list[AlertCoverage]], summary: Summary, errors: list[str]) -> dict[str, Any]:
    return {
        "files": [{"path": path, "alerts": [row.to_dict() for row in rows]} for path, rows in report.items()],
        "summary": {
            "alerts": summary.alerts,
            "covered": summary.covered,
            "notify_only": summary.notify_only,
            "not_covered": summary.not_covered,
            "outdated": summary.outdated,
        },
        "errors": [line.removeprefix("error: ") for line in errors],
    }
