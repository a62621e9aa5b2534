"""In-memory state of an emulated Kubernetes cluster, with a synchronous deployment controller.

Objects are stored as the JSON dicts a real API server would return (apps/v1 Deployments and ReplicaSets,
core/v1 Pods, Events, Nodes, Namespaces). After every mutation :meth:`Cluster.reconcile` runs the parts
of the deployment controller, ReplicaSet controller, scheduler and kubelet that incident automation
observes, until nothing changes, so a test sees settled state as soon as its request returns:

* a Deployment template change creates (or reuses, bumping its revision) a ReplicaSet named
  ``<deployment>-<pod-template-hash>`` with ``deployment.kubernetes.io/revision`` and a controller
  ownerReference; RollingUpdate honours maxSurge/maxUnavailable against pod readiness, so pods that never
  get ready leave the rollout stuck with the old pods serving, as on a real cluster; paused ones don't roll;
* ReplicaSets create/delete pods to match replicas; the scheduler places pods on nodes by
  ``nvidia.com/gpu`` requests (``Pending``/``Unschedulable`` when no node has room);
* pods take the state scripted for their deployment or image (:class:`PodBehaviour`):
  Running+ready, CrashLoopBackOff, OOMKilled, readiness failing, ImagePullBackOff;
* Events are recorded the way the controllers and kubelet word them.

The lock is re-entrant; every public method takes it, so the HTTP emulator may call from many threads.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.catalog import model_label
from bot.sandbox.kube_patch import JSONPatchError, json_patch, merge_patch, strategic_merge_patch

JSON = dict[str, Any]
Listener = Callable[[str, str, JSON], None]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
GPU = "nvidia.com/gpu"
_SKIP_RS_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

KINDS: dict[str, tuple[str, str, bool]] = {
    # kind: (apiVersion, plural, namespaced)
    "Deployment": ("apps/v1", "deployments", True),
    "ReplicaSet": ("apps/v1", "replicasets", True),
    "Pod": ("v1", "pods", True),
    "Event": ("v1", "events", True),
    "Namespace": ("v1", "namespaces", False),
    "Node": ("v1", "nodes", False),
    # Stored as given and served through the generic object API (create/update/patch/delete, the status
    # and scale subresources); a controller registered with Cluster.register_controller gives them life.
    "Secret": ("v1", "secrets", True),
    "StatefulSet": ("apps/v1", "statefulsets", True),
    "ControllerRevision": ("apps/v1", "controllerrevisions", True),
    "Rollout": ("argoproj.io/v1alpha1", "rollouts", True),
    "AnalysisRun": ("argoproj.io/v1alpha1", "analysisruns", True),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io/v1", "leaderworkersets", True),
    "InferencePool": ("inference.networking.k8s.io/v1", "inferencepools", True),
}
#: Kinds with built-in behaviour above (the rest use the generic object API).
BUILTIN_KINDS = frozenset({"Deployment", "ReplicaSet", "Pod", "Event", "Namespace", "Node"})
#: Generic kinds whose status is a subresource (a main-resource write keeps the stored status).
STATUS_SUBRESOURCE = frozenset({"StatefulSet", "Rollout", "AnalysisRun", "LeaderWorkerSet", "InferencePool"})
#: Generic kinds with a scale subresource over spec.replicas.
SCALE_SUBRESOURCE = frozenset({"StatefulSet", "Rollout", "LeaderWorkerSet"})
_FIELD_LABELS: dict[str, set[str]] = {
    "Pod": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "status.phase", "status.podIP"},
    "Event": {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    "ReplicaSet": {"status.replicas"},
}


class ApiError(Exception):
    """An error the API server answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        """The ``Status`` body a real API server sends for this error."""
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _resource(kind: str) -> tuple[str, str]:
    api_version, plural = KINDS[kind][0], KINDS[kind][1]
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group, plural


def not_found(kind: str, name: str) -> ApiError:
    """404 NotFound for an object of ``kind``."""
    group, plural = _resource(kind)
    qualified = f"{plural}.{group}" if group else plural
    details: JSON = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', details)


def conflict(kind: str, name: str) -> ApiError:
    """409 Conflict: the caller's resourceVersion is stale."""
    group, plural = _resource(kind)
    qualified = f"{plural}.{group}" if group else plural
    details: JSON = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details,
    )


def already_exists(kind: str, name: str) -> ApiError:
    """409 AlreadyExists."""
    group, plural = _resource(kind)
    qualified = f"{plural}.{group}" if group else plural
    details: JSON = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists', details)


def invalid(kind: str, name: str, causes: list[tuple[str, str]], group: str | None = None) -> ApiError:
    """422 Invalid with one cause per (field, message)."""
    if group is None:
        group = _resource(kind)[0] if kind in KINDS else ""
    qualified = f"{kind}.{group}" if group else kind
    texts = [f"{fld}: {msg}" for fld, msg in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details: JSON = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": fld} for fld, msg in causes],
    }
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


# --- selectors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector."""

    key: str
    op: Literal["=", "!=", "in", "notin", "exists", "!"]
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this term."""
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values


_SET_TERM = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector string (``a=b,c!=d,e in (x,y),!f,g``)."""
    if not text:
        return []
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    requirements: list[Requirement] = []
    for raw in terms:
        term = raw.strip()
        if not term:
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        match = _SET_TERM.match(term)
        if match:
            values = tuple(v.strip() for v in match.group(3).split(",") if v.strip())
            op: Literal["in", "notin"] = "in" if match.group(2) == "in" else "notin"
            requirements.append(Requirement(match.group(1), op, values))
        elif term.startswith("!"):
            requirements.append(Requirement(term[1:].strip(), "!"))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            requirements.append(Requirement(key.strip(), "!=", (value.strip(),)))
        elif "=" in term:
            key, value = term.replace("==", "=", 1).split("=", 1)
            requirements.append(Requirement(key.strip(), "=", (value.strip(),)))
        else:
            requirements.append(Requirement(term, "exists"))
    return requirements


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """Render a metav1.LabelSelector the way kubectl does (sorted, comma-joined)."""
    if not selector:
        return ""
    parts: list[str] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        parts.append(f"{key}={value}")
    for expr in selector.get("matchExpressions") or []:
        op = expr.get("operator")
        values = ",".join(sorted(expr.get("values") or []))
        if op == "In":
            parts.append(f"{expr['key']} in ({values})")
        elif op == "NotIn":
            parts.append(f"{expr['key']} notin ({values})")
        elif op == "Exists":
            parts.append(expr["key"])
        elif op == "DoesNotExist":
            parts.append(f"!{expr['key']}")
    return ",".join(sorted(parts))


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a metav1.LabelSelector selects ``labels`` (an empty selector selects nothing here)."""
    text = selector_string(selector)
    if not text:
        return False
    return all(req.matches(labels) for req in parse_label_selector(text))


def _field_value(obj: JSON, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if path == "source" and isinstance(node, dict):
        node = node.get("component")
    return "" if node is None else str(node)


def parse_field_selector(kind: str, text: str | None) -> list[tuple[str, bool, str]]:
    """Parse a field selector into (field, equal?, value) terms; unsupported fields get a 400."""
    if not text:
        return []
    allowed = {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get(kind, set())
    terms = []
    for raw in text.split(","):
        if "!=" in raw:
            name, value = raw.split("!=", 1)
            equal = False
        elif "=" in raw:
            name, value = raw.replace("==", "=", 1).split("=", 1)
            equal = True
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{raw}'")
        name = name.strip()
        if name not in allowed:
            raise bad_request(f"field label not supported: {name}")
        terms.append((name, equal, value.strip()))
    return terms


def object_matcher(
    kind: str, label_selector: str | None, field_selector: str | None
) -> Callable[[JSON], bool]:
    """A predicate for objects of ``kind`` matching both selectors (parse errors raise 400 at once)."""
    requirements = parse_label_selector(label_selector)
    fields = parse_field_selector(kind, field_selector)

    def matches(obj: JSON) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return all(req.matches(labels) for req in requirements) and all(
            (_field_value(obj, name) == value) == equal for name, equal, value in fields
        )

    return matches


# --- pod behaviour -------------------------------------------------------------------------------

PodState = Literal["running", "crashloop", "oomkilled", "not_ready", "image_pull_backoff"]


@dataclass(frozen=True)
class PodBehaviour:
    """How the emulated kubelet runs a pod: its state, restart count and log lines."""

    state: PodState = "running"
    restart_count: int = 5
    logs: tuple[str, ...] | None = None
    previous_logs: tuple[str, ...] | None = None
    exit_code: int | None = None

    def current_logs(self) -> list[str]:
        """Lines the running (or last) container wrote."""
        if self.logs is not None:
            return list(self.logs)
        if self.state in ("running", "not_ready"):
            return [
                "INFO vLLM API server version 0.x",
                "INFO Loading model weights took 41.2 GiB",
                "INFO Starting vLLM API server on http://0.0.0.0:8000",
                "INFO:     Application startup complete.",
            ]
        if self.state in ("crashloop", "oomkilled"):
            return self.crash_logs()
        return []

    def crash_logs(self) -> list[str]:
        """Lines the previous, crashed container wrote."""
        if self.previous_logs is not None:
            return list(self.previous_logs)
        if self.state == "oomkilled":
            return ["INFO Loading model weights", "Killed"]
        return [
            "INFO vLLM API server version 0.x",
            "ERROR Engine core initialization failed.",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        ]


@dataclass
class _PodRuntime:
    behaviour: PodBehaviour
    seq: int
    logs: list[str] = field(default_factory=list)


@dataclass
class _Script:
    namespace: str | None
    deployment: str | None
    image: str | None
    behaviour: PodBehaviour


# --- helpers -------------------------------------------------------------------------------------


def _fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def _safe_encode(text: str) -> str:
    return "".join(_ALPHANUMS[ord(ch) % len(_ALPHANUMS)] for ch in text)


def _canonical(value: Any) -> bytes:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def template_hash(template: JSON, collision_count: int = 0) -> str:
    """The pod-template-hash of a template, in the alphabet and length the real controller uses."""
    digest = _fnv32a(_canonical(template) + (str(collision_count).encode() if collision_count else b""))
    return _safe_encode(str(digest))


def _strip_hash(template: JSON) -> JSON:
    result = copy.deepcopy(template)
    labels = (result.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return result


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        fraction = total * int(text[:-1]) / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(text)


def gpu_request(pod_spec: Mapping[str, Any]) -> int:
    """GPUs a pod spec asks for (limits win over requests, as the scheduler sees it)."""
    total = 0
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU, (resources.get("requests") or {}).get(GPU, 0))
        total += int(value)
    return total


def _default_container(container: JSON) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    untagged = "@" not in image and ":" not in image.rsplit("/", 1)[-1]
    container.setdefault(
        "imagePullPolicy", "Always" if untagged or image.endswith(":latest") else "IfNotPresent"
    )
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for key, value in limits.items():
            requests.setdefault(key, value)
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            for key, value in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                probe.setdefault(key, value)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("scheme", "HTTP")


def default_pod_template(template: JSON) -> JSON:
    """Apply the API server's defaults to a pod template (in place) and return it."""
    metadata = template.setdefault("metadata", {})
    metadata["creationTimestamp"] = None
    spec = template.setdefault("spec", {})
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            _default_container(container)
    for container in spec.get("initContainers") or []:
        if isinstance(container, dict):
            _default_container(container)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    return template


def default_deployment(deployment: JSON) -> JSON:
    """Apply the API server's defaults to a Deployment (in place) and return it."""
    spec = deployment.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    default_pod_template(spec.setdefault("template", {}))
    return deployment


_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_deployment(deployment: JSON, old: JSON | None = None) -> None:
    """Raise a 422 ApiError for the checks the API server makes that automation can trip over."""
    name = str((deployment.get("metadata") or {}).get("name", ""))
    causes: list[tuple[str, str]] = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif not _DNS1123.match(name) or len(name) > 253:
        causes.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
                "of lower case alphanumeric characters, '-' or '.'",
            )
        )
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise bad_request(
            f"json: cannot unmarshal {type(replicas).__name__} into Go struct field "
            "DeploymentSpec.spec.replicas of type int32"
        )
    if replicas < 0:
        causes.append(("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0"))
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector or not selector_string(selector):
        causes.append(("spec.selector", "Required value"))
    elif not selector_matches(selector, labels):
        causes.append(
            (
                "spec.template.metadata.labels",
                f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`",
            )
        )
    if old is not None and selector != (old.get("spec") or {}).get("selector"):
        causes.append(("spec.selector", f"Invalid value: {_go_selector(selector)}: field is immutable"))
    pod_spec = template.get("spec") or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        causes.append(("spec.template.spec.containers", "Required value"))
    for index, container in enumerate(containers):
        if not container.get("name"):
            causes.append((f"spec.template.spec.containers[{index}].name", "Required value"))
        if not container.get("image"):
            causes.append((f"spec.template.spec.containers[{index}].image", "Required value"))
    restart = pod_spec.get("restartPolicy", "Always")
    if restart != "Always":
        causes.append(
            (
                "spec.template.spec.restartPolicy",
                f'Unsupported value: "{restart}": supported values: "Always"',
            )
        )
    if causes:
        raise invalid("Deployment", name, causes)


def _go_map(labels: Mapping[str, str]) -> str:
    inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
    return "map[string]string{" + inner + "}"


def _go_selector(selector: Any) -> str:
    if not isinstance(selector, dict):
        return "nil"
    return "v1.LabelSelector{MatchLabels:" + _go_map(selector.get("matchLabels") or {}) + "}"


# --- the cluster ---------------------------------------------------------------------------------


class Cluster:
    """The emulated cluster: object store, controllers, scheduler, kubelet scripts and events."""

    def __init__(self, *, seed: int = 0, start: dt.datetime | None = None) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._rng = random.Random(seed)  # noqa: S311 - deterministic names, not secrets
        self._objects: dict[str, dict[tuple[str, str], JSON]] = {kind: {} for kind in KINDS}
        self._rv = 1000
        self._seq = 0
        self._offset = dt.timedelta()
        self._start = start
        self._runtime: dict[tuple[str, str], _PodRuntime] = {}
        self._scripts: list[_Script] = []
        self._listeners: list[Listener] = []
        self._history: list[tuple[int, str, str, JSON]] = []
        self._event_keys: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._controllers: dict[str, Callable[[tuple[str, str]], None]] = {}
        self.add_namespace("default")

    # -- time, ids --------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The cluster's clock (wall time plus whatever :meth:`advance` added)."""
        return (self._start or dt.datetime.now(dt.UTC)) + self._offset

    def advance(self, seconds: float) -> None:
        """Move the cluster clock forward (for progress deadlines) and reconcile."""
        with self.lock:
            self._offset += dt.timedelta(seconds=seconds)
            self.reconcile()

    def _ts(self) -> str:
        return self.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _uid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _suffix(self, length: int = 5) -> str:
        return "".join(self._rng.choice(_ALPHANUMS) for _ in range(length))

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion handed out."""
        return self._rv

    # -- store ------------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(kind, event_type, object)`` after every stored change (under the lock)."""
        with self.lock:
            self._listeners.append(listener)

    def _put(self, kind: str, obj: JSON, *, created: bool = False) -> JSON:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        self._objects[kind][key] = obj
        self._record(kind, "ADDED" if created else "MODIFIED", obj)
        return obj

    def _remove(self, kind: str, namespace: str, name: str) -> JSON | None:
        obj = self._objects[kind].pop((namespace, name), None)
        if obj is not None:
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._record(kind, "DELETED", obj)
        return obj

    def _record(self, kind: str, event_type: str, obj: JSON) -> None:
        snapshot = copy.deepcopy(obj)
        self._history.append((self._rv, event_type, kind, snapshot))
        if len(self._history) > 5000:
            del self._history[:1000]
        for listener in list(self._listeners):
            listener(kind, event_type, snapshot)
        self.changed.notify_all()

    def history_since(
        self, resource_version: int, kind: str, namespace: str | None
    ) -> list[tuple[int, str, JSON]]:
        """Watch events of ``kind`` (in ``namespace`` unless None) newer than ``resource_version``."""
        with self.lock:
            return [
                (rv, etype, copy.deepcopy(obj))
                for rv, etype, k, obj in self._history
                if rv > resource_version
                and k == kind
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
            ]

    def _new_meta(self, kind: str, namespace: str, name: str) -> JSON:
        meta: JSON = {"name": name}
        if KINDS[kind][2]:
            meta["namespace"] = namespace
        meta.update({"uid": self._uid(), "resourceVersion": "", "creationTimestamp": self._ts()})
        return meta

    # -- generic API ------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> JSON:
        """A copy of one object, or a 404 ApiError."""
        with self.lock:
            obj = self._objects[kind].get((namespace if KINDS[kind][2] else "", name))
            if obj is None:
                raise not_found(kind, name)
            return copy.deepcopy(obj)

    def list_objects(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[JSON]:
        """Copies of the objects of ``kind`` matching the namespace and selectors, in name order."""
        with self.lock:
            matcher = object_matcher(kind, label_selector, field_selector)
            result = []
            for (ns, _name), obj in sorted(self._objects[kind].items()):
                if namespace is not None and KINDS[kind][2] and ns != namespace:
                    continue
                if matcher(obj):
                    result.append(copy.deepcopy(obj))
            return result

    def add_namespace(self, name: str) -> JSON:
        """Create a namespace (no-op when it exists)."""
        with self.lock:
            existing = self._objects["Namespace"].get(("", name))
            if existing is not None:
                return copy.deepcopy(existing)
            meta = self._new_meta("Namespace", "", name)
            meta["labels"] = {"kubernetes.io/metadata.name": name}
            obj = {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": meta,
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            return copy.deepcopy(self._put("Namespace", obj, created=True))

    def add_node(self, name: str, *, gpus: int = 0, cpu: str = "96", memory: str = "1Ti") -> JSON:
        """Add a Ready node with ``gpus`` allocatable ``nvidia.com/gpu``; pending pods may now schedule."""
        with self.lock:
            capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
            if gpus:
                capacity[GPU] = str(gpus)
            meta = self._new_meta("Node", "", name)
            meta["labels"] = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
            obj = {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": meta,
                "spec": {},
                "status": {
                    "capacity": capacity,
                    "allocatable": dict(capacity),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "lastHeartbeatTime": self._ts(),
                            "lastTransitionTime": self._ts(),
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                        }
                    ],
                    "addresses": [{"type": "Hostname", "address": name}],
                },
            }
            self._put("Node", obj, created=True)
            self.reconcile()
            return copy.deepcopy(obj)

    # -- deployments ------------------------------------------------------------------------------

    def _require_namespace(self, namespace: str) -> None:
        if ("", namespace) not in self._objects["Namespace"]:
            raise not_found("Namespace", namespace)

    def create_deployment(
        self,
        body: JSON,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> JSON:
        """Create a Deployment (POST semantics: defaults, validation, 409 if it exists)."""
        with self.lock:
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            ns = namespace or meta.get("namespace") or "default"
            self._require_namespace(ns)
            obj["kind"], obj["apiVersion"] = "Deployment", "apps/v1"
            obj.pop("status", None)
            default_deployment(obj)
            validate_deployment(obj)
            name = meta["name"]
            if (ns, name) in self._objects["Deployment"]:
                raise already_exists("Deployment", name)
            fresh = self._new_meta("Deployment", ns, name)
            for key in ("labels", "annotations"):
                if meta.get(key):
                    fresh[key] = meta[key]
            fresh["generation"] = 1
            obj["metadata"] = fresh
            self._set_managed(obj, field_manager or "unknown", "Update")
            obj["status"] = {}
            if dry_run:
                return obj
            self._put("Deployment", obj, created=True)
            self.reconcile()
            return self.get("Deployment", ns, name)

    def _set_managed(self, obj: JSON, manager: str, operation: str, subresource: str | None = None) -> None:
        entries = [
            e
            for e in obj["metadata"].get("managedFields", [])
            if not (e.get("manager") == manager and e.get("subresource") == subresource)
        ]
        entry: JSON = {
            "manager": manager,
            "operation": operation,
            "apiVersion": obj.get("apiVersion", "v1") if subresource != "scale" else "autoscaling/v1",
            "time": self._ts(),
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {}},
        }
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
        obj["metadata"]["managedFields"] = entries

    @staticmethod
    def _mutated(kind: str, name: str, current: JSON, mutate: Callable[[JSON], JSON]) -> JSON:
        """``mutate`` applied to a copy of ``current``: 422 for a bad patch, 409 for a stale resourceVersion,
        400 when the result is not an object or renames it."""
        try:
            new = mutate(copy.deepcopy(current))
        except JSONPatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from exc
        if not isinstance(new, dict):
            raise bad_request("the patch did not produce an object")
        sent_rv = (new.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        sent_name = (new.get("metadata") or {}).get("name", name)
        if sent_name != name:
            raise bad_request(
                f"the name of the object ({sent_name}) does not match the name on the URL ({name})"
            )
        return new

    def update_deployment(
        self,
        namespace: str,
        name: str,
        mutate: Callable[[JSON], JSON],
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
        subresource: str | None = None,
    ) -> JSON:
        """Apply ``mutate`` to a copy of the Deployment, validate, default, store and reconcile."""
        with self.lock:
            current = self.get("Deployment", namespace, name)
            new = self._mutated("Deployment", name, current, mutate)
            meta = new.get("metadata") or {}
            # Identity and status belong to the server.
            for key in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "managedFields",
            ):
                if key in current["metadata"]:
                    meta[key] = current["metadata"][key]
            new["metadata"] = meta
            new["status"] = current.get("status", {})
            new["kind"], new["apiVersion"] = "Deployment", "apps/v1"
            default_deployment(new)
            validate_deployment(new, current)
            if new["spec"] != current["spec"]:
                new["metadata"]["generation"] = current["metadata"]["generation"] + 1
            if new == current:
                return current
            self._set_managed(new, field_manager or "unknown", "Update", subresource)
            if dry_run:
                return new
            self._put("Deployment", new)
            self.reconcile()
            return self.get("Deployment", namespace, name)

    def patch_deployment(
        self,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> JSON:
        """PATCH a Deployment with a json / merge / strategic-merge patch body."""
        return self.update_deployment(
            namespace,
            name,
            lambda obj: apply_patch(obj, patch_type, patch),
            dry_run=dry_run,
            field_manager=field_manager,
        )

    def replace_deployment(
        self,
        namespace: str,
        name: str,
        body: JSON,
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> JSON:
        """PUT a Deployment."""
        return self.update_deployment(
            namespace, name, lambda _obj: copy.deepcopy(body), dry_run=dry_run, field_manager=field_manager
        )

    def delete_deployment(self, namespace: str, name: str, *, dry_run: bool = False) -> JSON:
        """Delete a Deployment and (background cascade, done at once) its ReplicaSets and pods."""
        with self.lock:
            current = self.get("Deployment", namespace, name)
            if dry_run:
                return current
            self._remove("Deployment", namespace, name)
            for rs in self._owned_replicasets(current):
                for pod in self._owned_pods(rs):
                    self._delete_pod(pod)
                self._remove("ReplicaSet", namespace, rs["metadata"]["name"])
            self.reconcile()
            return current

    def scale_of(self, namespace: str, name: str) -> JSON:
        """The autoscaling/v1 Scale of a Deployment."""
        with self.lock:
            dep = self.get("Deployment", namespace, name)
            return self._scale(dep)

    def _scale(self, dep: JSON) -> JSON:
        meta = dep["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": dep["spec"]["replicas"]},
            "status": {
                "replicas": dep.get("status", {}).get("replicas", 0),
                "selector": selector_string(dep["spec"].get("selector")),
            },
        }

    def update_scale(
        self,
        namespace: str,
        name: str,
        mutate: Callable[[JSON], JSON],
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> JSON:
        """Apply ``mutate`` to the Scale and set the Deployment's replicas from it."""
        with self.lock:
            scale = self.scale_of(namespace, name)
            try:
                new = mutate(copy.deepcopy(scale))
            except JSONPatchError as exc:
                raise ApiError(422, "Invalid", str(exc)) from exc
            replicas = (new.get("spec") or {}).get("replicas", 0)
            if isinstance(replicas, bool) or not isinstance(replicas, int):
                raise bad_request(
                    "json: cannot unmarshal into Go struct field ScaleSpec.spec.replicas of type int32"
                )
            if replicas < 0:
                raise invalid(
                    "Scale",
                    name,
                    [("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")],
                    group="autoscaling",
                )
            sent_rv = (new.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != scale["metadata"]["resourceVersion"]:
                raise conflict("Deployment", name)

            def set_replicas(dep: JSON) -> JSON:
                dep["spec"]["replicas"] = replicas
                dep["metadata"].pop("resourceVersion", None)
                return dep

            dep = self.update_deployment(
                namespace,
                name,
                set_replicas,
                dry_run=dry_run,
                field_manager=field_manager,
                subresource="scale",
            )
            result = self._scale(dep)
            return result

    # -- any other kind: the generic object API ---------------------------------------------------

    def register_controller(self, kind: str, sync: Callable[[tuple[str, str]], None]) -> None:
        """Call ``sync((namespace, name))`` for every object of ``kind`` on each reconcile pass (locked)."""
        with self.lock:
            self._controllers[kind] = sync

    def spawn_pod(self, owner: JSON, name: str, template: JSON, labels: Mapping[str, str]) -> JSON:
        """Create a running pod controlled by ``owner`` (a generic kind's controller uses this), scheduled and
        given the scripted behaviour for its image, as the ReplicaSet controller does for its pods."""
        with self.lock:
            ns = owner["metadata"]["namespace"]
            meta = self._new_meta("Pod", ns, name)
            meta["labels"] = {**((template.get("metadata") or {}).get("labels") or {}), **labels}
            annotations = (template.get("metadata") or {}).get("annotations")
            if annotations:
                meta["annotations"] = dict(annotations)
            meta["ownerReferences"] = [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            spec = copy.deepcopy(template.get("spec") or {})
            spec.setdefault("serviceAccountName", "default")
            pod: JSON = {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": {}}
            self._seq += 1
            self._objects["Pod"][(ns, name)] = pod
            behaviour = self._behaviour_for(pod)
            self._runtime[(ns, name)] = _PodRuntime(behaviour, self._seq, behaviour.current_logs())
            kind = owner["kind"].lower()
            self._event(owner, "Normal", "SuccessfulCreate", f"Created pod: {name}", f"{kind}-controller")
            node = self._pick_node(pod)
            if node is None:
                self._set_unschedulable(pod)
            else:
                pod["spec"]["nodeName"] = node
                self._set_pod_status(pod, behaviour)
            self._put("Pod", pod, created=True)
            return pod

    def remove_pod(self, namespace: str, name: str) -> None:
        """Delete a pod at once (a generic kind's controller replacing or scaling down its pods)."""
        with self.lock:
            pod = self._objects["Pod"].get((namespace, name))
            if pod is not None:
                self._delete_pod(pod)

    def store_object(self, kind: str, obj: JSON, *, created: bool = False) -> JSON:
        """Store a controller's write (status, owned objects) without running the API's validation."""
        with self.lock:
            return self._put(kind, obj, created=created)

    def remove_object(self, kind: str, namespace: str, name: str) -> None:
        """Remove an object a controller owns (a pruned ControllerRevision)."""
        with self.lock:
            self._remove(kind, namespace, name)

    def new_meta(self, kind: str, namespace: str, name: str) -> JSON:
        """Fresh metadata (uid, creationTimestamp) for an object a controller creates."""
        with self.lock:
            return self._new_meta(kind, namespace, name)

    def _generic(self, kind: str) -> None:
        if kind not in KINDS or kind in BUILTIN_KINDS:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )

    def create_object(
        self,
        kind: str,
        body: JSON,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> JSON:
        """Create an object of a generic kind (POST: 409 if it exists; status dropped where a subresource)."""
        with self.lock:
            self._generic(kind)
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            ns = (namespace or meta.get("namespace") or "default") if KINDS[kind][2] else ""
            if ns:
                self._require_namespace(ns)
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                raise invalid(kind, "", [("metadata.name", "Required value: name is required")])
            if (ns, name) in self._objects[kind]:
                raise already_exists(kind, name)
            fresh = self._new_meta(kind, ns, name)
            for key in ("labels", "annotations", "ownerReferences"):
                if meta.get(key):
                    fresh[key] = meta[key]
            if "spec" in obj:
                fresh["generation"] = 1
            obj["metadata"] = fresh
            obj["kind"], obj["apiVersion"] = kind, KINDS[kind][0]
            if kind in STATUS_SUBRESOURCE:
                # What a real API server stores for a new object (the typed clients require these fields).
                obj["status"] = {"replicas": 0, "availableReplicas": 0} if kind == "StatefulSet" else {}
            self._set_managed(obj, field_manager or "unknown", "Update")
            if dry_run:
                return obj
            self._put(kind, obj, created=True)
            self.reconcile()
            return self.get(kind, ns, name)

    def update_object(
        self,
        kind: str,
        namespace: str,
        name: str,
        mutate: Callable[[JSON], JSON],
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
        subresource: str | None = None,
    ) -> JSON:
        """Apply ``mutate`` to a copy of a generic object (or only its status, for ``/status``), store it."""
        with self.lock:
            self._generic(kind)
            current = self.get(kind, namespace, name)
            new = self._mutated(kind, name, current, mutate)
            if subresource == "status":
                result = copy.deepcopy(current)
                result["status"] = new.get("status") or {}
                new = result
            else:
                meta = new.get("metadata") or {}
                for key in ("name", "namespace", "uid", "creationTimestamp", "generation", "managedFields"):
                    if key in current["metadata"]:
                        meta[key] = current["metadata"][key]
                meta["resourceVersion"] = current["metadata"]["resourceVersion"]
                new["metadata"] = meta
                if kind in STATUS_SUBRESOURCE:
                    new["status"] = current.get("status", {})
                if "generation" in meta and new.get("spec") != current.get("spec"):
                    meta["generation"] = current["metadata"]["generation"] + 1
            new["kind"], new["apiVersion"] = kind, KINDS[kind][0]
            if new == current:
                return current
            self._set_managed(new, field_manager or "unknown", "Update", subresource)
            if dry_run:
                return new
            self._put(kind, new)
            self.reconcile()
            return self.get(kind, namespace, name)

    def patch_object(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> JSON:
        """PATCH a generic object (or its status) with a json / merge / strategic-merge patch."""
        return self.update_object(
            kind,
            namespace,
            name,
            lambda obj: apply_patch(obj, patch_type, patch),
            dry_run=dry_run,
            field_manager=field_manager,
            subresource=subresource,
        )

    def delete_object(self, kind: str, namespace: str, name: str, *, dry_run: bool = False) -> JSON:
        """Delete a generic object (no cascade: its controller, if any, cleans up what it owns)."""
        with self.lock:
            self._generic(kind)
            current = self.get(kind, namespace, name)
            if dry_run:
                return current
            self._remove(kind, namespace, name)
            self.reconcile()
            return current

    def object_scale(self, kind: str, namespace: str, name: str) -> JSON:
        """The autoscaling/v1 Scale of a generic object with ``spec.replicas`` (StatefulSet, LWS, Rollout)."""
        with self.lock:
            if kind not in SCALE_SUBRESOURCE:
                raise not_found(kind, name)
            obj = self.get(kind, namespace, name)
            scale = self._scale({**obj, "spec": {"replicas": 1, **obj.get("spec", {})}})
            status = obj.get("status") or {}
            if status.get("selector"):
                scale["status"]["selector"] = status["selector"]
            return scale

    def update_object_scale(
        self,
        kind: str,
        namespace: str,
        name: str,
        mutate: Callable[[JSON], JSON],
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> JSON:
        """Apply ``mutate`` to the Scale of a generic object and set its ``spec.replicas`` from it."""
        with self.lock:
            scale = self.object_scale(kind, namespace, name)
            try:
                new = mutate(copy.deepcopy(scale))
            except JSONPatchError as exc:
                raise ApiError(422, "Invalid", str(exc)) from exc
            replicas = (new.get("spec") or {}).get("replicas", 0)
            if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
                raise invalid(
                    "Scale", name, [("spec.replicas", f"Invalid value: {replicas!r}")], group="autoscaling"
                )

            def set_replicas(obj: JSON) -> JSON:
                obj.setdefault("spec", {})["replicas"] = replicas
                return obj

            self.update_object(
                kind,
                namespace,
                name,
                set_replicas,
                dry_run=dry_run,
                field_manager=field_manager,
                subresource="scale",
            )
            return (
                self.object_scale(kind, namespace, name)
                if not dry_run
                else {**scale, "spec": {"replicas": replicas}}
            )

    # -- pods -------------------------------------------------------------------------------------

    def delete_pod(self, namespace: str, name: str, *, dry_run: bool = False) -> JSON:
        """Delete a pod; its ReplicaSet replaces it at once (with the currently scripted behaviour)."""
        with self.lock:
            pod = self.get("Pod", namespace, name)
            pod["metadata"]["deletionTimestamp"] = self._ts()
            pod["metadata"]["deletionGracePeriodSeconds"] = 30
            if dry_run:
                return pod
            self._delete_pod(pod)
            self.reconcile()
            return pod

    def _delete_pod(self, pod: JSON) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self._remove("Pod", *key)
        self._runtime.pop(key, None)

    def pod_logs(
        self,
        namespace: str,
        name: str,
        container: str | None = None,
        tail_lines: int | None = None,
        previous: bool = False,
    ) -> str:
        """The log text of a pod's container, like GET pods/log."""
        with self.lock:
            pod = self.get("Pod", namespace, name)
            names = [c["name"] for c in pod["spec"]["containers"]]
            if container is None:
                if len(names) > 1:
                    raise bad_request(
                        f"a container name must be specified for pod {name}, choose one of: "
                        f"[{' '.join(names)}]"
                    )
                container = names[0]
            elif container not in names:
                raise bad_request(f"container {container} is not valid for pod {name}")
            runtime = self._runtime.get((namespace, name))
            behaviour = runtime.behaviour if runtime else PodBehaviour()
            if pod["status"].get("phase") == "Pending":
                reason = "ContainerCreating"
                for status in pod["status"].get("containerStatuses") or []:
                    reason = (status.get("state", {}).get("waiting") or {}).get("reason", reason)
                raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
            if previous:
                if behaviour.state not in ("crashloop", "oomkilled"):
                    raise bad_request(
                        f'previous terminated container "{container}" in pod "{name}" not found'
                    )
                lines = behaviour.crash_logs()
            else:
                lines = list(runtime.logs) if runtime else behaviour.current_logs()
            if tail_lines is not None:
                lines = lines[-tail_lines:] if tail_lines > 0 else []
            return "".join(line + "\n" for line in lines)

    def append_logs(self, namespace: str, pod: str, lines: Iterable[str]) -> None:
        """Append lines to a pod's current log."""
        with self.lock:
            self.get("Pod", namespace, pod)
            runtime = self._runtime[(namespace, pod)]
            runtime.logs.extend(lines)

    def script_pods(
        self,
        behaviour: PodBehaviour | PodState,
        *,
        namespace: str | None = None,
        deployment: str | None = None,
        image: str | None = None,
        existing: bool = True,
    ) -> None:
        """Script how pods of a deployment (or running an image) behave; re-applies to existing pods."""
        if isinstance(behaviour, str):
            behaviour = PodBehaviour(state=behaviour)
        if deployment is None and image is None:
            raise ValueError("script_pods needs a deployment or an image")
        with self.lock:
            self._scripts.append(_Script(namespace, deployment, image, behaviour))
            if existing:
                for (ns, name), runtime in list(self._runtime.items()):
                    pod = self._objects["Pod"][(ns, name)]
                    new = self._behaviour_for(pod)
                    if new != runtime.behaviour:
                        runtime.behaviour = new
                        runtime.logs = new.current_logs()
                        pod = copy.deepcopy(pod)
                        self._set_pod_status(pod, new)
                        self._put("Pod", pod)
                        self._pod_events(pod, new)
            self.reconcile()

    def _deployment_of(self, pod: JSON) -> str | None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "ReplicaSet":
                rs = self._objects["ReplicaSet"].get((pod["metadata"]["namespace"], ref["name"]))
                if rs is not None:
                    for owner in rs["metadata"].get("ownerReferences") or []:
                        if owner.get("kind") == "Deployment":
                            return str(owner["name"])
        return None

    def _behaviour_for(self, pod: JSON) -> PodBehaviour:
        ns = pod["metadata"]["namespace"]
        deployment = self._deployment_of(pod)
        images = {c.get("image") for c in pod["spec"].get("containers") or []}
        for script in reversed(self._scripts):
            if (
                script.deployment is not None
                and script.deployment == deployment
                and script.namespace in (None, ns)
                and (script.image is None or script.image in images)
            ):
                return script.behaviour
        for script in reversed(self._scripts):
            if script.deployment is None and script.image in images and script.namespace in (None, ns):
                return script.behaviour
        return PodBehaviour()

    # -- hooks for other emulators ----------------------------------------------------------------

    def pods(self, namespace: str, selector: str | Mapping[str, str] | None = None) -> list[JSON]:
        """Pods in ``namespace`` matching a label selector string or a dict of labels."""
        if isinstance(selector, Mapping):
            selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return self.list_objects("Pod", namespace, label_selector=selector or None)

    def deployment_pods(self, namespace: str, name: str) -> list[JSON]:
        """Pods owned (through ReplicaSets) by a Deployment."""
        with self.lock:
            dep = self.get("Deployment", namespace, name)
            return [copy.deepcopy(p) for rs in self._owned_replicasets(dep) for p in self._owned_pods(rs)]

    def ready_replicas(self, namespace: str, name: str) -> int:
        """How many pods of Deployment ``name`` are Ready (0 when it does not exist)."""
        with self.lock:
            try:
                pods = self.deployment_pods(namespace, name)
            except ApiError:
                return 0
            return sum(1 for pod in pods if _pod_ready(pod))

    # -- controllers ------------------------------------------------------------------------------

    def _owned_replicasets(self, dep: JSON) -> list[JSON]:
        ns, uid = dep["metadata"]["namespace"], dep["metadata"]["uid"]
        owned = [
            rs
            for (rs_ns, _), rs in self._objects["ReplicaSet"].items()
            if rs_ns == ns
            and any(
                r.get("uid") == uid and r.get("controller")
                for r in rs["metadata"].get("ownerReferences") or []
            )
        ]
        return sorted(owned, key=lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"]))

    def _owned_pods(self, rs: JSON) -> list[JSON]:
        ns, uid = rs["metadata"]["namespace"], rs["metadata"]["uid"]
        return sorted(
            (
                p
                for (p_ns, _), p in self._objects["Pod"].items()
                if p_ns == ns and any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
            ),
            key=lambda p: (
                self._runtime[(ns, p["metadata"]["name"])].seq
                if (ns, p["metadata"]["name"]) in self._runtime
                else 0
            ),
        )

    def reconcile(self) -> None:
        """Run controllers, scheduler and kubelet until the state stops changing."""
        with self.lock:
            for _ in range(50):
                before = self._rv
                self._schedule_pending()
                for key in sorted(self._objects["Deployment"]):
                    if key in self._objects["Deployment"]:
                        self._sync_deployment(key)
                for kind, sync in list(self._controllers.items()):
                    for key in sorted(self._objects[kind]):
                        if key in self._objects[kind]:
                            sync(key)
                if self._rv == before:
                    return

    def _sync_deployment(self, key: tuple[str, str]) -> None:
        dep = copy.deepcopy(self._objects["Deployment"][key])
        spec = dep["spec"]
        desired = spec["replicas"]
        owned = self._owned_replicasets(dep)
        new_rs = next((rs for rs in owned if _strip_hash(rs["spec"]["template"]) == spec["template"]), None)
        olds = [rs for rs in owned if rs is not new_rs]
        paused = bool(spec.get("paused"))
        max_old = max((_revision(rs) for rs in olds), default=0)
        if not paused:
            if new_rs is None:
                new_rs = self._create_replicaset(dep, max_old + 1)
            elif _revision(new_rs) <= max_old:
                new_rs = self._bump_revision(new_rs, max_old + 1)
        if new_rs is not None and not paused:
            new_rs = self._sync_new_rs_annotations(dep, new_rs)
        if new_rs is not None:
            rev = str(_revision(new_rs))
            annotations = dep["metadata"].setdefault("annotations", {})
            if annotations.get(REVISION) != rev and not paused:
                annotations[REVISION] = rev
        if paused:
            active = [rs for rs in owned if rs["spec"]["replicas"] > 0]
            target = new_rs or (active[-1] if active else (owned[-1] if owned else None))
            if target is not None and len(active) <= 1:
                self._scale_rs(target, desired, dep)
        elif spec["strategy"]["type"] == "Recreate":
            assert new_rs is not None
            for rs in olds:
                self._scale_rs(rs, 0, dep)
            self._scale_rs(new_rs, desired, dep)
        else:
            assert new_rs is not None
            self._rolling_update(dep, new_rs, olds)
        self._cleanup_history(dep)
        self._update_deployment_status(dep, new_rs, paused)

    def _rolling_update(self, dep: JSON, new_rs: JSON, olds: list[JSON]) -> None:
        ns = dep["metadata"]["namespace"]
        desired = dep["spec"]["replicas"]
        rolling = dep["spec"]["strategy"].get("rollingUpdate") or {}
        surge = _int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1

        def fresh(rs: JSON) -> JSON:
            return self._objects["ReplicaSet"][(ns, rs["metadata"]["name"])]

        for _ in range(4 * (desired + 2)):
            new_rs = fresh(new_rs)
            olds = [fresh(rs) for rs in olds]
            before = self._rv
            all_rs = [new_rs, *olds]
            total = sum(rs["spec"]["replicas"] for rs in all_rs)
            if new_rs["spec"]["replicas"] > desired:
                self._scale_rs(new_rs, desired, dep)
            elif new_rs["spec"]["replicas"] < desired:
                room = desired + surge - total
                if room > 0:
                    self._scale_rs(new_rs, min(desired, new_rs["spec"]["replicas"] + room), dep)
            new_rs = fresh(new_rs)
            min_available = desired - unavailable
            all_pods = sum(rs["spec"]["replicas"] for rs in [new_rs, *olds])
            new_unavailable = new_rs["spec"]["replicas"] - self._available(new_rs)
            budget = all_pods - min_available - new_unavailable
            for old in olds:
                if budget <= 0:
                    break
                old = fresh(old)
                unhealthy = old["spec"]["replicas"] - self._available(old)
                if unhealthy > 0:
                    cut = min(budget, unhealthy)
                    self._scale_rs(old, old["spec"]["replicas"] - cut, dep)
                    budget -= cut
            olds = [fresh(rs) for rs in olds]
            available = sum(self._available(rs) for rs in [new_rs, *olds])
            budget = available - min_available
            for old in olds:
                if budget <= 0:
                    break
                if old["spec"]["replicas"] == 0:
                    continue
                cut = min(budget, old["spec"]["replicas"])
                self._scale_rs(old, old["spec"]["replicas"] - cut, dep)
                budget -= cut
            if self._rv == before:
                break

    def _available(self, rs: JSON) -> int:
        return sum(1 for p in self._owned_pods(rs) if _pod_ready(p))

    def _create_replicaset(self, dep: JSON, revision: int) -> JSON:
        ns = dep["metadata"]["namespace"]
        template = copy.deepcopy(dep["spec"]["template"])
        collision = 0
        while True:
            pod_hash = template_hash(template, collision)
            name = f"{dep['metadata']['name']}-{pod_hash}"
            if (ns, name) not in self._objects["ReplicaSet"]:
                break
            collision += 1
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(dep["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        meta = self._new_meta("ReplicaSet", ns, name)
        meta["generation"] = 1
        meta["labels"] = dict(template["metadata"]["labels"])
        meta["annotations"] = self._rs_annotations(dep, revision)
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": dep["metadata"]["name"],
                "uid": dep["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        rs: JSON = {
            "kind": "ReplicaSet",
            "apiVersion": "apps/v1",
            "metadata": meta,
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0},
        }
        if dep["spec"].get("minReadySeconds"):
            rs["spec"]["minReadySeconds"] = dep["spec"]["minReadySeconds"]
        self._put("ReplicaSet", rs, created=True)
        return rs

    def _rs_annotations(
        self, dep: JSON, revision: int, old: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        annotations = dict(old or {})
        for key, value in (dep["metadata"].get("annotations") or {}).items():
            if key not in _SKIP_RS_ANNOTATIONS:
                annotations[key] = value
        desired = dep["spec"]["replicas"]
        rolling = dep["spec"]["strategy"].get("rollingUpdate") or {}
        surge = (
            _int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
            if dep["spec"]["strategy"]["type"] == "RollingUpdate"
            else 0
        )
        annotations[DESIRED_REPLICAS] = str(desired)
        annotations[MAX_REPLICAS] = str(desired + surge)
        annotations[REVISION] = str(revision)
        return annotations

    def _bump_revision(self, rs: JSON, revision: int) -> JSON:
        rs = copy.deepcopy(rs)
        annotations = rs["metadata"].setdefault("annotations", {})
        old = annotations.get(REVISION)
        if old:
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            annotations[REVISION_HISTORY] = ",".join([*history, old])
        annotations[REVISION] = str(revision)
        return self._put("ReplicaSet", rs)

    def _scale_rs(self, rs: JSON, replicas: int, dep: JSON) -> None:
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        rs = copy.deepcopy(self._objects["ReplicaSet"][(ns, name)])
        old = rs["spec"]["replicas"]
        if old != replicas:
            rs["spec"]["replicas"] = replicas
            rs["metadata"]["generation"] += 1
            annotations = rs["metadata"].setdefault("annotations", {})
            wanted = self._rs_annotations(dep, _revision(rs))
            annotations[DESIRED_REPLICAS] = wanted[DESIRED_REPLICAS]
            annotations[MAX_REPLICAS] = wanted[MAX_REPLICAS]
            verb = "up" if replicas > old else "down"
            self._event(
                dep,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {verb} replica set {name} from {old} to {replicas}",
                "deployment-controller",
            )
            self._put("ReplicaSet", rs)
        self._sync_replicaset(rs)

    def _sync_new_rs_annotations(self, dep: JSON, rs: JSON) -> JSON:
        annotations = rs["metadata"].get("annotations") or {}
        wanted = self._rs_annotations(dep, _revision(rs), annotations)
        if wanted == annotations:
            return rs
        rs = copy.deepcopy(rs)
        rs["metadata"]["annotations"] = wanted
        return self._put("ReplicaSet", rs)

    def _sync_replicaset(self, rs: JSON) -> None:
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        pods = self._owned_pods(rs)
        want = rs["spec"]["replicas"]
        if len(pods) < want:
            for _ in range(want - len(pods)):
                self._create_pod(rs)
        elif len(pods) > want:
            victims = sorted(
                pods, key=lambda p: (_pod_rank(p), -self._runtime[(ns, p["metadata"]["name"])].seq)
            )
            for pod in victims[: len(pods) - want]:
                self._delete_pod(pod)
                self._event(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    "replicaset-controller",
                )
        pods = self._owned_pods(rs)
        status: JSON = {"replicas": len(pods)}
        if pods:
            status["fullyLabeledReplicas"] = len(pods)
        ready = sum(1 for p in pods if _pod_ready(p))
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        status["observedGeneration"] = rs["metadata"]["generation"]
        current = self._objects["ReplicaSet"][(ns, name)]
        if current.get("status") != status:
            updated = copy.deepcopy(current)
            updated["status"] = status
            self._put("ReplicaSet", updated)

    def _create_pod(self, rs: JSON) -> None:
        ns = rs["metadata"]["namespace"]
        template = rs["spec"]["template"]
        while True:
            name = f"{rs['metadata']['name']}-{self._suffix()}"
            if (ns, name) not in self._objects["Pod"]:
                break
        meta = self._new_meta("Pod", ns, name)
        meta["generateName"] = f"{rs['metadata']['name']}-"
        meta["labels"] = dict(template["metadata"].get("labels") or {})
        if template["metadata"].get("annotations"):
            meta["annotations"] = dict(template["metadata"]["annotations"])
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": rs["metadata"]["name"],
                "uid": rs["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        spec = copy.deepcopy(template["spec"])
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        spec.setdefault(
            "tolerations",
            [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
        )
        pod: JSON = {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": {}}
        self._seq += 1
        self._runtime[(ns, name)] = _PodRuntime(PodBehaviour(), self._seq)
        self._objects["Pod"][(ns, name)] = pod  # visible to _behaviour_for's owner lookup
        behaviour = self._behaviour_for(pod)
        self._runtime[(ns, name)] = _PodRuntime(behaviour, self._seq, behaviour.current_logs())
        self._event(rs, "Normal", "SuccessfulCreate", f"Created pod: {name}", "replicaset-controller")
        node = self._pick_node(pod)
        if node is None:
            self._set_unschedulable(pod)
            self._put("Pod", pod, created=True)
            self._event(
                pod,
                "Warning",
                "FailedScheduling",
                pod["status"]["conditions"][0]["message"],
                "default-scheduler",
            )
            return
        pod["spec"]["nodeName"] = node
        self._set_pod_status(pod, behaviour)
        self._put("Pod", pod, created=True)
        self._event(
            pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {node}", "default-scheduler"
        )
        self._pod_events(pod, behaviour)

    def _pick_node(self, pod: JSON) -> str | None:
        need = gpu_request(pod["spec"])
        nodes = sorted(self._objects["Node"].values(), key=lambda n: n["metadata"]["name"])
        if not nodes:
            return None
        for node in nodes:
            name = node["metadata"]["name"]
            capacity = int(node["status"]["allocatable"].get(GPU, "0"))
            used = sum(
                gpu_request(p["spec"])
                for p in self._objects["Pod"].values()
                if p["spec"].get("nodeName") == name and p is not pod
            )
            if capacity - used >= need:
                return str(name)
        return None

    def _set_unschedulable(self, pod: JSON) -> None:
        nodes = len(self._objects["Node"])
        if nodes == 0:
            message = "no nodes available to schedule pods"
        else:
            message = (
                f"0/{nodes} nodes are available: {nodes} Insufficient {GPU}. preemption: 0/{nodes} nodes "
                f"are available: {nodes} No preemption victims found for incoming pod."
            )
        pod["status"] = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": self._ts(),
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
            "qosClass": _qos(pod["spec"]),
        }

    def _schedule_pending(self) -> None:
        pending = [
            p
            for p in self._objects["Pod"].values()
            if not p["spec"].get("nodeName") and p["status"].get("phase") == "Pending"
        ]
        pending.sort(key=lambda p: self._runtime[(p["metadata"]["namespace"], p["metadata"]["name"])].seq)
        for pod in pending:
            node = self._pick_node(pod)
            if node is None:
                continue
            pod = copy.deepcopy(pod)
            pod["spec"]["nodeName"] = node
            runtime = self._runtime[(pod["metadata"]["namespace"], pod["metadata"]["name"])]
            self._set_pod_status(pod, runtime.behaviour)
            self._put("Pod", pod)
            self._event(
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} to {node}",
                "default-scheduler",
            )
            self._pod_events(pod, runtime.behaviour)

    def _set_pod_status(self, pod: JSON, behaviour: PodBehaviour) -> None:
        if not pod["spec"].get("nodeName"):
            self._set_unschedulable(pod)
            return
        now = self._ts()
        started = pod["metadata"]["creationTimestamp"]
        ready = behaviour.state == "running"
        node_index = sorted(self._objects["Node"]).index(("", pod["spec"]["nodeName"])) + 1
        seq = self._runtime[(pod["metadata"]["namespace"], pod["metadata"]["name"])].seq
        statuses = []
        for container in pod["spec"]["containers"]:
            cid = "containerd://" + uuid.UUID(int=self._rng.getrandbits(128)).hex * 2
            status: JSON = {
                "name": container["name"],
                "state": {},
                "lastState": {},
                "ready": ready,
                "restartCount": 0,
                "image": container["image"],
                "imageID": "",
                "started": False,
            }
            if behaviour.state in ("running", "not_ready"):
                status["state"] = {"running": {"startedAt": started}}
                status["imageID"] = f"{container['image'].split(':')[0]}@sha256:" + "ab" * 32
                status["containerID"] = cid
                status["started"] = True
            elif behaviour.state in ("crashloop", "oomkilled"):
                oom = behaviour.state == "oomkilled"
                status["restartCount"] = behaviour.restart_count
                status["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 5m0s restarting failed container={container['name']} "
                        f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}"
                        f"({pod['metadata']['uid']})",
                    }
                }
                status["lastState"] = {
                    "terminated": {
                        "exitCode": behaviour.exit_code
                        if behaviour.exit_code is not None
                        else (137 if oom else 1),
                        "reason": "OOMKilled" if oom else "Error",
                        "startedAt": started,
                        "finishedAt": now,
                        "containerID": cid,
                    }
                }
                status["imageID"] = f"{container['image'].split(':')[0]}@sha256:" + "ab" * 32
                status["containerID"] = cid
            else:
                status["state"] = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{container["image"]}"',
                    }
                }
            statuses.append(status)
        phase = "Pending" if behaviour.state == "image_pull_backoff" else "Running"
        not_ready_names = " ".join(c["name"] for c in pod["spec"]["containers"])

        def condition(kind: str, ok: bool) -> JSON:
            cond: JSON = {
                "type": kind,
                "status": "True" if ok else "False",
                "lastProbeTime": None,
                "lastTransitionTime": started,
            }
            if not ok:
                cond["reason"] = "ContainersNotReady"
                cond["message"] = f"containers with unready status: [{not_ready_names}]"
            return cond

        pod["status"] = {
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", phase == "Running"),
                condition("Initialized", True),
                condition("Ready", ready),
                condition("ContainersReady", ready),
                condition("PodScheduled", True),
            ],
            "hostIP": f"10.0.0.{node_index}",
            "hostIPs": [{"ip": f"10.0.0.{node_index}"}],
            "podIP": f"10.244.{node_index}.{seq % 250 + 2}",
            "podIPs": [{"ip": f"10.244.{node_index}.{seq % 250 + 2}"}],
            "startTime": started,
            "containerStatuses": statuses,
            "qosClass": _qos(pod["spec"]),
        }
        for cond in pod["status"]["conditions"]:
            if cond["status"] == "True":
                cond.pop("reason", None)
                cond.pop("message", None)
        if phase == "Pending":
            pod["status"].pop("podIP")
            pod["status"].pop("podIPs")
            pod["status"]["conditions"][0].pop("reason", None)
            pod["status"]["conditions"][0].pop("message", None)

    def _pod_events(self, pod: JSON, behaviour: PodBehaviour) -> None:
        if not pod["spec"].get("nodeName"):
            return
        for container in pod["spec"]["containers"]:
            path = f"spec.containers{{{container['name']}}}"
            image = container["image"]
            if behaviour.state == "image_pull_backoff":
                self._event(
                    pod,
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": not found',
                    "kubelet",
                    field_path=path,
                )
                self._event(
                    pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', "kubelet", field_path=path
                )
                continue
            self._event(
                pod,
                "Normal",
                "Pulled",
                f'Container image "{image}" already present on machine',
                "kubelet",
                field_path=path,
            )
            self._event(
                pod, "Normal", "Created", f"Created container {container['name']}", "kubelet", field_path=path
            )
            self._event(
                pod, "Normal", "Started", f"Started container {container['name']}", "kubelet", field_path=path
            )
            if behaviour.state in ("crashloop", "oomkilled"):
                self._event(
                    pod,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {container['name']} in pod "
                    f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
                    "kubelet",
                    field_path=path,
                    count=behaviour.restart_count,
                )
            elif behaviour.state == "not_ready":
                self._event(
                    pod,
                    "Warning",
                    "Unhealthy",
                    "Readiness probe failed: HTTP probe failed with statuscode: 503",
                    "kubelet",
                    field_path=path,
                )

    def _event(
        self,
        obj: JSON,
        type_: str,
        reason: str,
        message: str,
        component: str,
        *,
        field_path: str | None = None,
        count: int = 1,
    ) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "default")
        key = (meta["uid"], reason, message)
        now = self._ts()
        existing_key = self._event_keys.get(key)
        if existing_key is not None and existing_key in self._objects["Event"]:
            event = copy.deepcopy(self._objects["Event"][existing_key])
            event["count"] += count
            event["lastTimestamp"] = now
            self._put("Event", event)
            return
        involved: JSON = {
            "kind": obj["kind"],
            "namespace": ns,
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": obj["apiVersion"],
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        self._seq += 1
        event_meta = self._new_meta("Event", ns, f"{meta['name']}.{self._seq:016x}")
        source: JSON = {"component": component}
        if component == "kubelet" and obj.get("spec", {}).get("nodeName"):
            source["host"] = obj["spec"]["nodeName"]
        event = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": event_meta,
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": count,
            "type": type_,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": source.get("host", ""),
        }
        self._put("Event", event, created=True)
        self._event_keys[key] = (ns, event_meta["name"])

    def events(
        self, namespace: str, *, involved_name: str | None = None, reason: str | None = None
    ) -> list[JSON]:
        """Events in ``namespace``, optionally only those about ``involved_name`` or with ``reason``."""
        terms = []
        if involved_name:
            terms.append(f"involvedObject.name={involved_name}")
        if reason:
            terms.append(f"reason={reason}")
        return self.list_objects("Event", namespace, field_selector=",".join(terms) or None)

    def _cleanup_history(self, dep: JSON) -> None:
        limit = dep["spec"].get("revisionHistoryLimit", 10)
        ns = dep["metadata"]["namespace"]
        idle = [
            rs
            for rs in self._owned_replicasets(dep)
            if rs["spec"]["replicas"] == 0
            and rs["status"].get("replicas", 0) == 0
            and _strip_hash(rs["spec"]["template"]) != dep["spec"]["template"]
        ]
        idle.sort(key=_revision)
        for rs in idle[: max(0, len(idle) - limit)]:
            self._remove("ReplicaSet", ns, rs["metadata"]["name"])

    def _update_deployment_status(self, dep: JSON, new_rs: JSON | None, paused: bool) -> None:
        key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
        current = self._objects["Deployment"][key]
        owned = self._owned_replicasets(dep)
        desired = dep["spec"]["replicas"]
        replicas = sum(len(self._owned_pods(rs)) for rs in owned)
        updated = len(self._owned_pods(new_rs)) if new_rs is not None else 0
        ready = sum(self._available(rs) for rs in owned)
        rolling = dep["spec"]["strategy"].get("rollingUpdate") or {}
        max_unavailable = (
            _int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
            if dep["spec"]["strategy"]["type"] == "RollingUpdate"
            else 0
        )
        status: JSON = {"observedGeneration": dep["metadata"]["generation"]}
        if replicas:
            status["replicas"] = replicas
        if updated:
            status["updatedReplicas"] = updated
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        unavailable = sum(rs["spec"]["replicas"] for rs in owned) - ready
        if unavailable > 0:
            status["unavailableReplicas"] = unavailable
        old_conditions = {c["type"]: c for c in (current.get("status") or {}).get("conditions", [])}
        available_ok = ready >= desired - max_unavailable
        conditions = [
            self._condition(
                old_conditions.get("Available"),
                "Available",
                available_ok,
                "MinimumReplicasAvailable" if available_ok else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available_ok
                else "Deployment does not have minimum availability.",
            ),
        ]
        rs_name = new_rs["metadata"]["name"] if new_rs is not None else ""
        complete = updated == desired and replicas == updated and ready == updated
        previous = old_conditions.get("Progressing")
        if paused:
            progressing = self._condition(
                previous, "Progressing", None, "DeploymentPaused", "Deployment is paused"
            )
        elif complete:
            progressing = self._condition(
                previous,
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            old_status = current.get("status") or {}
            same_rollout = (
                previous is not None
                and previous.get("reason") in ("ReplicaSetUpdated", "ProgressDeadlineExceeded")
                and f'"{rs_name}"' in str(previous.get("message"))
                and old_status.get("updatedReplicas") == status.get("updatedReplicas")
                and old_status.get("availableReplicas") == status.get("availableReplicas")
            )
            if previous is not None and same_rollout:
                last = dt.datetime.strptime(str(previous["lastUpdateTime"]), "%Y-%m-%dT%H:%M:%SZ")
                waited = (self.now() - last.replace(tzinfo=dt.UTC)).total_seconds()
                if previous.get("reason") == "ProgressDeadlineExceeded" or waited > dep["spec"].get(
                    "progressDeadlineSeconds", 600
                ):
                    progressing = self._condition(
                        previous,
                        "Progressing",
                        False,
                        "ProgressDeadlineExceeded",
                        f'ReplicaSet "{rs_name}" has timed out progressing.',
                    )
                else:
                    progressing = dict(previous)
            else:
                progressing = self._condition(
                    previous,
                    "Progressing",
                    True,
                    "ReplicaSetUpdated",
                    f'ReplicaSet "{rs_name}" is progressing.',
                    fresh=True,
                )
        conditions.append(progressing)
        status["conditions"] = conditions
        if current.get("status") != status or current["metadata"].get("annotations") != dep["metadata"].get(
            "annotations"
        ):
            updated_dep = copy.deepcopy(current)
            updated_dep["status"] = status
            if dep["metadata"].get("annotations") is not None:
                updated_dep["metadata"]["annotations"] = dep["metadata"]["annotations"]
            self._put("Deployment", updated_dep)

    def _condition(
        self,
        previous: JSON | None,
        kind: str,
        ok: bool | None,
        reason: str,
        message: str,
        *,
        fresh: bool = False,
    ) -> JSON:
        status = "Unknown" if ok is None else ("True" if ok else "False")
        now = self._ts()
        if (
            previous
            and previous.get("status") == status
            and previous.get("reason") == reason
            and previous.get("message") == message
            and not fresh
        ):
            return dict(previous)
        transition = previous["lastTransitionTime"] if previous and previous.get("status") == status else now
        update = now
        return {
            "type": kind,
            "status": status,
            "lastUpdateTime": update,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }

    # -- seeding ----------------------------------------------------------------------------------

    def seed_llmd(
        self,
        namespace: str = "llm-d",
        *,
        image: str = "vllm/vllm-openai:v0.8.5",
        decode_replicas: int = 2,
        prefill_replicas: int = 1,
        gpus_per_pod: int = 1,
        gpu_nodes: int = 1,
        gpus_per_node: int = 8,
        model: str = "meta-llama/Llama-3.1-8B-Instruct",
    ) -> list[JSON]:
        """Seed an llm-d style namespace: GPU nodes plus ``vllm-decode`` and ``vllm-prefill`` Deployments."""
        with self.lock:
            self.add_namespace(namespace)
            existing = {n["metadata"]["name"] for n in self._objects["Node"].values()}
            for index in range(gpu_nodes):
                name = f"gpu-node-{index + 1}"
                if name not in existing:
                    self.add_node(name, gpus=gpus_per_node)
            created = []
            for role, replicas in (("decode", decode_replicas), ("prefill", prefill_replicas)):
                created.append(
                    self.create_deployment(
                        vllm_deployment(
                            f"vllm-{role}",
                            role=role,
                            image=image,
                            replicas=replicas,
                            gpus=gpus_per_pod,
                            model=model,
                        ),
                        namespace,
                        field_manager="sandbox-seed",
                    )
                )
            self.create_object(
                "InferencePool",
                {
                    "metadata": {"name": "llm-d-pool"},
                    "spec": {
                        "selector": {"matchLabels": {"llm-d.ai/inferenceServing": "true"}},
                        "targetPorts": [{"number": 8000}],
                        "endpointPickerRef": {"name": "llm-d-epp", "port": {"number": 9002}},
                    },
                },
                namespace,
            )
            return created


def vllm_deployment(
    name: str,
    *,
    role: str = "decode",
    image: str = "vllm/vllm-openai:v0.8.5",
    replicas: int = 2,
    gpus: int = 1,
    model: str = "meta-llama/Llama-3.1-8B-Instruct",
) -> JSON:
    """A Deployment manifest for one vLLM role of an llm-d model server."""
    labels = {
        "app.kubernetes.io/name": name,
        "llm-d.ai/role": role,
        "llm-d.ai/inferenceServing": "true",
        "llm-d.ai/model": model_label(model),
    }
    container: JSON = {
        "name": "vllm",
        "image": image,
        "args": ["--model", model, "--port", "8000"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5},
    }
    if gpus:
        container["resources"] = {"limits": {GPU: str(gpus)}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}},
        },
    }


def apply_patch(obj: JSON, patch_type: str, patch: Any) -> JSON:
    """Apply a PATCH body of the given content type to ``obj``."""
    if patch_type == "application/json-patch+json":
        result = json_patch(obj, patch)
    elif patch_type == "application/merge-patch+json":
        result = merge_patch(obj, patch)
    elif patch_type == "application/strategic-merge-patch+json":
        result = strategic_merge_patch(obj, patch)
    else:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - "
            f"accepted media types include: application/json-patch+json, application/merge-patch+json, "
            f"application/strategic-merge-patch+json (got {patch_type})",
        )
    if not isinstance(result, dict):
        raise bad_request("the patch did not produce an object")
    return result


def _revision(rs: JSON) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _pod_ready(pod: JSON) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in pod["status"].get("conditions") or []
    )


def _pod_rank(pod: JSON) -> int:
    if not pod["spec"].get("nodeName"):
        return 0
    if pod["status"].get("phase") == "Pending":
        return 1
    return 2 if not _pod_ready(pod) else 3


def _qos(spec: Mapping[str, Any]) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get("cpu")
        and (r.get("limits") or {}).get("memory")
        and (r.get("requests") or {}) == (r.get("limits") or {})
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"
