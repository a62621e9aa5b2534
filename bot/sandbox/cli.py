"""`incident-bot sandbox up`: run the emulated llm-d cluster in the foreground."""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from pathlib import Path
from typing import TextIO


def add_sandbox_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `sandbox up`."""
    parser = subparsers.add_parser(
        "sandbox", help="run the emulated llm-d cluster (Kubernetes API + vLLM servers)"
    )
    sub = parser.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    up = sub.add_parser(
        "up",
        help="start the sandbox and print its kubeconfig and vLLM endpoints",
        description="Start a Kubernetes API emulator (seeded with an llm-d namespace: vllm-decode and "
        "vllm-prefill Deployments on GPU nodes) and emulated vLLM servers, print how to reach them, and "
        "serve until Ctrl-C (or --duration). Everything listens on 127.0.0.1 only.",
    )
    up.add_argument("--namespace", default="llm-d", help="namespace to seed (default llm-d)")
    up.add_argument("--decode", type=int, default=2, help="decode replicas (default 2)")
    up.add_argument("--prefill", type=int, default=1, help="prefill replicas (default 1)")
    up.add_argument("--servers", type=int, default=2, help="emulated vLLM servers (default 2)")
    up.add_argument("--offered-rps", type=float, default=0.0, help="synthetic load on the decode pool")
    up.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the API over HTTPS with a throwaway CA written into the kubeconfig (default; kubectl "
        "sends its bearer token only over TLS); --no-tls serves plain HTTP for clients that want it",
    )
    up.add_argument(
        "--scenario", help="play a scenario (a shipped name such as decode-pool-saturated, or a file)"
    )
    up.add_argument(
        "--workdir", type=Path, help="where to write kubeconfig and sandbox.env (default: a temp dir)"
    )
    up.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    up.set_defaults(handler=lambda args, _settings: run_sandbox_up(args))
    return parser


def run_sandbox_up(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Start the sandbox, print its coordinates, serve until interrupted; returns the exit code."""
    from bot.sandbox.sandbox import Sandbox, SandboxConfig
    from bot.sandbox.scenario import ScenarioPlayer, load_scenario

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(args.scenario) if args.scenario else None
    config = SandboxConfig(
        namespace=args.namespace,
        decode_replicas=args.decode,
        prefill_replicas=args.prefill,
        vllm_servers=args.servers,
        tls=args.tls,
        offered_rps=args.offered_rps,
        decode_kind=scenario.decode_kind if scenario else "Deployment",
    )
    stop = threading.Event()
    with Sandbox(config, workdir=args.workdir) as sandbox:
        env = sandbox.environment()
        env_file = sandbox.workdir / "sandbox.env"
        env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
        print(f"sandbox: Kubernetes API at {sandbox.kube.url} (namespace {config.namespace})", file=out)
        print(f"sandbox: kubeconfig {sandbox.kubeconfig}", file=out)
        print(f"sandbox: try  KUBECONFIG={sandbox.kubeconfig} kubectl get deploy -A", file=out)
        for url in sandbox.vllm_endpoints:
            print(f"sandbox: vLLM server {url} (model {config.model})", file=out)
        print(f"sandbox: environment for the bot in {env_file} (source it)", file=out)
        for key, value in env.items():
            print(f"{key}={value}", file=out)
        out.flush()
        if scenario is not None:
            player = ScenarioPlayer(scenario, list(sandbox.vllm or []), sandbox=sandbox)
            threading.Thread(target=player.play, kwargs={"stop": stop}, daemon=True).start()
            print(f"sandbox: playing scenario {scenario.name}: {scenario.description}", file=out)
        try:
            stop.wait(args.duration)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
    print("sandbox: stopped", file=out)
    return 0
