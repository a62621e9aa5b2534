"""`incident-bot`: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from bot import __version__, wiring
from bot.cli_classify import add_classify_parser, run_classify
from bot.cli_coverage import add_coverage_parser
from bot.cli_ops import add_ops_parsers, add_postmortem_parser
from bot.cli_rollback import add_rollback_parser
from bot.cli_runbook import add_runbook_parser
from bot.errors import ConfigError, IncidentBotError
from bot.logconfig import configure_logging
from bot.models import Incident
from bot.sandbox.cli import add_sandbox_parser
from bot.settings import Settings, get_settings
from bot.storage.incidents import IncidentNotFound, IncidentStore

Handler = Callable[[argparse.Namespace, Settings], int]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _store(settings: Settings) -> IncidentStore:
    return wiring.incident_store(settings, wiring.redis_client(settings, "cli"))


# --- serve / worker / beat / dev ----------------------------------------------------------------
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the web app under uvicorn."""
    import uvicorn

    from bot.runtime import settle_heap
    from bot.web.app import create_app

    app = create_app(settings)
    settle_heap()
    host, port = args.host or settings.host, args.port or settings.port
    print(
        f"incident-bot {__version__}: serving on http://{host}:{port} "
        f"(Redis {redact_url(settings.redis_url)})"
    )
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), access_log=False)
    return 0


def worker_app() -> Any:
    """The workers' Celery app, named by string as `celery -A workers.celery_app` does (bot never imports
    workers: the tasks depend on bot, not the other way round)."""
    from kombu.utils.imports import symbol_by_name

    return symbol_by_name(WORKER_APP)  # type: ignore[no-untyped-call]


#: Where the Celery app with every task registered lives.
WORKER_APP = "workers.celery_app:app"


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run a Celery worker."""
    app = worker_app()

    argv = ["worker", "-Q", args.queues, "--loglevel", settings.log_level, "--pool", args.pool]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    app.worker_main(argv)
    return 0


def cmd_beat(args: argparse.Namespace, settings: Settings) -> int:
    """Run Celery beat (the periodic scheduler)."""
    app = worker_app()

    app.start(["beat", "--loglevel", settings.log_level, "--schedule", args.schedule_file])
    return 0


#: `incident-bot dev`: threads per lane (bot.tasknames.LANES). The intake lane (milliseconds per task) is
#: embedded in the web process; the slower lanes are child processes, one each (3 processes in all).
DEV_LANE_THREADS = {"intake": 4, "notifications": 8, "runbooks": 4}
DEV_EMBEDDED_LANE = "intake"


def dev_workers() -> list[tuple[str, tuple[str, ...], int]]:
    """The workers `incident-bot dev` starts: (lane, queues, threads), one per lane, embedded one first."""
    from bot.tasknames import LANES

    order = sorted(LANES, key=lambda lane: lane != DEV_EMBEDDED_LANE)
    return [(lane, LANES[lane], DEV_LANE_THREADS[lane]) for lane in order]


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """Run the web app with one worker per lane: intake in this process, the others as children."""
    import uvicorn

    from bot.runtime import embedded_worker, settle_heap, worker_processes
    from bot.web.app import create_app

    app = worker_app()
    web = create_app(settings)
    settle_heap()
    host, port = args.host or settings.host, args.port or settings.port
    (lane, queues, threads), *children = dev_workers()
    with (
        worker_processes(children, loglevel=settings.log_level),
        embedded_worker(
            app, queues=queues, pool="threads", concurrency=threads, loglevel=settings.log_level, name=lane
        ),
    ):
        shown = "; ".join(f"{lane}: {','.join(q)} ({n} threads)" for lane, q, n in dev_workers())
        print(
            f"incident-bot {__version__} dev: web on http://{host}:{port}, workers per lane ({shown}), "
            f"Redis {redact_url(settings.redis_url)}. Ctrl-C stops all."
        )
        uvicorn.run(web, host=host, port=port, log_level=settings.log_level.lower(), access_log=False)
    return 0


# --- incidents ------------------------------------------------------------------------------------
def _incident_row(i: Incident) -> str:
    return (
        f"{i.id:<9} {i.status.value:<12} {i.severity.value:<3} {i.firing_count:>3}/{len(i.alerts):<3} "
        f"{i.created_at:%Y-%m-%d %H:%M:%S}  {i.title}"
    )


def cmd_incidents_list(args: argparse.Namespace, settings: Settings) -> int:
    """List incidents, newest first."""
    incidents = _store(settings).recent(limit=args.limit, open_only=args.open)
    if args.json:
        print(json.dumps([i.model_dump(mode="json") for i in incidents], indent=2))
        return 0
    if not incidents:
        print("no incidents" + (" open" if args.open else ""))
        return 0
    print(f"{'ID':<9} {'STATUS':<12} {'SEV':<3} {'FIRING':<7} {'CREATED (UTC)':<19}  TITLE")
    for i in incidents:
        print(_incident_row(i))
    return 0


def cmd_incidents_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show one incident and its timeline."""
    store = _store(settings)
    incident = store.get(args.id.upper())
    timeline = store.timeline(incident.id)
    if args.json:
        out = incident.model_dump(mode="json") | {"timeline": [t.model_dump(mode="json") for t in timeline]}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{incident.id}  {incident.title}")
    print(f"  status:    {incident.status.value}")
    print(f"  severity:  {incident.severity.value} ({incident.severity_reason})")
    print(f"  group:     {incident.group_key}")
    print(f"  created:   {incident.created_at.isoformat()}")
    if incident.resolved_at:
        print(f"  resolved:  {incident.resolved_at.isoformat()}")
    if incident.previous_incident:
        print(f"  re-fire of {incident.previous_incident}")
    if incident.truncated_alerts:
        print(f"  alerts:    {len(incident.alerts)} known, {incident.truncated_alerts} more truncated")
    print("  alerts:")
    for a in incident.alerts.values():
        print(f"    - {a.name} [{a.status.value}] since {a.starts_at.isoformat()}")
    print("  timeline:")
    for t in timeline:
        print(f"    {t.at:%Y-%m-%d %H:%M:%S}  {t.kind:<15} {t.message}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Play the built-in scenario against an in-process bot."""
    from bot.demo import run_demo

    if settings.log_level == "INFO":
        configure_logging("WARNING", settings.secret_values())  # the demo narrates; keep logs to problems
    return run_demo(settings)


def cmd_version(args: argparse.Namespace, settings: Settings) -> int:
    """Print the version."""
    print(f"incident-bot {__version__}")
    return 0


# --- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `incident-bot`."""
    parser = argparse.ArgumentParser(
        prog="incident-bot",
        description="Incident automation for LLM inference on Kubernetes. Settings come from environment "
        "variables (REDIS_URL, ALERTMANAGER_TOKEN, …); see the README's configuration table.",
    )
    parser.add_argument("--version", action="version", version=f"incident-bot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the web app (webhooks, /healthz, /readyz, /metrics)")
    p.add_argument("--host", help="bind address (default: HOST setting, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: PORT setting, 8080)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument(
        "--queues",
        default="alerts,paging,runbooks,notifications",
        help="comma-separated queues (default: all; deploy runs one worker per lane, see README)",
    )
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"], help="pool kind")
    p.add_argument("--concurrency", type=int, help="worker processes/threads (default: CPU count)")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("beat", help="run the periodic scheduler (escalation and reminder timers)")
    p.add_argument("--schedule-file", default="celerybeat-schedule", help="beat state file")
    p.set_defaults(handler=cmd_beat)

    p = sub.add_parser("dev", help="run web and worker in one process, for local use")
    p.add_argument("--host", help="bind address (default: HOST setting)")
    p.add_argument("--port", type=int, help="port (default: PORT setting)")
    p.set_defaults(handler=cmd_dev)

    inc = sub.add_parser("incidents", help="list and inspect incidents")
    isub = inc.add_subparsers(dest="incidents_command", metavar="ACTION", required=True)
    p = isub.add_parser("list", help="list incidents, newest first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--open", action="store_true", help="only incidents not yet resolved")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.set_defaults(handler=cmd_incidents_list)
    p = isub.add_parser("show", help="one incident with its timeline")
    p.add_argument("id", help="incident id, e.g. INC-0042")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_incidents_show)
    add_postmortem_parser(isub)

    p = add_classify_parser(sub)
    p.set_defaults(handler=lambda args, _settings: run_classify(args))

    add_coverage_parser(sub)
    add_sandbox_parser(sub)
    add_ops_parsers(sub)
    add_runbook_parser(sub)
    add_rollback_parser(sub)

    p = sub.add_parser("demo", help="play the built-in scenario against an in-process bot and print it")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(handler=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `incident-bot` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.secret_values())
        code: int = args.handler(args, settings)
        return code
    except ConfigError as exc:
        print(f"incident-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    except IncidentNotFound as exc:
        print(f"incident-bot: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        url = redact_url(get_settings().redis_url)
        print(f"incident-bot: cannot reach Redis at {url} (REDIS_URL): {exc}", file=sys.stderr)
        return 1
    except IncidentBotError as exc:
        print(f"incident-bot: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        # A missing optional piece must not reach a person as a traceback: name what to install.
        print(f"incident-bot: {missing_module_hint(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def missing_module_hint(exc: ModuleNotFoundError) -> str:
    """One line naming the package that provides the module that failed to import."""
    module = (exc.name or str(exc)).split(".")[0]
    extra = {"vllm": "pip install 'llmd-incident-bot[vllm]'"}.get(module)
    install = extra or f"pip install {module}  (or reinstall the bot: pip install -e .)"
    return f"Python module '{module}' is not installed: {install}"


if __name__ == "__main__":
    sys.exit(main())
