"""Pure planning: which runbooks match an incident's alerts, their parameters, and what each step would do."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import PermanentError
from bot.models import AlertStatus, Incident
from bot.plan.expr import ExprError, compile_expr, render_value
from bot.plan.schema import Runbook
from bot.plan.steptypes import ROOT_NAMES, step_types
from bot.severity import Severity


class MissingParameter(PermanentError):
    """A runbook parameter has neither a label value nor a default."""


@dataclass(frozen=True)
class Selection:
    """A runbook chosen for an incident, with the labels of the alert that matched it."""

    runbook: Runbook
    labels: Mapping[str, str]


def incident_label_sets(incident: Incident) -> list[dict[str, str]]:
    """Label sets of the incident's firing alerts (common labels underneath), firing first."""
    alerts = sorted(incident.alerts.values(), key=lambda a: (a.status is not AlertStatus.FIRING, a.name))
    return [{**incident.common_labels, **a.labels} for a in alerts if a.status is AlertStatus.FIRING]


def select(
    runbooks: Iterable[Runbook], label_sets: Iterable[Mapping[str, str]], severity: Severity | None
) -> list[Selection]:
    """Each runbook that matches one of the label sets (first matching set wins), in name order."""
    sets = list(label_sets)
    chosen = []
    for runbook in sorted(runbooks, key=lambda r: r.name):
        labels = next((s for s in sets if runbook.match.matches(s, severity)), None)
        if labels is not None:
            chosen.append(Selection(runbook, dict(labels)))
    return chosen


def resolve_parameters(
    runbook: Runbook, labels: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Parameter values: overrides, else the alert label, else the default; MissingParameter otherwise."""
    values: dict[str, Any] = {}
    missing = []
    for name, spec in runbook.parameters.items():
        if overrides and name in overrides:
            values[name] = overrides[name]
        elif spec.label and labels.get(spec.label):
            values[name] = labels[spec.label]
        elif spec.default is not None:
            values[name] = spec.default
        elif spec.required:
            missing.append(f"{name} (label {spec.label!r})" if spec.label else name)
        else:
            values[name] = None
    if missing:
        raise MissingParameter(f"runbook {runbook.name}: no value for {', '.join(missing)}")
    unknown = sorted(set(overrides or {}) - set(runbook.parameters))
    if unknown:
        raise MissingParameter(f"runbook {runbook.name}: unknown parameter(s) {', '.join(unknown)}")
    return values


@dataclass
class PlannedStep:
    """One step as the plan sees it."""

    id: str
    type: str
    mutating: bool
    description: str
    condition: str | None
    runs: str
    """yes / no / depends (on an earlier step's output at run time)."""
    would_act: bool
    approval: bool
    on_failure: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """What running a runbook for an alert would do."""

    runbook: str
    description: str
    parameters: dict[str, Any]
    labels: dict[str, str]
    severity: str | None
    steps: list[PlannedStep]
    escalation: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "runbook": self.runbook,
            "description": self.description,
            "parameters": self.parameters,
            "labels": self.labels,
            "severity": self.severity,
            "escalation": self.escalation,
            "steps": [vars(s) for s in self.steps],
        }


def plan(
    runbook: Runbook, labels: Mapping[str, str], severity: Severity, parameters: Mapping[str, Any]
) -> Plan:
    """Resolve what can be known before running: conditions on params/labels/severity, rendered params."""
    registry = step_types()
    context = {
        "params": dict(parameters),
        "labels": dict(labels),
        "severity": severity.value,
        "incident": {"severity": severity.value, "status": "triggered"},
        "dry_run": False,
        "steps": {},
    }
    planned = []
    for spec in runbook.steps:
        step_type = registry[spec.type]
        runs = "yes"
        if spec.when is not None:
            expr = compile_expr(spec.when, roots=ROOT_NAMES)
            if any(ref[0] == "steps" for ref in expr.references):
                runs = "depends"
            else:
                runs = "yes" if expr.truth(context) else "no"
        shown: dict[str, Any] = {}
        for key, value in spec.params.items():
            reads_steps = isinstance(value, str) and "steps." in value and "${" in value
            try:
                shown[key] = value if reads_steps else render_value(value, context)
            except ExprError:
                shown[key] = value  # known only at run time: shown as written
        planned.append(
            PlannedStep(
                id=spec.id,
                type=spec.type,
                mutating=step_type.mutating,
                description=spec.description or step_type.description,
                condition=spec.when,
                runs=runs,
                would_act=step_type.mutating and runs != "no",
                approval=spec.needs_approval(severity),
                on_failure=spec.on_failure,
                params=shown,
            )
        )
    return Plan(
        runbook=runbook.name,
        description=runbook.description,
        parameters=dict(parameters),
        labels=dict(labels),
        severity=severity.value,
        steps=planned,
        escalation=runbook.escalation,
    )
