"""Where a runbook's target comes from when the alert does not say: the service catalog, then the cluster.

Resolution fills the target keys (:data:`bot.catalog.TARGET_KEYS`) the alert lacks, in this order:

1. the alert's own labels (never overwritten);
2. the first catalog entry whose matchers hold ("via catalog entry 'llm-d' (service=llm-d, team=sre)");
3. discovery, read only and bounded (namespaces from the alert, the catalog or KUBE_ALLOWED_NAMESPACES,
   never the whole cluster; one time budget for all calls): the ``pod`` label's owner references
   (pod -> ReplicaSet -> Deployment, or whatever kind owns it), the InferencePool named by the alert's
   ``name`` or the catalog (its selector -> its pods -> their owners), then pods with llm-d's labels
   (``llm-d.ai/role=decode``, ``llm-d.ai/model`` when the alert names the model). Several candidate
   workloads are never guessed between: the target stays unresolved and the candidates are reported.

What is still missing is the caller's to handle (the engine parks the run for a person).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bot.catalog import Catalog, model_label
from bot.errors import IncidentBotError
from bot.integrations.kube import KubeClient, label_selector_string

log = logging.getLogger("incident_bot.targets")
_DECODE = "llm-d.ai/role=decode"


@dataclass
class Resolution:
    """The labels with the target filled in, how it was found, and what was tried."""

    labels: dict[str, str]
    added: dict[str, str] = field(default_factory=dict)
    source: str = ""
    tried: list[str] = field(default_factory=list)

    @property
    def target(self) -> str | None:
        """``namespace/deployment`` when both are known."""
        ns, dep = self.labels.get("namespace"), self.labels.get("deployment")
        return f"{ns}/{dep}" if ns and dep else None

    def as_dict(self) -> dict[str, object]:
        """JSON-able form (stored on the run)."""
        return {"target": self.target, "source": self.source, "added": self.added, "tried": self.tried}


class TargetResolver:
    """Fills an alert's missing target labels from the catalog and (optionally) the cluster."""

    def __init__(
        self,
        catalog: Catalog,
        kube: Callable[[], KubeClient] | None,
        *,
        allowed_namespaces: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> None:
        self.catalog = catalog
        self.kube = kube
        self.allowed_namespaces = tuple(allowed_namespaces)
        self.timeout = timeout

    def resolve(self, labels: Mapping[str, str]) -> Resolution:
        """The alert's labels plus the target keys found for it (alert labels are never overwritten)."""
        res = Resolution(dict(labels))
        if labels.get("namespace") and labels.get("deployment"):
            res.source = "alert labels"
            self._catalog_kind(res)
            return res
        entry = self.catalog.match(labels)
        if entry is None:
            res.tried.append("no catalog entry matched" if self.catalog.services else "the catalog is empty")
        else:
            self._add(res, entry.target_labels())
            res.source = f"catalog entry {entry.name!r} ({entry.describe_match(labels)})"
        if res.labels.get("deployment") or self.kube is None:
            if self.kube is None and not res.labels.get("deployment"):
                res.tried.append("discovery is off (TARGET_DISCOVERY=false)")
            return res
        self._discover(res)
        return res

    def _catalog_kind(self, res: Resolution) -> None:
        """The alert names its workload but not the kind: the catalog's kind for that same workload."""
        if res.labels.get("workload_kind"):
            return
        entry = self.catalog.match(res.labels)
        found = entry.target_labels() if entry is not None else {}
        same = (found.get("namespace"), found.get("deployment")) == (
            res.labels["namespace"],
            res.labels["deployment"],
        )
        if same and found.get("workload_kind"):
            self._add(res, {"workload_kind": found["workload_kind"]})
            res.source += f" + kind from catalog entry {entry.name!r}" if entry else ""

    def _add(self, res: Resolution, found: Mapping[str, str]) -> None:
        for key, value in found.items():
            if value and not res.labels.get(key):
                res.labels[key] = value
                res.added[key] = value

    def _namespaces(self, res: Resolution) -> list[str]:
        known = res.labels.get("namespace")
        return [known] if known else list(self.allowed_namespaces)

    def _discover(self, res: Resolution) -> None:
        namespaces = self._namespaces(res)
        if not namespaces:
            res.tried.append(
                "discovery: no namespace known and KUBE_ALLOWED_NAMESPACES is empty "
                "(the bot does not search the whole cluster)"
            )
            return
        assert self.kube is not None
        kube, deadline = self.kube(), time.monotonic() + self.timeout
        for method in (self._by_pod, self._by_pool, self._by_llmd_labels):
            for namespace in namespaces:
                if time.monotonic() > deadline:
                    res.tried.append(f"discovery stopped after its {self.timeout:.0f}s budget")
                    return
                try:
                    if method(kube, namespace, res):
                        return
                except IncidentBotError as exc:
                    res.tried.append(f"{method.__name__.removeprefix('_by_')} in {namespace}: {exc}")

    def _found(self, res: Resolution, namespace: str, kind: str, name: str, how: str) -> bool:
        self._add(res, {"namespace": namespace, "deployment": name, "workload_kind": kind})
        res.source = f"{res.source} + {how}" if res.source else how
        return True

    def _by_pod(self, kube: KubeClient, namespace: str, res: Resolution) -> bool:
        pod = res.labels.get("pod")
        if not pod:
            return False
        kind, name = kube.pod_owner(namespace, pod)
        if kind == "Pod":
            res.tried.append(f"pod {namespace}/{pod} has no controller")
            return False
        return self._found(res, namespace, kind, name, "pod owner references")

    def _by_pool(self, kube: KubeClient, namespace: str, res: Resolution) -> bool:
        pool_name = res.labels.get("inference_pool") or res.labels.get("name")
        if not pool_name:
            return False
        pool = kube.inference_pool(namespace, pool_name)
        selector = label_selector_string((pool.get("spec") or {}).get("selector"))
        if not selector:
            res.tried.append(f"InferencePool {namespace}/{pool_name} has no selector")
            return False
        self._add(res, {"inference_pool": pool_name})
        return self._pick(
            kube, namespace, f"{selector},{_DECODE}", res, f"InferencePool {pool_name!r} selector"
        )

    def _by_llmd_labels(self, kube: KubeClient, namespace: str, res: Resolution) -> bool:
        selector = _DECODE
        model = res.labels.get("model_name")
        if model:
            selector += f",llm-d.ai/model={model_label(model)}"
        return self._pick(kube, namespace, selector, res, f"llm-d labels ({selector})")

    def _pick(self, kube: KubeClient, namespace: str, selector: str, res: Resolution, how: str) -> bool:
        owners = {o: p for o, p in kube.pod_owners(namespace, selector).items() if o[0] != "Pod"}
        if len(owners) == 1:
            (kind, name), _pods = next(iter(owners.items()))
            return self._found(res, namespace, kind, name, how)
        if not owners:
            res.tried.append(f"no pods in {namespace} match {selector}")
        else:
            found = ", ".join(f"{kind} {name}" for kind, name in sorted(owners))
            res.tried.append(f"{how} in {namespace}: several workloads ({found}); not guessing")
        return False
