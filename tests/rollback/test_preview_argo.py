"""The rollback preview of an Argo Rollout against the emulator and its Rollout controller (real client):
abort while a canary is in progress, undo otherwise, the failed analysis, refusals; dry runs change
nothing."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli_rollback import cmd_rollback
from bot.integrations.argo import ArgoRollouts
from bot.integrations.kube import KubeClient
from bot.rollback.preview import Refused, preview_lines
from bot.rollback.preview_argo import build_rollout_preview, preview_workload
from bot.sandbox.cluster import Cluster
from bot.sandbox.kube_emulator import KubeEmulator
from bot.settings import Settings
from tests.integrations.test_argo import BROKEN, CANARY, NAME, NS, STABLE, new_cluster, set_image

NOW = datetime(2026, 12, 4, 19, 0, tzinfo=UTC)


@pytest.fixture
def cluster() -> Cluster:
    return new_cluster()


@pytest.fixture
def argo(cluster: Cluster, tmp_path: Path) -> Iterator[ArgoRollouts]:
    with KubeEmulator(cluster, token="preview-token") as emu:
        kube = KubeClient.from_kubeconfig(str(emu.write_kubeconfig(tmp_path / "kc", namespace=NS)))
        yield ArgoRollouts(kube)
        kube.close()


def test_bad_canary_previews_an_abort_to_stable(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, BROKEN)
    argo.promote(NS, NAME)  # into the analysis, which fails and aborts ...
    argo.retry(NS, NAME)  # ... retried: the canary is at 20 % again, its failed analysis on record
    before = cluster.get("Rollout", NS, NAME)
    p = build_rollout_preview(argo, NS, NAME, None, now=NOW)
    assert p.kind == "Rollout" and p.argo is not None and p.argo["action"] == "abort"
    assert (p.current.revision, p.target.revision, p.target.images) == (2, 1, (STABLE,))
    assert p.argo["canary_images"] == [BROKEN] and p.argo["stable_images"] == [STABLE]
    assert p.argo["canary_weight"] == 20 and p.argo["step"] == "1/5"
    state = argo.status(NS, NAME)
    assert p.argo["failed_analysis"] == f"{NAME}-{state.canary_hash}-2-2"
    assert p.argo["failed_metrics"] == ["success-rate"]
    assert p.dry_run_ok and "abort" in p.dry_run_message
    assert any(BROKEN in c.text and STABLE in c.text for c in p.changes if c.kind == "image"), p.changes
    text = "\n".join(preview_lines(p.to_dict()))
    assert text.startswith(f"Abort of Rollout {NS}/{NAME}")
    assert "the canary's 20% goes back to the stable ReplicaSet" in text
    assert f"canary:  {BROKEN} at 20% (Paused, step 1/5)" in text
    assert 'failed: Metric "success-rate" assessed Failed' in text
    after = cluster.get("Rollout", NS, NAME)
    assert after["status"] == before["status"], "the dry run aborted nothing"


def test_promoted_rollout_previews_an_undo(argo: ArgoRollouts, cluster: Cluster) -> None:
    set_image(cluster, CANARY)
    argo.promote(NS, NAME, full=True)
    p = build_rollout_preview(argo, NS, NAME, None, now=NOW)
    assert p.argo is not None and p.argo["action"] == "undo"
    assert (p.current.revision, p.target.revision, p.target.images) == (2, 1, (STABLE,))
    assert p.dry_run_ok and "undo to revision 1" in p.dry_run_message
    assert cluster.get("Rollout", NS, NAME)["spec"]["template"]["spec"]["containers"][0]["image"] == CANARY
    assert preview_lines(p.to_dict())[0] == f"Rollback of Rollout {NS}/{NAME}"


def test_aborted_canary_previews_an_undo_that_makes_stable_permanent(
    argo: ArgoRollouts, cluster: Cluster
) -> None:
    set_image(cluster, BROKEN)
    argo.abort(NS, NAME)
    p = build_rollout_preview(argo, NS, NAME, None, now=NOW)
    assert p.argo is not None and (p.argo["action"], p.argo["aborted"]) == ("undo", True)
    assert p.target.images == (STABLE,)


@pytest.mark.parametrize(
    ("setup", "to_revision", "code"),
    [
        ("none", None, "no_previous_revision"),
        ("paused", None, "paused"),
        ("promoted", 2, "target_is_current"),
        ("promoted", 7, "revision_not_found"),
        ("missing", None, "not_found"),
    ],
)
def test_refusals(
    argo: ArgoRollouts, cluster: Cluster, setup: str, to_revision: int | None, code: str
) -> None:
    name = NAME
    if setup == "paused":
        set_image(cluster, CANARY)
        argo.pause(NS, NAME)
    elif setup == "promoted":
        set_image(cluster, CANARY)
        argo.promote(NS, NAME, full=True)
    elif setup == "missing":
        name = "no-such-rollout"
    with pytest.raises(Refused) as refused:
        build_rollout_preview(argo, NS, name, to_revision, now=NOW)
    assert refused.value.code == code, str(refused.value)


def test_cli_dry_run_of_a_rollout_prints_the_preview_the_flow_would_post(
    argo: ArgoRollouts, cluster: Cluster, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """`incident-bot rollback --kind Rollout --dry-run` and the Slack flow share preview_workload: abort vs
    undo, canary and stable images, not the generic template diff of other kinds."""
    set_image(cluster, BROKEN)
    argo.promote(NS, NAME)
    argo.retry(NS, NAME)
    before = cluster.get("Rollout", NS, NAME)
    cli_args = argparse.Namespace(
        target=f"{NS}/{NAME}", to_revision=None, incident=None, dry_run=True, json=False, kind="Rollout"
    )
    assert cmd_rollback(cli_args, settings, kube=argo.kube) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Abort of Rollout {NS}/{NAME}")
    assert f"canary:  {BROKEN} at 20% (Paused, step 1/5)" in out
    assert "(dry run: nothing was changed)" in out
    assert cluster.get("Rollout", NS, NAME)["status"] == before["status"]
    flow_preview = preview_workload(
        argo.kube, NS, NAME, None, now=NOW, kind=None
    )  # no Deployment: the Rollout
    assert flow_preview.argo is not None and flow_preview.argo["action"] == "abort"
