"""Kubernetes adapter: the only module of the bot that imports the official ``kubernetes`` client.

Every call goes through :meth:`KubeClient._call`, which turns vendor failures into the project's tree::

    IncidentBotError
    ├── TransientError
    │   ├── KubeUnavailable     5xx, 429, connection refused/reset, timeouts
    │   └── KubeConflict        409 (someone else changed the object; re-read and retry)
    └── PermanentError
        ├── KubeNotFound        404
        ├── KubeUnauthorized    401 even after reloading credentials once
        ├── KubeRejected        400, 422 and other 4xx, with the server's message
        │   └── KubeForbidden   403 (RBAC)
        ├── NamespaceNotAllowed the namespace is outside KUBE_ALLOWED_NAMESPACES
        ├── RolloutPaused       restart/undo of a paused Deployment
        └── NoRolloutHistory    undo without a previous (or the requested) revision

Responses are read as plain JSON (``_preload_content=False``) and summarised into small frozen
dataclasses, so callers never hold vendor objects and unknown fields of newer servers survive an undo.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as _k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from bot.errors import ConfigError, PermanentError, TransientError
from bot.settings import Settings

JSON = dict[str, Any]
T = TypeVar("T")

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
CHANGE_CAUSE = "kubernetes.io/change-cause"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
# Annotations kubectl keeps from the Deployment (not the ReplicaSet) when rolling back.
_ROLLBACK_KEEP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
ConfigMode = Literal["auto", "in-cluster", "kubeconfig"]
# The config loaders and ApiClient.close carry no annotations; call them through Any.
k8s_config: Any = _k8s_config


# --- errors --------------------------------------------------------------------------------------


class _KubeErrorMixin:
    status: int | None = None
    reason: str | None = None


class KubeUnavailable(_KubeErrorMixin, TransientError):
    """The API server is unreachable, overloaded (429) or failing (5xx)."""


class KubeConflict(_KubeErrorMixin, TransientError):
    """409: the object changed under us; re-read and retry."""


class KubeNotFound(_KubeErrorMixin, PermanentError):
    """404: the object (or namespace) does not exist."""


class KubeUnauthorized(_KubeErrorMixin, PermanentError):
    """401 even after reloading the credentials."""


class KubeRejected(_KubeErrorMixin, PermanentError):
    """The server refused the request (400, 422, other 4xx); the message says why."""


class KubeForbidden(KubeRejected):
    """403: RBAC does not allow the call."""


class NamespaceNotAllowed(PermanentError):
    """The namespace is not in the configured allow-list."""


class RolloutPaused(PermanentError):
    """Restart and undo refuse a paused Deployment, as kubectl does."""


class NoRolloutHistory(PermanentError):
    """There is no previous revision (or not the requested one) to roll back to."""


def _server_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{exc.status} {exc.reason or ''}".strip()


def map_api_exception(exc: ApiException, action: str) -> Exception:
    """Translate a client ApiException into the project's error tree."""
    status = int(exc.status or 0)
    message = f"{action}: {_server_message(exc)}"
    error: _KubeErrorMixin
    if status == 404:
        error = KubeNotFound(message)
    elif status == 409:
        error = KubeConflict(message)
    elif status == 429 or status >= 500 or status == 0:
        error = KubeUnavailable(message)
    elif status == 401:
        error = KubeUnauthorized(message)
    elif status == 403:
        error = KubeForbidden(message)
    else:
        error = KubeRejected(message)
    error.status = status or None
    error.reason = exc.reason
    assert isinstance(error, Exception)
    return error


# --- value objects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentSummary:
    """What runbooks need to know about a Deployment."""

    name: str
    namespace: str
    replicas: int
    ready_replicas: int
    available_replicas: int
    updated_replicas: int
    total_replicas: int
    unavailable_replicas: int
    paused: bool
    revision: int | None
    generation: int
    observed_generation: int
    images: tuple[str, ...]
    selector: str
    progressing_reason: str | None
    resource_version: str


@dataclass(frozen=True)
class ScaleResult:
    """Outcome of a scale call."""

    name: str
    namespace: str
    previous_replicas: int
    replicas: int
    dry_run: bool


@dataclass(frozen=True)
class RevisionInfo:
    """One entry of a Deployment's rollout history (one owned ReplicaSet)."""

    revision: int
    replicaset: str
    created: dt.datetime | None
    images: tuple[str, ...]
    change_cause: str | None
    replicas: int
    template: Mapping[str, Any]


@dataclass(frozen=True)
class UndoResult:
    """Outcome of a rollout undo."""

    name: str
    namespace: str
    from_revision: int | None
    to_revision: int
    changed: bool
    dry_run: bool
    images: tuple[str, ...]
    source: str = "replicaset"
    """Where the target template came from: replicaset, controllerrevision, or a Helm release."""


@dataclass(frozen=True)
class RolloutStatus:
    """Whether a rollout is complete, computed as ``kubectl rollout status`` does."""

    name: str
    namespace: str
    complete: bool
    deadline_exceeded: bool
    message: str
    generation: int
    observed_generation: int
    replicas: int
    updated_replicas: int
    available_replicas: int
    total_replicas: int


@dataclass(frozen=True)
class ContainerSummary:
    """One container's state in a pod."""

    name: str
    image: str
    ready: bool
    restart_count: int
    state: Literal["running", "waiting", "terminated", "unknown"]
    waiting_reason: str | None
    last_terminated_reason: str | None
    last_exit_code: int | None


@dataclass(frozen=True)
class PodSummary:
    """A pod's health in the terms an incident responder uses."""

    name: str
    namespace: str
    phase: str
    ready: bool
    restarts: int
    node: str | None
    pod_ip: str | None
    created: dt.datetime | None
    waiting_reason: str | None
    last_terminated_reason: str | None
    unschedulable_message: str | None
    insufficient_resources: tuple[str, ...]
    containers: tuple[ContainerSummary, ...]
    labels: Mapping[str, str]

    @property
    def status(self) -> str:
        """One word like kubectl's STATUS column: CrashLoopBackOff, Pending, Running …"""
        return self.waiting_reason or self.phase

    @property
    def oom_killed(self) -> bool:
        """Whether a container's last run ended OOMKilled."""
        return any(c.last_terminated_reason == "OOMKilled" for c in self.containers)

    @property
    def pending_for_gpu(self) -> bool:
        """Whether the scheduler cannot place the pod for lack of ``nvidia.com/gpu``."""
        return "nvidia.com/gpu" in self.insufficient_resources


@dataclass(frozen=True)
class EventSummary:
    """A core/v1 Event."""

    type: str
    reason: str
    message: str
    object_kind: str
    object_name: str
    count: int
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    source: str


# --- helpers -------------------------------------------------------------------------------------


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def label_selector_string(selector: Mapping[str, Any] | None) -> str:
    """Render a LabelSelector as a selector string (what kubectl sends as ``labelSelector``)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        values = ",".join(sorted(expr.get("values") or []))
        op = expr.get("operator")
        if op == "In":
            parts.append(f"{expr['key']} in ({values})")
        elif op == "NotIn":
            parts.append(f"{expr['key']} notin ({values})")
        elif op == "Exists":
            parts.append(str(expr["key"]))
        elif op == "DoesNotExist":
            parts.append(f"!{expr['key']}")
    return ",".join(sorted(parts))


def _images(template: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or [])


def summarize_deployment(obj: Mapping[str, Any]) -> DeploymentSummary:
    """Build a DeploymentSummary from a Deployment's JSON."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    annotations = meta.get("annotations") or {}
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None)
    revision = annotations.get(REVISION)
    return DeploymentSummary(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        replicas=_int(spec.get("replicas", 1)),
        ready_replicas=_int(status.get("readyReplicas")),
        available_replicas=_int(status.get("availableReplicas")),
        updated_replicas=_int(status.get("updatedReplicas")),
        total_replicas=_int(status.get("replicas")),
        unavailable_replicas=_int(status.get("unavailableReplicas")),
        paused=bool(spec.get("paused")),
        revision=_int(revision) if revision is not None else None,
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        images=_images(spec.get("template") or {}),
        selector=label_selector_string(spec.get("selector")),
        progressing_reason=progressing.get("reason") if progressing else None,
        resource_version=str(meta.get("resourceVersion", "")),
    )


def rollout_status_of(obj: Mapping[str, Any]) -> RolloutStatus:
    """Decide whether a Deployment's rollout is complete, with kubectl's wording."""
    d = summarize_deployment(obj)
    conditions = (obj.get("status") or {}).get("conditions") or []
    exceeded = any(
        c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded" for c in conditions
    )
    complete = False
    if d.generation <= d.observed_generation:
        if exceeded:
            message = f'deployment "{d.name}" exceeded its progress deadline'
        elif d.updated_replicas < d.replicas:
            message = (
                f'Waiting for deployment "{d.name}" rollout to finish: {d.updated_replicas} out of '
                f"{d.replicas} new replicas have been updated..."
            )
        elif d.total_replicas > d.updated_replicas:
            message = (
                f'Waiting for deployment "{d.name}" rollout to finish: '
                f"{d.total_replicas - d.updated_replicas} old replicas are pending termination..."
            )
        elif d.available_replicas < d.updated_replicas:
            message = (
                f'Waiting for deployment "{d.name}" rollout to finish: {d.available_replicas} of '
                f"{d.updated_replicas} updated replicas are available..."
            )
        else:
            complete = True
            message = f'deployment "{d.name}" successfully rolled out'
    else:
        message = "Waiting for deployment spec update to be observed..."
    return RolloutStatus(
        name=d.name,
        namespace=d.namespace,
        complete=complete,
        deadline_exceeded=exceeded,
        message=message,
        generation=d.generation,
        observed_generation=d.observed_generation,
        replicas=d.replicas,
        updated_replicas=d.updated_replicas,
        available_replicas=d.available_replicas,
        total_replicas=d.total_replicas,
    )


_INSUFFICIENT = re.compile(r"Insufficient ([A-Za-z0-9./_-]*[A-Za-z0-9_-])")


def summarize_pod(obj: Mapping[str, Any]) -> PodSummary:
    """Build a PodSummary from a Pod's JSON."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    containers = []
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        kind: Literal["running", "waiting", "terminated", "unknown"] = (
            "running"
            if "running" in state
            else "waiting"
            if "waiting" in state
            else "terminated"
            if "terminated" in state
            else "unknown"
        )
        containers.append(
            ContainerSummary(
                name=str(cs.get("name", "")),
                image=str(cs.get("image", "")),
                ready=bool(cs.get("ready")),
                restart_count=_int(cs.get("restartCount")),
                state=kind,
                waiting_reason=(state.get("waiting") or {}).get("reason")
                if kind == "waiting"
                else (state.get("terminated") or {}).get("reason")
                if kind == "terminated"
                else None,
                last_terminated_reason=last.get("reason"),
                last_exit_code=_int(last["exitCode"]) if "exitCode" in last else None,
            )
        )
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    scheduled = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
    unschedulable = scheduled.get("message") if scheduled and scheduled.get("status") == "False" else None
    return PodSummary(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        phase=str(status.get("phase", "Unknown")),
        ready=ready,
        restarts=sum(c.restart_count for c in containers),
        node=spec.get("nodeName"),
        pod_ip=status.get("podIP"),
        created=_parse_time(meta.get("creationTimestamp")),
        waiting_reason=next((c.waiting_reason for c in containers if c.waiting_reason), None),
        last_terminated_reason=next(
            (c.last_terminated_reason for c in containers if c.last_terminated_reason), None
        ),
        unschedulable_message=unschedulable,
        insufficient_resources=tuple(dict.fromkeys(_INSUFFICIENT.findall(unschedulable or ""))),
        containers=tuple(containers),
        labels=dict(meta.get("labels") or {}),
    )


def summarize_event(obj: Mapping[str, Any]) -> EventSummary:
    """Build an EventSummary from an Event's JSON."""
    involved = obj.get("involvedObject") or {}
    source = obj.get("source") or {}
    return EventSummary(
        type=str(obj.get("type", "")),
        reason=str(obj.get("reason", "")),
        message=str(obj.get("message", "")),
        object_kind=str(involved.get("kind", "")),
        object_name=str(involved.get("name", "")),
        count=_int(obj.get("count", 1)) or 1,
        first_seen=_parse_time(obj.get("firstTimestamp") or obj.get("eventTime")),
        last_seen=_parse_time(obj.get("lastTimestamp") or obj.get("eventTime")),
        source=str(source.get("component") or obj.get("reportingComponent") or ""),
    )


def load_api_client(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    mode: ConfigMode = "auto",
) -> k8s.ApiClient:
    """Build an ApiClient: in-cluster service account first (mode auto), else the kubeconfig."""
    configuration = k8s.Configuration()
    if mode in ("auto", "in-cluster"):
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except ConfigException as exc:
            if mode == "in-cluster":
                raise ConfigError(f"in-cluster Kubernetes config unavailable: {exc}") from exc
    try:
        k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
        )
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot load kubeconfig {kubeconfig or '(default)'}: {exc}") from exc
    return k8s.ApiClient(configuration)


# --- the adapter ---------------------------------------------------------------------------------


class KubeClient:
    """Deployment, pod, event and log operations against one cluster, with kubectl's semantics."""

    def __init__(
        self,
        loader: Callable[[], k8s.ApiClient],
        *,
        field_manager: str = "llmd-incident-bot",
        allowed_namespaces: Sequence[str] = (),
        request_timeout: float = 15.0,
    ) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._api: k8s.ApiClient | None = None
        self.field_manager = field_manager
        self.allowed_namespaces = frozenset(allowed_namespaces)
        self.request_timeout = request_timeout
        self.reloads = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeClient:
        """Build from settings (KUBECONFIG, KUBE_CONTEXT, KUBE_CONFIG_MODE, KUBE_FIELD_MANAGER …)."""
        s = settings
        return cls(
            lambda: load_api_client(kubeconfig=s.kubeconfig, context=s.kube_context, mode=s.kube_config_mode),
            field_manager=s.kube_field_manager,
            allowed_namespaces=s.kube_allowed_namespaces,
            request_timeout=s.kube_request_timeout_seconds,
        )

    @classmethod
    def from_kubeconfig(
        cls,
        path: str,
        *,
        context: str | None = None,
        field_manager: str = "llmd-incident-bot",
        allowed_namespaces: Sequence[str] = (),
        request_timeout: float = 15.0,
    ) -> KubeClient:
        """Build from an explicit kubeconfig file (no in-cluster attempt)."""
        return cls(
            lambda: load_api_client(kubeconfig=path, context=context, mode="kubeconfig"),
            field_manager=field_manager,
            allowed_namespaces=allowed_namespaces,
            request_timeout=request_timeout,
        )

    # -- plumbing ---------------------------------------------------------------------------------

    def _client(self, *, reload: bool = False) -> k8s.ApiClient:
        with self._lock:
            if self._api is None or reload:
                old = self._api
                self._api = self._loader()
                if reload:
                    self.reloads += 1
                if old is not None:
                    _close(old)
            return self._api

    def close(self) -> None:
        """Release the connection pool."""
        with self._lock:
            if self._api is not None:
                _close(self._api)
                self._api = None

    def _call(self, action: str, fn: Callable[[k8s.ApiClient], T]) -> T:
        """Run ``fn`` with the ApiClient, reloading credentials once on 401 and mapping errors."""
        api = self._client()
        for attempt in (1, 2):
            try:
                return fn(api)
            except ApiException as exc:
                if exc.status == 401 and attempt == 1:
                    api = self._client(reload=True)
                    continue
                raise map_api_exception(exc, action) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise KubeUnavailable(f"{action}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _raw(self, action: str, fn: Callable[[k8s.ApiClient], Any]) -> Any:
        """Like :meth:`_call` for a ``_preload_content=False`` client call; returns the parsed JSON."""

        def run(api: k8s.ApiClient) -> Any:
            response = fn(api)
            data = response.data
            return json.loads(data) if data else None

        return self._call(action, run)

    def _opts(self, dry_run: bool = False) -> dict[str, Any]:
        opts: dict[str, Any] = {"_preload_content": False, "_request_timeout": self.request_timeout}
        if dry_run:
            opts["dry_run"] = "All"
        return opts

    def _mutating(self, dry_run: bool) -> dict[str, Any]:
        return {**self._opts(dry_run), "field_manager": self.field_manager}

    def _check_namespace(self, namespace: str) -> None:
        if self.allowed_namespaces and namespace not in self.allowed_namespaces:
            raise NamespaceNotAllowed(
                f"namespace {namespace!r} is not in KUBE_ALLOWED_NAMESPACES "
                f"({', '.join(sorted(self.allowed_namespaces))})"
            )

    def _read_deployment(self, namespace: str, name: str) -> JSON:
        self._check_namespace(namespace)
        result: JSON = self._raw(
            f"get deployment {namespace}/{name}",
            lambda api: k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace, **self._opts()),
        )
        return result

    # -- deployments ------------------------------------------------------------------------------

    def get_deployment(self, namespace: str, name: str) -> DeploymentSummary:
        """Read a Deployment and summarise it."""
        return summarize_deployment(self._read_deployment(namespace, name))

    def deployment_json(self, namespace: str, name: str) -> JSON:
        """The Deployment as the server returned it (plain JSON)."""
        return self._read_deployment(namespace, name)

    def template_annotations(self, namespace: str, name: str) -> dict[str, str]:
        """The annotations of a Deployment's pod template (restartedAt lives there)."""
        template = (self._read_deployment(namespace, name).get("spec") or {}).get("template") or {}
        return dict((template.get("metadata") or {}).get("annotations") or {})

    def scale(self, namespace: str, name: str, replicas: int, *, dry_run: bool = False) -> ScaleResult:
        """Set a Deployment's replicas through the scale subresource (merge patch, like kubectl scale)."""
        if replicas < 0:
            raise KubeRejected(f"scale {namespace}/{name}: replicas must be >= 0, got {replicas}")
        self._check_namespace(namespace)
        before: JSON = self._raw(
            f"get scale {namespace}/{name}",
            lambda api: k8s.AppsV1Api(api).read_namespaced_deployment_scale(name, namespace, **self._opts()),
        )
        after: JSON = self._raw(
            f"scale deployment {namespace}/{name}",
            lambda api: k8s.AppsV1Api(api).patch_namespaced_deployment_scale(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                _content_type="application/merge-patch+json",
                **self._mutating(dry_run),
            ),
        )
        return ScaleResult(
            name=name,
            namespace=namespace,
            previous_replicas=_int(before["spec"].get("replicas")),
            replicas=_int(after["spec"].get("replicas")),
            dry_run=dry_run,
        )

    def rollout_restart(
        self, namespace: str, name: str, *, dry_run: bool = False, now: dt.datetime | None = None
    ) -> DeploymentSummary:
        """Restart a Deployment's pods the way ``kubectl rollout restart`` does (refuses paused ones)."""
        current = self._read_deployment(namespace, name)
        if (current.get("spec") or {}).get("paused"):
            raise RolloutPaused(
                f"can't restart paused deployment {namespace}/{name} (run rollout resume first)"
            )
        stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        result: JSON = self._raw(
            f"restart deployment {namespace}/{name}",
            lambda api: k8s.AppsV1Api(api).patch_namespaced_deployment(
                name,
                namespace,
                body,
                _content_type="application/strategic-merge-patch+json",
                **self._mutating(dry_run),
            ),
        )
        return summarize_deployment(result)

    def _owned_replicasets(self, deployment: JSON) -> list[JSON]:
        meta = deployment["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        selector = label_selector_string((deployment.get("spec") or {}).get("selector"))
        listing: JSON = self._raw(
            f"list replicasets of {namespace}/{meta['name']}",
            lambda api: k8s.AppsV1Api(api).list_namespaced_replica_set(
                namespace, label_selector=selector, **self._opts()
            ),
        )
        owned = []
        for rs in listing.get("items") or []:
            refs = (rs.get("metadata") or {}).get("ownerReferences") or []
            if any(ref.get("controller") and ref.get("uid") == uid for ref in refs):
                owned.append(rs)
        return owned

    def rollout_history(self, namespace: str, name: str) -> list[RevisionInfo]:
        """The Deployment's revisions (from its owned ReplicaSets), oldest first."""
        deployment = self._read_deployment(namespace, name)
        history = []
        for rs in self._owned_replicasets(deployment):
            meta = rs["metadata"]
            annotations = meta.get("annotations") or {}
            template = (rs.get("spec") or {}).get("template") or {}
            history.append(
                RevisionInfo(
                    revision=_int(annotations.get(REVISION)),
                    replicaset=str(meta["name"]),
                    created=_parse_time(meta.get("creationTimestamp")),
                    images=_images(template),
                    change_cause=annotations.get(CHANGE_CAUSE),
                    replicas=_int((rs.get("spec") or {}).get("replicas")),
                    template=template,
                )
            )
        return sorted(history, key=lambda r: r.revision)

    def rollout_undo(
        self, namespace: str, name: str, *, to_revision: int | None = None, dry_run: bool = False
    ) -> UndoResult:
        """Roll back to the previous (or ``to_revision``) template as ``kubectl rollout undo`` does."""
        deployment = self._read_deployment(namespace, name)
        spec = deployment.get("spec") or {}
        if spec.get("paused"):
            raise RolloutPaused(
                f"you cannot rollback a paused deployment; resume {namespace}/{name} first and try again"
            )
        replicasets = self._owned_replicasets(deployment)
        by_revision = {
            _int((rs["metadata"].get("annotations") or {}).get(REVISION)): rs for rs in replicasets
        }
        current = _int((deployment["metadata"].get("annotations") or {}).get(REVISION)) or max(
            by_revision, default=0
        )
        if to_revision:
            target = by_revision.get(to_revision)
            if target is None:
                raise NoRolloutHistory(
                    f"unable to find specified revision {to_revision} in history of {namespace}/{name}"
                )
        else:
            ordered = sorted(by_revision)
            if len(ordered) < 2:
                raise NoRolloutHistory(f"no rollout history found for deployment {namespace}/{name}")
            to_revision = ordered[-2]
            target = by_revision[to_revision]
        template = json.loads(json.dumps(target["spec"]["template"]))
        (template.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
        images = _images(template)
        if same_template(template, spec.get("template") or {}):
            return UndoResult(
                name=name,
                namespace=namespace,
                from_revision=current,
                to_revision=to_revision,
                changed=False,
                dry_run=dry_run,
                images=images,
            )
        current_annotations = deployment["metadata"].get("annotations") or {}
        annotations = {k: v for k, v in current_annotations.items() if k in _ROLLBACK_KEEP}
        annotations.update(
            {
                k: v
                for k, v in (target["metadata"].get("annotations") or {}).items()
                if k not in _ROLLBACK_KEEP
            }
        )
        patch = [
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ]
        self._raw(
            f"undo deployment {namespace}/{name} to revision {to_revision}",
            lambda api: k8s.AppsV1Api(api).patch_namespaced_deployment(
                name, namespace, patch, _content_type="application/json-patch+json", **self._mutating(dry_run)
            ),
        )
        return UndoResult(
            name=name,
            namespace=namespace,
            from_revision=current,
            to_revision=to_revision,
            changed=True,
            dry_run=dry_run,
            images=images,
        )

    def rollout_status(self, namespace: str, name: str) -> RolloutStatus:
        """Whether the Deployment's rollout is complete (kubectl rollout status, one poll)."""
        return rollout_status_of(self._read_deployment(namespace, name))

    def wait_for_rollout(
        self,
        namespace: str,
        name: str,
        *,
        timeout: float = 300.0,
        interval: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> RolloutStatus:
        """Poll until the rollout completes, its progress deadline passes, or ``timeout`` runs out."""
        deadline = clock() + timeout
        while True:
            status = self.rollout_status(namespace, name)
            if status.complete or status.deadline_exceeded or clock() >= deadline:
                return status
            sleep(min(interval, max(0.0, deadline - clock())))

    # -- pods, events, logs -----------------------------------------------------------------------

    def list_pods(
        self, namespace: str, *, label_selector: str | None = None, deployment: str | None = None
    ) -> list[PodSummary]:
        """Pods in ``namespace`` (of one Deployment, or matching a label selector), summarised."""
        self._check_namespace(namespace)
        selector = label_selector
        if deployment is not None:
            dep = self._read_deployment(namespace, deployment)
            selector = label_selector_string((dep.get("spec") or {}).get("selector"))
        listing: JSON = self._raw(
            f"list pods in {namespace}",
            lambda api: k8s.CoreV1Api(api).list_namespaced_pod(
                namespace, label_selector=selector, **self._opts()
            ),
        )
        return [summarize_pod(p) for p in listing.get("items") or []]

    def delete_pod(
        self, namespace: str, name: str, *, grace_period_seconds: int | None = None, dry_run: bool = False
    ) -> None:
        """Delete one pod (its ReplicaSet replaces it); KubeNotFound when it is already gone."""
        self._check_namespace(namespace)
        kwargs: dict[str, Any] = self._opts(dry_run)
        if grace_period_seconds is not None:
            kwargs["grace_period_seconds"] = grace_period_seconds
        self._raw(
            f"delete pod {namespace}/{name}",
            lambda api: k8s.CoreV1Api(api).delete_namespaced_pod(name, namespace, **kwargs),
        )

    def list_events(
        self,
        namespace: str,
        *,
        involved_name: str | None = None,
        involved_kind: str | None = None,
        reason: str | None = None,
        event_type: str | None = None,
        limit: int | None = None,
    ) -> list[EventSummary]:
        """Events in ``namespace`` filtered server-side, newest last (``limit`` keeps the newest)."""
        self._check_namespace(namespace)
        terms = [
            f"{key}={value}"
            for key, value in (
                ("involvedObject.name", involved_name),
                ("involvedObject.kind", involved_kind),
                ("reason", reason),
                ("type", event_type),
            )
            if value
        ]
        listing: JSON = self._raw(
            f"list events in {namespace}",
            lambda api: k8s.CoreV1Api(api).list_namespaced_event(
                namespace, field_selector=",".join(terms) or None, **self._opts()
            ),
        )
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        events = sorted(
            (summarize_event(e) for e in listing.get("items") or []), key=lambda e: e.last_seen or epoch
        )
        return events[-limit:] if limit else events

    def pod_logs(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None = None,
        tail_lines: int | None = 200,
        previous: bool = False,
    ) -> str:
        """The last ``tail_lines`` lines of a pod container's log (``previous`` for the crashed run)."""
        self._check_namespace(namespace)

        def read(api: k8s.ApiClient) -> str:
            kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": self.request_timeout}
            if container:
                kwargs["container"] = container
            if tail_lines is not None:
                kwargs["tail_lines"] = tail_lines
            if previous:
                kwargs["previous"] = True
            response: Any = k8s.CoreV1Api(api).read_namespaced_pod_log(pod, namespace, **kwargs)
            return bytes(response.data).decode("utf-8", "replace")

        return self._call(f"read logs of {namespace}/{pod}", read)

    # -- target discovery (read only) ------------------------------------------------------------

    def pod_owner(self, namespace: str, pod: str) -> tuple[str, str]:
        """(kind, name) of the workload controlling a pod: its ReplicaSet's owner, or its own controller."""
        self._check_namespace(namespace)
        obj: JSON = self._raw(
            f"get pod {namespace}/{pod}",
            lambda api: k8s.CoreV1Api(api).read_namespaced_pod(pod, namespace, **self._opts()),
        )
        return self._controller_of(namespace, obj)

    def _controller_of(self, namespace: str, obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        lws = (meta.get("labels") or {}).get(LWS_NAME_LABEL)
        if lws:
            return "LeaderWorkerSet", str(lws)
        ref = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
        if ref is None:
            return "Pod", str(meta.get("name", ""))
        if ref.get("kind") != "ReplicaSet":
            return str(ref.get("kind")), str(ref.get("name"))
        rs: JSON = self._raw(
            f"get replicaset {namespace}/{ref['name']}",
            lambda api: k8s.AppsV1Api(api).read_namespaced_replica_set(
                ref["name"], namespace, **self._opts()
            ),
        )
        owner = next((r for r in rs["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
        return (str(owner["kind"]), str(owner["name"])) if owner else ("ReplicaSet", str(ref["name"]))

    def pod_owners(self, namespace: str, label_selector: str) -> dict[tuple[str, str], list[str]]:
        """The workloads controlling the pods that match a label selector: (kind, name) -> pod names."""
        self._check_namespace(namespace)
        listing: JSON = self._raw(
            f"list pods in {namespace}",
            lambda api: k8s.CoreV1Api(api).list_namespaced_pod(
                namespace, label_selector=label_selector, **self._opts()
            ),
        )
        owners: dict[tuple[str, str], list[str]] = {}
        for pod in listing.get("items") or []:
            owner = self._controller_of(namespace, pod)
            owners.setdefault(owner, []).append(str(pod["metadata"]["name"]))
        return owners

    def inference_pool(self, namespace: str, name: str) -> JSON:
        """An InferencePool (inference.networking.k8s.io/v1) as plain JSON."""
        self._check_namespace(namespace)
        result: JSON = self._raw(
            f"get inferencepool {namespace}/{name}",
            lambda api: k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                "inference.networking.k8s.io", "v1", namespace, "inferencepools", name, **self._opts()
            ),
        )
        return result


def _close(api: Any) -> None:
    api.close()


def same_template(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two pod templates are equal once creationTimestamp and pod-template-hash are ignored."""

    def clean(t: Mapping[str, Any]) -> Any:
        copy: JSON = json.loads(json.dumps(t))
        meta = copy.setdefault("metadata", {})
        meta.pop("creationTimestamp", None)
        (meta.get("labels") or {}).pop(HASH_LABEL, None)
        return copy

    return bool(clean(a) == clean(b))
