"""The CLI's dry run against the sandbox, and the pure template diff."""

from __future__ import annotations

import argparse

import pytest

from bot.cli_rollback import cmd_rollback
from bot.integrations.kube import KubeClient
from bot.rollback.diff import REDACTED, diff_templates, parse_flags, vllm_model
from bot.sandbox.sandbox import Sandbox
from bot.settings import Settings
from tests.rollback.conftest import BAD, FLAG_SECRET, GOOD, NS, PLAIN_SECRET, roll_out


def args(target: str, **kw: object) -> argparse.Namespace:
    return argparse.Namespace(
        target=target,
        to_revision=kw.get("to_revision"),
        incident=None,
        dry_run=kw.get("dry_run", True),
        json=False,
        kind=kw.get("kind", "Deployment"),
    )


@pytest.mark.integration
def test_cli_dry_run_prints_the_preview_and_changes_nothing(
    sandbox: Sandbox, kube: KubeClient, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    roll_out(sandbox)
    before = sandbox.cluster.get("Deployment", NS, "vllm-decode")
    sandbox.kube.requests.clear()
    assert cmd_rollback(args(f"{NS}/vllm-decode"), settings, kube=kube) == 0
    out = capsys.readouterr().out
    assert "current: revision 2" in out and "target:  revision 1" in out
    assert f"image {BAD} -> {GOOD}" in out and "server-side dry run accepted" in out
    assert PLAIN_SECRET not in out and FLAG_SECRET not in out
    assert sandbox.cluster.get("Deployment", NS, "vllm-decode") == before
    patches = [r for r in sandbox.kube.requests if r.method == "PATCH"]
    assert len(patches) == 1 and patches[0].query.get("dryRun") == "All"


@pytest.mark.integration
def test_cli_dry_run_refusal_exits_1(
    sandbox: Sandbox, kube: KubeClient, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_rollback(args(f"{NS}/vllm-prefill"), settings, kube=kube) == 1
    assert "refused: " in capsys.readouterr().out
    assert cmd_rollback(args("not a target"), settings, kube=kube) == 2
    assert cmd_rollback(args(f"{NS}/vllm-decode", kind="LeaderWorkerSet"), settings, kube=kube) == 1
    assert "refused: leaderworkerset llm-d/vllm-decode not found" in capsys.readouterr().out


def container(**kw: object) -> dict[str, object]:
    return {"name": "vllm", "image": GOOD, **kw}


def template(*containers: dict[str, object], **spec: object) -> dict[str, object]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": list(containers), **spec}}


def test_diff_env_names_and_sources_but_no_values() -> None:
    current = template(
        container(
            env=[
                {"name": "A", "value": "old-plain"},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "C", "value": "same"},
            ]
        )
    )
    target = template(
        container(
            env=[
                {"name": "A", "value": "new-plain"},
                {"name": "B", "value": "inline-now"},
                {"name": "C", "value": "same"},
                {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "x"}}},
            ]
        )
    )
    texts = [str(c) for c in diff_templates(current, target)]
    assert texts == [
        "[vllm] env A value changed (from value; not shown)",
        "[vllm] env B source secret s/k -> value",
        "[vllm] env D added (from configMap cm/x)",
    ]
    assert not any(v in " ".join(texts) for v in ("old-plain", "new-plain", "inline-now"))


def test_diff_model_flags_resources_and_redacted_flag_values() -> None:
    current = template(
        container(
            image=BAD,
            args=["--model", "big", "--api-key", "k1", "--enforce-eager", "--tensor-parallel-size", "2"],
            resources={"limits": {"nvidia.com/gpu": "2"}},
        ),
        nodeSelector={"gpu": "h100"},
    )
    target = template(
        container(args=["--model", "small", "--api-key", "k2", "--tensor-parallel-size", "1"]),
        nodeSelector={"gpu": "a100"},
    )
    texts = [str(c) for c in diff_templates(current, target)]
    assert texts == [
        f"[vllm] image {BAD} -> {GOOD}",
        "[vllm] model big -> small",
        f"[vllm] args flag --api-key value changed ({REDACTED})",
        "[vllm] args flag --enforce-eager removed",
        "[vllm] args flag --tensor-parallel-size: 2 -> 1",
        "[vllm] limits nvidia.com/gpu: 2 -> unset",
        "pod spec also differs: nodeSelector",
    ]
    assert "k1" not in " ".join(texts) and "k2" not in " ".join(texts)


def test_vllm_model_from_serve_and_flags() -> None:
    assert vllm_model({"command": ["vllm", "serve", "m/x"], "args": ["--port", "8000"]}) == "m/x"
    assert vllm_model({"args": ["--model=m/y"]}) == "m/y"
    assert parse_flags(["--a", "-1", "--b", "--c=3", "pos"]) == (
        ["pos"],
        {"--a": "-1", "--b": "", "--c": "3"},
    )
