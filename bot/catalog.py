"""Service catalog (operator-edited YAML): which service an alert is about, for alerts without target labels.

Most real alert rules aggregate ``namespace`` and ``pod`` away (``sum(rate(...))``), so a runbook cannot take
its target from the alert. The catalog (shipped default ``bot/policy/catalog.yaml``, overridden by CATALOG)
maps label matchers to a service::

    version: 1
    services:
      - name: llm-d                      # unique; shown in the incident ("via catalog entry 'llm-d'")
        match: {service: llm-d, team: sre}   # every matcher must hold (AND); the severity policy's forms
        namespace: llm-d
        decode: {name: ms-decode, kind: Deployment}   # or a bare name (a Deployment)
        prefill: ms-prefill
        epp: ms-epp                      # the endpoint picker's Deployment
        inference_pool: ms-pool
        model: meta-llama/Llama-3.1-8B-Instruct
        slack_channel: "#llm-d"
        pagerduty: {service: PABC123, routing_key_env: LLMD_PD_ROUTING_KEY}
        owners: [team-inference]

Matching: the **first** entry (in file order) whose matchers all hold wins, so put specific entries before
broad ones. Matchers are those of the severity policy (``equals``, ``not_equals``, ``regex``, ``not_regex``
anchored, ``in``, ``not_in``; a bare string is ``equals``, a bare list ``in``; a missing label reads as "").
An entry's target becomes alert labels (:meth:`ServiceEntry.target_labels`) that the alert lacks; the
catalog never holds a PagerDuty routing key itself, only the name of the environment variable with it.

Loading is pure; :func:`load_catalog` raises ConfigError with one line naming the file, line, entry and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from bot.errors import ConfigError
from bot.severity import LabelMatcher, _node_line

#: Workload kinds a catalog entry may name (the kinds the bot's adapters know).
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "LeaderWorkerSet", "Rollout")
#: The label keys target resolution adds (where the alert lacks them), in the order they are shown.
TARGET_KEYS = (
    "namespace",
    "deployment",
    "workload_kind",
    "prefill_deployment",
    "epp_deployment",
    "inference_pool",
    "model_name",
)
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _bare_name(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Workload(_Strict):
    """A workload by name and kind (a bare name means a Deployment)."""

    name: str = Field(pattern=_DNS_NAME)
    kind: Literal["Deployment", "StatefulSet", "LeaderWorkerSet", "Rollout"] = "Deployment"


WorkloadRef = Annotated[Workload, BeforeValidator(_bare_name)]


class PagerDutyRef(_Strict):
    """The service's PagerDuty service id and the environment variable holding its routing key."""

    service: str | None = Field(None, pattern=r"^[A-Z0-9]{2,20}$")
    routing_key_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")


class ServiceEntry(_Strict):
    """One service: the labels that point at it and where it runs."""

    name: str = Field(min_length=1, max_length=100)
    match: dict[Annotated[str, Field(pattern=_LABEL_NAME)], LabelMatcher] = Field(min_length=1)
    namespace: str = Field(pattern=_DNS_LABEL)
    decode: WorkloadRef | None = None
    prefill: WorkloadRef | None = None
    epp: str | None = Field(None, pattern=_DNS_NAME)
    inference_pool: str | None = Field(None, pattern=_DNS_NAME)
    model: str | None = Field(None, min_length=1)
    slack_channel: str | None = Field(None, pattern=r"^#[a-z0-9][a-z0-9._-]*$")
    pagerduty: PagerDutyRef | None = None
    owners: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher holds for *labels* (a missing label reads as "")."""
        return all(m.matches(labels.get(name, "")) for name, m in self.match.items())

    def describe_match(self, labels: Mapping[str, str]) -> str:
        """The matched labels as text, e.g. ``service=llm-d, team=sre``."""
        return ", ".join(f"{name}={labels.get(name, '')}" for name in self.match)

    def describe_target(self) -> str:
        """``NAME → namespace/decode-workload`` (the namespace alone when the entry names no workload)."""
        where = (
            f"{self.namespace}/{self.decode.name}"
            if self.decode
            else f"{self.namespace} (workload by discovery)"
        )
        return f"{self.name} → {where}"

    def target_labels(self) -> dict[str, str]:
        """The entry's target as alert labels (only the keys it names)."""
        values = {
            "namespace": self.namespace,
            "deployment": self.decode.name if self.decode else None,
            "workload_kind": self.decode.kind if self.decode else None,
            "prefill_deployment": self.prefill.name if self.prefill else None,
            "epp_deployment": self.epp,
            "inference_pool": self.inference_pool,
            "model_name": self.model,
        }
        return {key: value for key, value in values.items() if value}


class Catalog(_Strict):
    """The whole catalog file."""

    version: Literal[1]
    services: tuple[ServiceEntry, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for entry in self.services:
            if entry.name in seen:
                raise ValueError(f"two services are named {entry.name!r}")
            seen.add(entry.name)
        return self

    def match(self, labels: Mapping[str, str]) -> ServiceEntry | None:
        """The first entry whose matchers all hold for *labels*, or None."""
        return next((entry for entry in self.services if entry.matches(labels)), None)

    def describe(self, labels: Mapping[str, str]) -> str | None:
        """Where the first matching entry puts an alert with *labels* (`bot.coverage.CatalogLookup`)."""
        entry = self.match(labels)
        if entry is None:
            return None
        return f"{entry.describe_target()} (entry matched on {entry.describe_match(labels)})"


EMPTY = Catalog(version=1)


def model_label(model: str) -> str:
    """A model name as an ``llm-d.ai/model`` label value: `A/B-8B` -> `a-b-8b`."""
    return re.sub(r"[^a-z0-9.-]+", "-", model.lower()).strip("-.")[:63].rstrip("-.")


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """``services[2] ('llm-d').decode.name`` for a pydantic location."""
    out = ""
    node: Any = data
    for key in loc:
        if isinstance(key, int):
            out += f"[{key}]"
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" ({node['name']!r})"
        else:
            out += ("." if out else "") + str(key)
            node = node.get(key) if isinstance(node, dict) else None
    return out or "(top level)"


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    """Parse and validate catalog YAML; ConfigError (one line) names *source*, line, entry and field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: invalid service catalog: not valid YAML") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: invalid service catalog: the catalog must be a YAML mapping")
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        loc = tuple(errors[0]["loc"])
        line = _node_line(root, loc)
        message = str(errors[0]["msg"]).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        at = f"{source}:{line}" if line else source
        raise ConfigError(f"{at}: invalid service catalog: {_where(loc, data)}: {message}{more}") from exc


def load_catalog(path: Path | str | None) -> Catalog:
    """Read and validate the catalog at *path* (None: the empty catalog); ConfigError on any problem."""
    if path is None:
        return EMPTY
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read service catalog: {exc.strerror or exc}") from exc
    return parse_catalog(text, str(file))
