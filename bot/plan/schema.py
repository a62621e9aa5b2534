"""The runbook file format (pydantic), its loader and the linter behind `incident-bot runbook lint`.

One runbook per YAML file in ``runbooks/``. Beyond the schema, loading checks what pydantic cannot:
step types exist, each step's ``params`` validate against that type's params model (``${…}`` placeholders
are checked as expressions and stand in for a value of the field's type), conditions compile, read only
earlier steps and declared parameters, and ``wait.refresh`` names earlier read-only steps.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from bot.errors import ConfigError
from bot.plan.expr import ExprError, check_value, compile_expr
from bot.plan.steptypes import ROOT_NAMES, StepParams, StepType, step_types
from bot.severity import LabelMatcher, Severity, _node_line, parse_duration
from bot.templating import check_template

MAX_STEP_TIMEOUT = 600.0
ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


def _seconds(value: object) -> float:
    """A duration ("30s", "5m", "1h30m") or a number of seconds, as float seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"a duration must be positive, got {value!r}")
        return float(value)
    return parse_duration(value).total_seconds()


Seconds = Annotated[float, BeforeValidator(_seconds)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MatchSpec(_Strict):
    """Which incidents a runbook is for: alert names, label matchers, incident severities (all must hold)."""

    alertnames: list[str] = Field(default_factory=list)
    labels: dict[str, LabelMatcher] = Field(default_factory=dict)
    severities: list[Severity] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str], severity: Severity | None) -> bool:
        """Whether one alert's labels (and the incident severity) satisfy this spec."""
        if not self.alertnames and not self.labels:
            return False  # a runbook without a match is manual-only
        if self.alertnames and labels.get("alertname", "") not in self.alertnames:
            return False
        if any(not m.matches(labels.get(k, "")) for k, m in self.labels.items()):
            return False
        return not (self.severities and severity is not None and severity not in self.severities)


class ParameterSpec(_Strict):
    """A runbook parameter: taken from an alert label, else the default; required unless said otherwise."""

    label: str | None = None
    default: str | int | float | bool | None = None
    required: bool = True
    description: str = ""


class StepSpec(_Strict):
    """One step of a runbook."""

    id: str = Field(pattern=ID_PATTERN)
    type: str = Field(min_length=1)
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    when: str | None = None
    timeout: Seconds = 120.0
    retries: int = Field(0, ge=0, le=5)
    on_failure: Literal["stop", "continue", "escalate"] = "stop"
    requires_approval: bool | Severity = False

    @field_validator("timeout")
    @classmethod
    def _capped(cls, value: float) -> float:
        if value > MAX_STEP_TIMEOUT:
            raise ValueError(
                f"a step timeout is at most {MAX_STEP_TIMEOUT:.0f}s (use a `wait` step to wait longer)"
            )
        return value

    def needs_approval(self, severity: Severity) -> bool:
        """Whether this step waits for a person at this incident severity (a level: at it or more severe)."""
        if self.type == "approval":
            return True
        if isinstance(self.requires_approval, Severity):
            return severity.rank <= self.requires_approval.rank
        return bool(self.requires_approval)


class Runbook(_Strict):
    """A codified runbook."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = Field(min_length=1)
    triggers: list[str] = Field(default_factory=list)
    """The alerts this runbook answers (documentation; `match` decides)."""
    escalation: str = ""
    """When a person must take over (also encoded in steps with on_failure: escalate)."""
    match: MatchSpec = Field(default_factory=MatchSpec)
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    source: str = Field("", exclude=True)

    def step_index(self, step_id: str) -> int:
        """Index of the step with this id (KeyError when absent)."""
        for index, spec in enumerate(self.steps):
            if spec.id == step_id:
                return index
        raise KeyError(step_id)


@dataclass(frozen=True)
class Problem:
    """One lint finding: file, line, where in the runbook, and why."""

    file: str
    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        at = f":{self.line}" if self.line else ""
        return f"{self.file}{at}: {self.where or '(top level)'}: {self.message}"


def _sample(annotation: Any) -> Any:
    """A stand-in value of a field's type, for validating params whose value is a ${…} placeholder."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _sample(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _sample(arg)
    if origin is Literal:
        return typing.get_args(annotation)[0]
    if origin in (list, tuple):
        return []
    if origin is dict:
        return {}
    for kind, value in ((bool, True), (int, 1), (float, 1.0), (str, "x")):
        if annotation is kind:
            return value
    return "x"


def _loc_text(loc: Iterable[int | str], data: Any) -> str:
    out = ""
    node = data
    for key in loc:
        if isinstance(key, int):
            out += f"[{key}]"
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f" ({node['id']})"
        else:
            out += ("." if out else "") + str(key)
            node = node.get(key) if isinstance(node, dict) else None
    return out


def check_runbook(
    runbook: Runbook, registry: Mapping[str, StepType] | None = None
) -> list[tuple[tuple[int | str, ...], str]]:
    """Semantic checks beyond the schema, as (location, message) pairs."""
    registry = registry if registry is not None else step_types()
    problems: list[tuple[tuple[int | str, ...], str]] = []
    seen: dict[str, StepType | None] = {}
    declared = set(runbook.parameters)

    def check_refs(expr_refs: Iterable[tuple[str, ...]], loc: tuple[int | str, ...]) -> None:
        for ref in expr_refs:
            if ref[0] == "steps" and len(ref) > 1 and ref[1] not in seen:
                problems.append((loc, f"reads steps.{ref[1]}, which is not an earlier step"))
            if ref[0] == "params" and len(ref) > 1 and ref[1] not in declared:
                problems.append((loc, f"reads params.{ref[1]}, which is not a declared parameter"))

    for i, spec in enumerate(runbook.steps):
        base: tuple[int | str, ...] = ("steps", i)
        if spec.id in seen:
            problems.append(((*base, "id"), f"duplicate step id {spec.id!r}"))
        step_type = registry.get(spec.type)
        if step_type is None:
            problems.append(
                ((*base, "type"), f"unknown step type {spec.type!r} (known: {', '.join(sorted(registry))})")
            )
        if spec.when is not None:
            try:
                check_refs(compile_expr(spec.when, roots=ROOT_NAMES).references, (*base, "when"))
            except ExprError as exc:
                problems.append(((*base, "when"), f"bad condition: {exc}"))
        if step_type is not None:
            problems += _check_params(spec, step_type, base, check_refs, seen)
        seen[spec.id] = step_type
    return problems


def _check_params(
    spec: StepSpec,
    step_type: StepType,
    base: tuple[int | str, ...],
    check_refs: Any,
    seen: Mapping[str, StepType | None],
) -> list[tuple[tuple[int | str, ...], str]]:
    problems: list[tuple[tuple[int | str, ...], str]] = []
    model: type[StepParams] = step_type.params_model
    dynamic = set()
    candidate: dict[str, Any] = {}
    for key, value in spec.params.items():
        loc = (*base, "params", key)
        try:
            found = check_value(value, ROOT_NAMES)
        except ExprError as exc:
            problems.append((loc, f"bad placeholder: {exc}"))
            found = []
            dynamic.add(key)
        check_refs([r for e in found for r in e.references], loc)
        if key in dynamic or (isinstance(value, str) and "${" in value):
            dynamic.add(key)
            field = model.model_fields.get(key)
            candidate[key] = _sample(field.annotation) if field is not None else "x"
        else:
            candidate[key] = value
    try:
        params = model.model_validate(candidate)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if loc and loc[0] in dynamic and error["type"] != "extra_forbidden":
                continue
            problems.append(((*base, "params", *loc), str(error["msg"]).removeprefix("Value error, ")))
        return problems
    for key in getattr(model, "expressions", ()):
        source = getattr(params, key, None)
        if isinstance(source, str) and key not in dynamic:
            try:
                check_refs(compile_expr(source, roots=ROOT_NAMES).references, (*base, "params", key))
            except ExprError as exc:
                problems.append(((*base, "params", key), f"bad condition: {exc}"))
    for key in getattr(model, "templates", ()):
        source = getattr(params, key, None)
        if isinstance(source, str):
            try:
                check_template(source)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(((*base, "params", key), f"bad template (line {exc.lineno}): {exc.message}"))
    for ref in getattr(params, "refresh", []) or []:
        earlier = seen.get(ref)
        if ref not in seen:
            problems.append(
                ((*base, "params", "refresh"), f"refresh names {ref!r}, which is not an earlier step")
            )
        elif earlier is not None and earlier.mutating:
            problems.append(((*base, "params", "refresh"), f"refresh names {ref!r}, a mutating step"))
    return problems


def parse_runbook(text: str, source: str = "<runbook>") -> Runbook:
    """Parse and check one runbook; ConfigError lists every problem with file:line."""
    problems = lint_text(text, source)
    if problems:
        raise ConfigError("invalid runbook\n  " + "\n  ".join(str(p) for p in problems))
    data = yaml.safe_load(text)
    return Runbook.model_validate({**data, "source": source})


def lint_text(text: str, source: str = "<runbook>") -> list[Problem]:
    """Every problem of one runbook's YAML text."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return [Problem(source, line, "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]
    if not isinstance(data, dict):
        return [Problem(source, 1, "", "a runbook must be a YAML mapping")]
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        return [
            Problem(
                source,
                _node_line(root, tuple(e["loc"])),
                _loc_text(e["loc"], data),
                str(e["msg"]).removeprefix("Value error, "),
            )
            for e in exc.errors()
        ]
    return [
        Problem(source, _node_line(root, loc), _loc_text(loc, data), msg)
        for loc, msg in check_runbook(runbook)
    ]


def runbook_files(path: Path) -> list[Path]:
    """The runbook files at *path* (a file, or the *.yaml / *.yml in a directory)."""
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    return [path]


def lint_paths(paths: Iterable[Path]) -> tuple[list[Problem], int]:
    """Lint files and directories: (problems, files checked); duplicate runbook names are problems too."""
    problems: list[Problem] = []
    names: dict[str, str] = {}
    count = 0
    for path in paths:
        if not path.exists():
            problems.append(Problem(str(path), None, "", "no such file or directory"))
            continue
        for file in runbook_files(path):
            count += 1
            text = file.read_text(encoding="utf-8")
            found = lint_text(text, str(file))
            problems += found
            if not found:
                name = yaml.safe_load(text)["name"]
                if name in names:
                    problems.append(
                        Problem(str(file), None, "name", f"runbook {name!r} is also defined in {names[name]}")
                    )
                names[name] = str(file)
    return problems, count


def load_runbook(path: Path) -> Runbook:
    """Read and check one runbook file (ConfigError on any problem)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read runbook: {exc.strerror or exc}") from exc
    return parse_runbook(text, str(path))


def load_runbooks(directory: Path) -> dict[str, Runbook]:
    """Every runbook in *directory* by name (ConfigError listing all problems of all files)."""
    problems, _ = lint_paths([directory])
    if problems:
        raise ConfigError("invalid runbooks\n  " + "\n  ".join(str(p) for p in problems))
    books = [load_runbook(f) for f in runbook_files(directory)]
    return {b.name: b for b in books}
