"""Scripted incidents: a YAML file of timed steps applied to emulated vLLM pods.

Format (all times in seconds from the scenario start)::

    name: decode-pool-saturated
    description: Offered load rises above what the decode pool can serve.
    pods: 2                      # emulated vLLM servers the scenario expects
    model: meta-llama/Llama-3.1-8B-Instruct
    duration_s: 60               # optional; default: last step + 10 s
    steps:
      - at: 0
        set: {offered_rps: 20}   # EmulatorControls fields, applied to `pods` (default all)
      - at: 10
        pods: [0]
        set: {engine_dead: true}
        note: engine of pod 0 dies
      - at: 20
        pods: [1]
        action: stop             # stop | start | restart (connection refused while stopped)
      - at: 25
        traffic: {rps: 5, duration_s: 10}   # real completions from the bounded generator
      - at: 30
        replicas: 4              # ready decode replicas, only when no Kubernetes emulator supplies it
      - at: 35
        canary: {image: vllm/vllm-openai:v0.9.9-canary, broken: true}
                                 # roll an image into the decode Rollout (needs `decode_kind: Rollout`
                                 # and a Sandbox given to the player)

Controls: offered_rps, engine_dead, slow_s, legacy_metric_names, kv_cache_usage_min,
preemptions_per_s, prefix_cache_hit_ratio, extra_ttft_s, error_ratio (see ``bot.sandbox.vllm_emulator``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.errors import ConfigError
from bot.sandbox.traffic import BackgroundTraffic, TrafficPlan
from bot.sandbox.vllm_emulator import CONTROL_NAMES, EmulatorControls, VLLMEmulator

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"


class TrafficSpec(BaseModel):
    """Real traffic a step starts (bounded, loopback only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rps: float = Field(gt=0, le=1000)
    duration_s: float = Field(gt=0, le=600)
    max_requests: int = Field(1000, ge=1, le=10_000)
    concurrency: int = Field(32, ge=1, le=256)
    max_tokens: int = Field(8, ge=1, le=256)
    stream: bool = False
    chat: bool = False

    def plan(self, model: str | None) -> TrafficPlan:
        """As a TrafficPlan."""
        return TrafficPlan(model=model, **self.model_dump())


class CanarySpec(BaseModel):
    """A new image for the decode Rollout; ``broken`` makes its analysis fail and its traffic share error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1, max_length=512)
    broken: bool = True


class Step(BaseModel):
    """One timed change to some or all pods."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: float = Field(ge=0)
    pods: Literal["all"] | list[int] = "all"
    set: dict[str, Any] = Field(default_factory=dict)
    action: Literal["stop", "start", "restart"] | None = None
    traffic: TrafficSpec | None = None
    replicas: int | None = Field(None, ge=0, le=1000)
    canary: CanarySpec | None = None
    note: str = ""

    @field_validator("set")
    @classmethod
    def _known_controls(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - CONTROL_NAMES
        if unknown:
            raise ValueError(f"unknown control(s) {sorted(unknown)}; known: {sorted(CONTROL_NAMES)}")
        try:
            EmulatorControls(**value).validate()
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _does_something(self) -> Step:
        if not (self.set or self.action or self.traffic or self.replicas is not None or self.canary):
            raise ValueError("a step needs at least one of set, action, traffic, replicas, canary")
        return self


class Scenario(BaseModel):
    """A named incident script: pods, model and time-ordered steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    pods: int = Field(2, ge=1, le=64)
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    duration_s: float | None = Field(None, gt=0, le=3600)
    decode_kind: Literal["Deployment", "Rollout"] = "Deployment"
    """The sandbox's decode workload kind the scenario needs (``canary`` steps need a Rollout)."""
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        for index, step in enumerate(self.steps):
            if step.pods != "all" and any(not 0 <= p < self.pods for p in step.pods):
                raise ValueError(f"steps[{index}]: pod index outside 0..{self.pods - 1}")
        ats = [s.at for s in self.steps]
        if ats != sorted(ats):
            raise ValueError("steps must be in time order (non-decreasing `at`)")
        if self.duration_s is not None and ats[-1] > self.duration_s:
            raise ValueError("a step comes after duration_s")
        if self.decode_kind != "Rollout" and any(s.canary for s in self.steps):
            raise ValueError("canary steps need decode_kind: Rollout")
        return self

    @property
    def end_s(self) -> float:
        """When the scenario is over."""
        return self.duration_s if self.duration_s is not None else self.steps[-1].at + 10.0


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse scenario YAML; ConfigError naming the source and the field on any problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a scenario is a mapping with name and steps")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (a bare name means a shipped scenario)."""
    candidate = Path(path)
    if not candidate.exists() and candidate.parent == Path("."):
        candidate = SCENARIOS_DIR / (candidate.name if candidate.suffix else f"{candidate.name}.yaml")
    try:
        text = candidate.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc}") from exc
    return parse_scenario(text, str(candidate))


def shipped_scenarios() -> list[Path]:
    """The scenario files that ship with the package."""
    return sorted(SCENARIOS_DIR.glob("*.yaml"))


class ScenarioPlayer:
    """Applies a scenario's steps to emulators, either step by step (tests) or in real time (demos)."""

    def __init__(
        self,
        scenario: Scenario,
        emulators: Sequence[VLLMEmulator] | Any,
        *,
        api_key: str | None = None,
        sandbox: Any | None = None,
    ) -> None:
        pods = list(emulators)
        if len(pods) < scenario.pods:
            raise ConfigError(f"scenario {scenario.name!r} needs {scenario.pods} pods, got {len(pods)}")
        self.scenario = scenario
        self.pods: list[VLLMEmulator] = pods
        self.api_key = api_key
        self.sandbox = sandbox
        if any(s.canary for s in scenario.steps) and sandbox is None:
            raise ConfigError(f"scenario {scenario.name!r} rolls a canary: it needs the sandbox")
        self.applied: list[Step] = []
        self.traffic: list[BackgroundTraffic] = []
        self._next = 0
        self._replicas: int | None = None

    def _targets(self, step: Step) -> list[VLLMEmulator]:
        if step.pods == "all":
            return self.pods[: self.scenario.pods]
        return [self.pods[i] for i in step.pods]

    def apply(self, step: Step) -> None:
        """Apply one step now."""
        targets = self._targets(step)
        if step.replicas is not None:
            self._replicas = step.replicas
            for pod in self.pods:
                pod.set_replicas(self._replica_count)
        for pod in targets:
            if step.set:
                pod.set(**step.set)
            if step.action == "stop":
                pod.stop()
            elif step.action == "start":
                pod.start()
            elif step.action == "restart":
                pod.restart()
        if step.canary is not None and self.sandbox is not None:
            self.sandbox.start_canary(step.canary.image, broken=step.canary.broken)
        if step.traffic is not None:
            urls = [pod.url for pod in targets if pod.running]
            if urls:
                plan = step.traffic.plan(self.scenario.model)
                self.traffic.append(BackgroundTraffic(urls, plan, api_key=self.api_key).start())
        self.applied.append(step)

    def _replica_count(self) -> int:
        return self._replicas if self._replicas is not None else len(self.pods)

    def advance_to(self, t: float) -> list[Step]:
        """Apply every step due at or before ``t`` seconds that has not been applied yet."""
        done = []
        steps = self.scenario.steps
        while self._next < len(steps) and steps[self._next].at <= t:
            self.apply(steps[self._next])
            done.append(steps[self._next])
            self._next += 1
        return done

    @property
    def finished(self) -> bool:
        """Whether every step has been applied."""
        return self._next >= len(self.scenario.steps)

    def play(
        self,
        *,
        speed: float = 1.0,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[Step]:
        """Apply the steps in real time (``speed`` > 1 compresses time) until the end or ``stop``."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        stop = stop or threading.Event()
        started = clock()
        while not stop.is_set():
            elapsed = (clock() - started) * speed
            self.advance_to(elapsed)
            if elapsed >= self.scenario.end_s:
                break
            upcoming = [s.at for s in self.scenario.steps[self._next :]] + [self.scenario.end_s]
            stop.wait(max(0.0, min(upcoming) - elapsed) / speed)
        return list(self.applied)

    def stop_traffic(self) -> None:
        """Stop every traffic generator this player started."""
        for generator in self.traffic:
            generator.stop()
