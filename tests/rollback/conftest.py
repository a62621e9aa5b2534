"""Fixtures of the rollback tests: a TLS sandbox (real kubectl can talk to it), a bad rollout, flows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.integrations.kube import KubeClient
from bot.rollback.flow import RollbackFlow
from bot.sandbox.pagerduty_emulator import PagerDutyEmulator
from bot.sandbox.sandbox import Sandbox, SandboxConfig
from bot.settings import Settings
from bot.wiring import build_flow
from tests.support.fixtures import wait_until
from tests.support.runbooks import FastClock
from tests.support.slack import RecordingSender

NS = "llm-d"
GOOD = "vllm/vllm-openai:v0.8.5"
BAD = "vllm/vllm-openai:v0.9.9-bad"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
APPROVER_2 = "UAPPR0002"
PLAIN_SECRET = "plain-s3cret-value-123"
FLAG_SECRET = "sk-live-flag-secret-456"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """Two decode replicas behind two vLLM servers, TLS so the real kubectl can be pointed at it."""
    config = SandboxConfig(decode_replicas=2, vllm_servers=2, tls=True)
    with Sandbox(config, workdir=tmp_path) as sb:
        yield sb


@pytest.fixture
def kube(sandbox: Sandbox) -> Iterator[KubeClient]:
    """The bot's Kubernetes adapter on the sandbox."""
    client = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    yield client
    client.close()


def bad_patch(image: str = BAD) -> dict[str, Any]:
    """A new revision: new image, another model, a GPU more, a secret-backed and a plain env var."""
    return {
        "spec": {
            "strategy": {"type": "Recreate", "rollingUpdate": None},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": image,
                            "args": [
                                "--model",
                                "meta-llama/Llama-3.3-70B-Instruct",
                                "--port",
                                "8000",
                                "--max-model-len",
                                "4096",
                                "--api-key",
                                FLAG_SECRET,
                            ],
                            "env": [
                                {
                                    "name": "HF_TOKEN",
                                    "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
                                },
                                {"name": "EXTRA_KEY", "value": PLAIN_SECRET},
                            ],
                            "resources": {"limits": {"nvidia.com/gpu": "2"}},
                        }
                    ]
                }
            },
        }
    }


def roll_out(sandbox: Sandbox, name: str = "vllm-decode", *, crash: bool = True) -> None:
    """Roll `name` to the bad revision (Recreate: every pod replaced; crash-looping when crash=True)."""
    if crash:
        sandbox.cluster.script_pods("crashloop", image=BAD)
    sandbox.cluster.patch_deployment(
        NS,
        name,
        "application/merge-patch+json",
        {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}},
    )
    sandbox.cluster.patch_deployment(NS, name, "application/strategic-merge-patch+json", bad_patch())
    kube = KubeClient.from_kubeconfig(str(sandbox.kubeconfig))
    wait_until(lambda: kube.get_deployment(NS, name).images == (BAD,))
    kube.close()


@pytest.fixture
def pd() -> Iterator[PagerDutyEmulator]:
    """A PagerDuty emulator (HTTPS, loopback)."""
    with PagerDutyEmulator() as emu:
        yield emu


@pytest.fixture
def rb_settings(slack_settings: Settings, sandbox: Sandbox) -> Settings:
    """Slack on the emulator, the sandbox's vLLM servers, short waits, two approvers."""
    return slack_settings.model_copy(
        update={
            "vllm_endpoints": sandbox.vllm_endpoints,
            "prometheus_url": None,
            "slack_approvers": f"{slack_settings.slack_approvers},{APPROVER_2}",
            "rollback_rollout_timeout_seconds": 20,
            "rollback_verify_timeout_seconds": 10,
        }
    )


FlowFactory = Callable[..., RollbackFlow]


@pytest.fixture
def make_flow(rb_settings: Settings, kube: KubeClient, redis_client: redis.Redis) -> Iterator[FlowFactory]:
    """Flows on the sandbox whose tasks are only recorded (tests call execute themselves)."""
    made: list[RollbackFlow] = []

    def factory(settings: Settings | None = None, clock: FastClock | None = None, **kw: Any) -> RollbackFlow:
        s = settings or rb_settings
        flow = build_flow(
            s,
            client=redis.Redis.from_url(s.redis_url),
            sender=kw.pop("sender", None) or RecordingSender(),
            kube=kw.pop("kube", None) or kube,
        )
        if clock is not None:
            flow.clock, flow.sleep = clock.now, clock.sleep
        made.append(flow)
        return flow

    yield factory
