"""`python -m bot.sandbox.vllm_cli`: emulated vLLM servers in the foreground, optionally playing a scenario.

Kept apart from ``bot.sandbox.vllm_emulator`` so that the emulator does not import the scenario player
(which imports the emulator): no import cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Sequence

from bot.sandbox.scenario import ScenarioPlayer, load_scenario
from bot.sandbox.vllm_emulator import EmulatorConfig, EmulatorFleet, ReplicaCount, VLLMEmulator


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: start N emulated vLLM servers, print their URLs, serve until interrupted or --duration."""
    parser = argparse.ArgumentParser(prog="python -m bot.sandbox.vllm_cli", description=main.__doc__)
    parser.add_argument("--servers", type=int, default=None, help="pods (default: the scenario's, or 2)")
    parser.add_argument("--model", default=None, help="served model (default: the scenario's)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--port", type=int, default=0, help="first port (then consecutive); 0 = ephemeral")
    parser.add_argument("--replicas", type=int, default=None, help="ready decode replicas (default: servers)")
    parser.add_argument("--offered-rps", type=float, default=0.0)
    parser.add_argument("--legacy-metric-names", action="store_true")
    parser.add_argument("--scenario", default=None, help="scenario YAML file or shipped name to play")
    parser.add_argument("--speed", type=float, default=1.0, help="scenario time compression")
    parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until ^C)")
    args = parser.parse_args(argv)

    scenario = load_scenario(args.scenario) if args.scenario else None
    servers = args.servers or (scenario.pods if scenario else 2)
    model = args.model or (scenario.model if scenario else EmulatorConfig.model)
    replicas = ReplicaCount(args.replicas if args.replicas is not None else servers)
    emulators = [
        VLLMEmulator(
            EmulatorConfig(model=model, api_key=args.api_key, port=args.port + i if args.port else 0),
            replicas=replicas,
            offered_rps=args.offered_rps,
            legacy_metric_names=args.legacy_metric_names,
        )
        for i in range(servers)
    ]
    fleet = EmulatorFleet(emulators).start()
    for url in fleet.urls:
        print(url, flush=True)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    timer = threading.Timer(args.duration, stop.set) if args.duration is not None else None
    player = ScenarioPlayer(scenario, fleet, api_key=args.api_key) if scenario else None
    try:
        if timer is not None:
            timer.start()
        if player is not None:
            player.play(speed=args.speed, stop=stop)
        stop.wait()
    finally:
        if timer is not None:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if player is not None:
            player.stop_traffic()
        with contextlib.suppress(Exception):
            fleet.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
