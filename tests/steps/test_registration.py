"""The step families register their step types when `bot.steps` is imported, and only then."""

from __future__ import annotations

import subprocess
import sys

import bot.steps
from bot import rbac
from bot.plan.steptypes import StepParams, TargetParams, step_types

FAMILIES = {"k8s", "argo", "vllm", "prometheus", "flow"}


def test_every_family_registers_typed_steps() -> None:
    registry = step_types()
    assert {spec.fn.__module__ for spec in registry.values()} == {f"bot.steps.{f}" for f in FAMILIES}
    for name, spec in registry.items():
        module = spec.fn.__module__
        family = name.split(".")[0]
        # k8s.scale lives in bot.steps.k8s; the flow family holds the rest (wait, approval, http.probe, …)
        assert module == f"bot.steps.{family if family in FAMILIES else 'flow'}", (name, module)
        assert issubclass(spec.params_model, StepParams), name
        assert spec.description, name


def test_mutating_steps_name_their_target_and_can_be_recovered() -> None:
    mutating = {name: spec for name, spec in step_types().items() if spec.mutating}
    assert {"k8s.scale", "k8s.rollout_restart", "k8s.rollout_undo", "k8s.delete_pods"} <= set(mutating)
    for name, spec in mutating.items():
        assert issubclass(spec.params_model, TargetParams), name  # the guards lock this target
        assert spec.recover is not None, name  # a crash after the intent re-reads the target


def test_every_kubernetes_step_has_its_rbac_and_nothing_more() -> None:
    k8s = {name for name in step_types() if name.split(".")[0] in rbac.KUBE_FAMILIES}
    assert k8s == set(rbac.STEP_PERMISSIONS)


def test_the_core_registry_alone_registers_nothing() -> None:
    code = "from bot.plan.steptypes import step_types; print(len(step_types()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"
    assert bot.steps.__name__ == "bot.steps"
