"""Runbook format: lint names file, line and reason for each kind of mistake; expressions are safe."""

from __future__ import annotations

from pathlib import Path

import pytest

import bot.steps  # noqa: F401  (registers the shipped step types the linter checks against)
from bot.cli import main
from bot.plan.expr import ExprError, compile_expr, render_value
from bot.plan.schema import lint_text
from bot.plan.steptypes import StepContext, StepParams, StepResult, TargetParams, step

GOOD = """\
name: ok
description: fine
match: {alertnames: [X]}
parameters:
  namespace: {label: namespace, default: llm-d}
steps:
  - id: pods
    type: k8s.get_pods
    params: {namespace: "${params.namespace}"}
  - id: scale
    type: k8s.scale
    when: steps.pods.ready < 2
    params: {namespace: "${params.namespace}", deployment: d, delta: 1, max_replicas: 4}
"""


def problems(text: str) -> list[str]:
    return [str(p) for p in lint_text(text, "rb.yaml")]


def test_a_good_runbook_has_no_problems() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # schema
        (("description: fine\n", ""), "rb.yaml:1: description: Field required"),
        (
            ("  - id: pods\n", "  - id: Pods!\n"),
            "rb.yaml:7: steps[0] (Pods!).id: String should match pattern",
        ),
        (
            ("    when: steps.pods.ready < 2\n", "    when: steps.pods.ready < 2\n    on_failure: retry\n"),
            "rb.yaml:13: steps[1] (scale).on_failure: Input should be 'stop', 'continue' or 'escalate'",
        ),
        # unknown step type
        (
            ("type: k8s.get_pods", "type: k8s.get_podz"),
            "rb.yaml:8: steps[0] (pods).type: unknown step type 'k8s.get_podz'",
        ),
        # bad params: unknown field, wrong type, model rule, missing
        (
            ("delta: 1,", "delta: 1, replicaz: 3,"),
            "rb.yaml:13: steps[1] (scale).params.replicaz: Extra inputs are not permitted",
        ),
        (
            ("max_replicas: 4", "max_replicas: many"),
            "steps[1] (scale).params.max_replicas: Input should be a valid integer",
        ),
        (("delta: 1,", "delta: 1, replicas: 2,"), "give exactly one of replicas (absolute) or delta"),
        ((", max_replicas: 4", ""), "steps[1] (scale).params.max_replicas: Field required"),
        # bad conditions
        (("steps.pods.ready < 2", "steps.pods.ready <"), "rb.yaml:12: steps[1] (scale).when: bad condition"),
        (("steps.pods.ready < 2", "__import__('os').system('x')"), "only these functions may be called"),
        (
            ("steps.pods.ready < 2", "steps.later.value > 1"),
            "reads steps.later, which is not an earlier step",
        ),
        (
            ("steps.pods.ready < 2", "params.nope == 1"),
            "reads params.nope, which is not a declared parameter",
        ),
        (("steps.pods.ready < 2", "os.path"), "unknown name 'os'"),
        # bad placeholders
        (
            ('"${params.namespace}"}\n  - id: scale', '"${params.namespace"}\n  - id: scale'),
            "bad placeholder",
        ),
        # YAML itself
        (("steps:\n", "steps: [\n"), "rb.yaml:7: (top level): not valid YAML"),
    ],
)
def test_lint_names_file_line_and_reason(change: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    found = problems(text)
    assert any(expected in p for p in found), found


def test_lint_checks_templates_refresh_targets_and_duplicate_ids() -> None:
    extra = """\
  - id: tell
    type: notify
    params: {message: "{{ steps.pods.ready "}
  - id: again
    type: wait
    params: {until: "steps.pods.ready > 1", refresh: [scale, ghost]}
  - id: pods
    type: notify
    params: {message: hi}
"""
    found = problems(GOOD + extra)
    assert any("steps[2] (tell).params.message: bad template" in p for p in found), found
    assert any("refresh names 'scale', a mutating step" in p for p in found), found
    assert any("refresh names 'ghost', which is not an earlier step" in p for p in found), found
    assert any("steps[4] (pods).id: duplicate step id 'pods'" in p for p in found), found


def test_cli_lint_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    assert main(["runbook", "lint", str(good)]) == 0
    bad.write_text(GOOD.replace("k8s.get_pods", "k8s.nope"))
    assert main(["runbook", "lint", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert f"{bad}:8: steps[0] (pods).type: unknown step type 'k8s.nope'" in out
    assert main(["runbook", "lint"]) == 0  # the shipped runbooks
    assert "14 runbook file(s) OK" in capsys.readouterr().out  # 8 + issue 15's six


def test_expressions_are_data_only() -> None:
    for source in [
        "().__class__",
        "steps._x",
        "(lambda: 1)()",
        "[i for i in steps]",
        "getattr(steps, 'x')",
        "steps.a if True else open('f')",
        "steps.x[1:2]",
        "f'{steps}'",
    ]:
        with pytest.raises(ExprError):
            compile_expr(source, roots=["steps"])
    ctx = {"steps": {"q": {"value": 12, "list": ["a"]}}, "labels": {"pod": "p-1"}}
    assert compile_expr("steps.q.value > 10 and labels['pod'] == 'p-1'").truth(ctx)
    assert compile_expr("steps.missing.value > 10").truth(ctx) is False  # null compares false
    assert compile_expr("'a' in steps.q.list and len(steps.q.list) == 1").truth(ctx)
    with pytest.raises(ExprError, match="arithmetic on null"):
        compile_expr("steps.missing.value + 1").evaluate(ctx)
    assert render_value({"q": "x=${promql(labels.pod)}", "n": "${steps.q.value * 2}"}, ctx) == {
        "q": 'x="p-1"',
        "n": 24,
    }
    assert (
        render_value("${promql(labels.pod)}", {"labels": {"pod": 'a"}) or vector(1'}})
        == '"a\\"}) or vector(1"'
    )


class P(StepParams):
    x: int = 1


def test_step_registration_checks_the_signature() -> None:
    with pytest.raises(TypeError, match="StepParams subclass"):

        @step("t.bad1", mutating=False, description="")
        def bad1(ctx: StepContext, params: dict) -> StepResult:  # type: ignore[type-arg]
            return StepResult.ok("")

    with pytest.raises(TypeError, match="must subclass TargetParams"):

        @step("t.bad2", mutating=True, description="")
        def bad2(ctx: StepContext, params: P) -> StepResult:
            return StepResult.ok("")

    with pytest.raises(TypeError, match="return StepResult"):

        @step("t.bad3", mutating=False, description="")
        def bad3(ctx: StepContext, params: P) -> None:
            return None

    with pytest.raises(TypeError, match="already registered"):

        @step("k8s.scale", mutating=True, description="")
        def dup(ctx: StepContext, params: TargetParams) -> StepResult:
            return StepResult.ok("")
