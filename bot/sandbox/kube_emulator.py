"""A loopback Kubernetes API server over :class:`bot.sandbox.cluster.Cluster`.

It speaks enough of the real wire protocol for the official ``kubernetes`` Python client and ``kubectl``
(1.32) to work unchanged: legacy discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/apps/v1``,
``/version``), server-side Table printing (``Accept: …;as=Table``), JSON lists/gets, the three PATCH
dialects, PUT, POST, DELETE, ``?dryRun=All``, the ``deployments/scale`` subresource, ``pods/log``,
label and field selectors, watches (chunked ``{"type","object"}`` lines, which ``kubectl rollout
status`` uses) and ``Status`` error bodies. Aggregated discovery and OpenAPI documents are not served:
clients fall back to legacy discovery when ``/api`` answers plain JSON.

Start it from a test::

    with KubeEmulator(token="t0") as kube:
        kube.cluster.seed_llmd()
        path = kube.write_kubeconfig(tmp_path / "kubeconfig")

or from a shell: ``python -m bot.sandbox.kube_emulator --seed-llmd --kubeconfig /tmp/kubeconfig``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import re
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from bot.sandbox.cluster import (
    BUILTIN_KINDS,
    KINDS,
    SCALE_SUBRESOURCE,
    STATUS_SUBRESOURCE,
    ApiError,
    Cluster,
    apply_patch,
    bad_request,
    object_matcher,
    selector_string,
)
from bot.sandbox.tls import issue_loopback_certificate

JSON = dict[str, Any]
KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T16:02:27Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_LIST_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_CORE_RESOURCES: list[JSON] = [
    {
        "name": "events",
        "singularName": "event",
        "namespaced": True,
        "kind": "Event",
        "verbs": _LIST_VERBS,
        "shortNames": ["ev"],
    },
    {
        "name": "namespaces",
        "singularName": "namespace",
        "namespaced": False,
        "kind": "Namespace",
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        "shortNames": ["ns"],
    },
    {
        "name": "nodes",
        "singularName": "node",
        "namespaced": False,
        "kind": "Node",
        "verbs": _LIST_VERBS,
        "shortNames": ["no"],
    },
    {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": _LIST_VERBS,
        "shortNames": ["po"],
        "categories": ["all"],
    },
    {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
]
_APPS_RESOURCES: list[JSON] = [
    {
        "name": "deployments",
        "singularName": "deployment",
        "namespaced": True,
        "kind": "Deployment",
        "verbs": _LIST_VERBS,
        "shortNames": ["deploy"],
        "categories": ["all"],
    },
    {
        "name": "deployments/scale",
        "singularName": "",
        "namespaced": True,
        "group": "autoscaling",
        "version": "v1",
        "kind": "Scale",
        "verbs": ["get", "patch", "update"],
    },
    {
        "name": "deployments/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Deployment",
        "verbs": ["get", "patch", "update"],
    },
    {
        "name": "replicasets",
        "singularName": "replicaset",
        "namespaced": True,
        "kind": "ReplicaSet",
        "verbs": _LIST_VERBS,
        "shortNames": ["rs"],
        "categories": ["all"],
    },
]
#: Discovery entries of the generic kinds: (singular, short names, categories).
_GENERIC_RESOURCES: dict[str, tuple[str, list[str], list[str]]] = {
    "Secret": ("secret", [], []),
    "StatefulSet": ("statefulset", ["sts"], ["all"]),
    "ControllerRevision": ("controllerrevision", [], []),
    "Rollout": ("rollout", ["ro"], ["all"]),
    "AnalysisRun": ("analysisrun", ["ar"], ["all"]),
    "LeaderWorkerSet": ("leaderworkerset", ["lws"], ["all"]),
    "InferencePool": ("inferencepool", ["infpool"], []),
}


def _generic_resources(group_version: str) -> list[JSON]:
    """APIResource entries (with status/scale subresources) of the generic kinds in ``group_version``."""
    resources: list[JSON] = []
    for kind, (singular, short, categories) in _GENERIC_RESOURCES.items():
        api_version, plural, namespaced = KINDS[kind]
        if api_version != group_version:
            continue
        entry: JSON = {
            "name": plural,
            "singularName": singular,
            "namespaced": namespaced,
            "kind": kind,
            "verbs": _LIST_VERBS,
        }
        if short:
            entry["shortNames"] = short
        if categories:
            entry["categories"] = categories
        resources.append(entry)
        if kind in STATUS_SUBRESOURCE:
            resources.append(
                {
                    "name": f"{plural}/status",
                    "singularName": "",
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if kind in SCALE_SUBRESOURCE:
            resources.append(
                {
                    "name": f"{plural}/scale",
                    "singularName": "",
                    "namespaced": namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return resources


#: (groupVersion, plural) -> kind
_GV_PLURAL_KIND = {(api_version, plural): kind for kind, (api_version, plural, _) in KINDS.items()}
_GROUP_VERSIONS = sorted({v for v, _, _ in KINDS.values() if "/" in v})
_ROUTE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<gv>[a-z0-9.-]+/v[a-z0-9]+))(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>scale|status|log))?/?$"
)
_PUBLIC_PATHS = {"/version", "/healthz", "/livez", "/readyz"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    user_agent: str

    @property
    def mutating(self) -> bool:
        """Whether the method can change state (POST, PUT, PATCH, DELETE) and it was not a dry run."""
        return self.method in ("POST", "PUT", "PATCH", "DELETE") and self.query.get("dryRun") != "All"


@dataclass
class _Fault:
    status: int
    method: str | None
    path: re.Pattern[str] | None
    times: int
    message: str


@dataclass
class _State:
    tokens: set[str] | None
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def _age(created: str | None, now: dt.datetime) -> str:
    if not created:
        return "<unknown>"
    then = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _column(name: str, kind: str = "string", description: str = "", priority: int = 0, fmt: str = "") -> JSON:
    return {"name": name, "type": kind, "format": fmt, "description": description, "priority": priority}


def _pod_status_text(pod: JSON) -> str:
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cstatus in status.get("containerStatuses") or []:
        waiting = (cstatus.get("state") or {}).get("waiting")
        terminated = (cstatus.get("state") or {}).get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated and terminated.get("reason"):
            reason = terminated["reason"]
    return str(reason)


def _table(
    kind: str, items: list[JSON], now: dt.datetime, include_object: str, resource_version: str
) -> JSON:
    """A meta.k8s.io/v1 Table with the columns kubectl's built-in printers show."""
    if kind == "Deployment":
        columns = [
            _column("Name", fmt="name"),
            _column("Ready"),
            _column("Up-to-date", "integer"),
            _column("Available", "integer"),
            _column("Age"),
            _column("Containers", priority=1),
            _column("Images", priority=1),
            _column("Selector", priority=1),
        ]

        def cells(o: JSON) -> list[Any]:
            st, containers = o.get("status") or {}, o["spec"]["template"]["spec"]["containers"]
            return [
                o["metadata"]["name"],
                f"{st.get('readyReplicas', 0)}/{o['spec']['replicas']}",
                st.get("updatedReplicas", 0),
                st.get("availableReplicas", 0),
                _age(o["metadata"].get("creationTimestamp"), now),
                ",".join(c["name"] for c in containers),
                ",".join(c["image"] for c in containers),
                selector_string(o["spec"].get("selector")),
            ]
    elif kind == "ReplicaSet":
        columns = [
            _column("Name", fmt="name"),
            _column("Desired", "integer"),
            _column("Current", "integer"),
            _column("Ready", "integer"),
            _column("Age"),
        ]

        def cells(o: JSON) -> list[Any]:
            st = o.get("status") or {}
            return [
                o["metadata"]["name"],
                o["spec"]["replicas"],
                st.get("replicas", 0),
                st.get("readyReplicas", 0),
                _age(o["metadata"].get("creationTimestamp"), now),
            ]
    elif kind == "Pod":
        columns = [
            _column("Name", fmt="name"),
            _column("Ready"),
            _column("Status"),
            _column("Restarts"),
            _column("Age"),
            _column("IP", priority=1),
            _column("Node", priority=1),
        ]

        def cells(o: JSON) -> list[Any]:
            statuses = (o.get("status") or {}).get("containerStatuses") or []
            ready = sum(1 for s in statuses if s.get("ready"))
            restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
            return [
                o["metadata"]["name"],
                f"{ready}/{len(o['spec']['containers'])}",
                _pod_status_text(o),
                str(restarts),
                _age(o["metadata"].get("creationTimestamp"), now),
                (o.get("status") or {}).get("podIP", "<none>"),
                o["spec"].get("nodeName", "<none>"),
            ]
    elif kind == "Event":
        columns = [
            _column("Last Seen"),
            _column("Type"),
            _column("Reason"),
            _column("Object"),
            _column("Message"),
        ]

        def cells(o: JSON) -> list[Any]:
            inv = o["involvedObject"]
            return [
                _age(o.get("lastTimestamp"), now),
                o.get("type", ""),
                o.get("reason", ""),
                f"{inv['kind'].lower()}/{inv['name']}",
                o.get("message", ""),
            ]
    else:
        columns = [_column("Name", fmt="name"), _column("Age")]

        def cells(o: JSON) -> list[Any]:
            return [o["metadata"]["name"], _age(o["metadata"].get("creationTimestamp"), now)]

    rows = []
    for obj in items:
        if include_object == "Object":
            embedded: JSON = obj
        elif include_object == "None":
            embedded = {}
        else:
            embedded = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        row: JSON = {"cells": cells(obj)}
        if embedded:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-emulator"
    # Headers and body leave in separate writes: without TCP_NODELAY, Nagle + delayed ACK hold the
    # second one ~40 ms per response on loopback.
    disable_nagle_algorithm = True
    cluster: Cluster
    state: _State

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; tests read :attr:`KubeEmulator.requests` instead."""

    # -- plumbing ---------------------------------------------------------------------------------

    def _send(
        self,
        code: int,
        body: Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = (
            body
            if isinstance(body, bytes)
            else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        )
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, error: ApiError, headers: dict[str, str] | None = None) -> None:
        self._send(error.code, error.status(), headers=headers)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        record = RecordedRequest(
            self.command, path, query, content_type, body, self.headers.get("User-Agent", "")
        )
        with self.state.lock:
            self.state.requests.append(record)
            fault = self._take_fault(self.command, path)
        if path not in _PUBLIC_PATHS and self.state.tokens is not None:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or header[7:] not in self.state.tokens:
                self._error(ApiError(401, "Unauthorized", "Unauthorized"))
                return
        if fault is not None:
            reasons = {
                429: "TooManyRequests",
                500: "InternalError",
                503: "ServiceUnavailable",
                504: "Timeout",
                403: "Forbidden",
                400: "BadRequest",
                409: "Conflict",
                404: "NotFound",
                422: "Invalid",
            }
            extra = {"Retry-After": "1"} if fault.status == 429 else None
            self._error(
                ApiError(fault.status, reasons.get(fault.status, "InternalError"), fault.message), extra
            )
            return
        if isinstance(body, str):
            self._error(bad_request(f"couldn't get version/kind; json parse error: {body[:40]!r}"))
            return
        try:
            self._route(path, query, content_type, body)
        except ApiError as exc:
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self.state.faults:
            if (
                fault.times > 0
                and (fault.method is None or fault.method == method)
                and (fault.path is None or fault.path.search(path))
            ):
                fault.times -= 1
                if fault.times == 0:
                    self.state.faults.remove(fault)
                return fault
        return None

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    # -- routes -----------------------------------------------------------------------------------

    def _route(self, path: str, query: dict[str, str], content_type: str, body: Any) -> None:
        method = self.command
        address: Any = self.server.server_address
        host = f"{address[0]}:{address[1]}"
        if path in ("/healthz", "/livez", "/readyz"):
            self._send(200, "ok", "text/plain; charset=utf-8")
            return
        if path == "/version":
            self._send(200, KUBE_VERSION)
            return
        if path == "/api":
            self._send(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
                },
            )
            return
        if path == "/apis":
            groups = []
            for group_version in _GROUP_VERSIONS:
                gv = {"groupVersion": group_version, "version": group_version.split("/")[1]}
                groups.append({"name": group_version.split("/")[0], "versions": [gv], "preferredVersion": gv})
            self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            return
        if path == "/api/v1" or path.removeprefix("/apis/") in _GROUP_VERSIONS:
            group_version = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
            builtin = {"v1": _CORE_RESOURCES, "apps/v1": _APPS_RESOURCES}.get(group_version, [])
            self._send(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": group_version,
                    "resources": builtin + _generic_resources(group_version),
                },
            )
            return
        match = _ROUTE.match(path)
        kind = (
            _GV_PLURAL_KIND.get((match.group("core") or match.group("gv"), match.group("plural")))
            if match
            else None
        )
        if match is None or kind is None:
            self._error(ApiError(404, "NotFound", "the server could not find the requested resource", {}))
            return
        ns, name, sub = match.group("ns"), match.group("name"), match.group("sub")
        if KINDS[kind][2] is False and ns is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        dry_run = self._dry_run(query)
        manager = query.get("fieldManager")
        if manager is not None and not (0 < len(manager) <= 128):
            raise invalid_manager(manager)
        if name is None:
            self._collection(method, kind, ns, query, body, dry_run, manager)
            return
        assert ns is not None or not KINDS[kind][2]
        namespace = ns or ""
        if sub == "log" and kind == "Pod" and method == "GET":
            tail = query.get("tailLines")
            text = self.cluster.pod_logs(
                namespace,
                name,
                query.get("container"),
                int(tail) if tail not in (None, "") else None,
                query.get("previous") in ("true", "1"),
            )
            limit = query.get("limitBytes")
            data = text.encode()[: int(limit)] if limit else text.encode()
            self._send(200, data, "text/plain")
            return
        if kind not in BUILTIN_KINDS:
            self._generic_item(method, kind, namespace, name, sub, content_type, body, dry_run, manager)
            return
        if sub == "scale" and kind == "Deployment":
            self._scale(method, namespace, name, content_type, body, dry_run, manager)
            return
        if sub == "status" and kind == "Deployment" and method == "GET":
            self._send(200, self.cluster.get(kind, namespace, name))
            return
        if sub is not None:
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested resource ({kind.lower()}s/{sub})",
            )
        self._item(method, kind, namespace, name, content_type, body, dry_run, manager)

    @staticmethod
    def _dry_run(query: dict[str, str]) -> bool:
        value = query.get("dryRun")
        if value in (None, ""):
            return False
        if value != "All":
            raise bad_request(f"Invalid dry run value: {value}; must be All")
        return True

    def _wants_table(self) -> bool:
        accept = self.headers.get("Accept", "")
        first = accept.split(",")[0]
        return "as=Table" in first

    def _collection(
        self,
        method: str,
        kind: str,
        ns: str | None,
        query: dict[str, str],
        body: Any,
        dry_run: bool,
        manager: str | None,
    ) -> None:
        if method == "POST" and kind not in BUILTIN_KINDS and (ns is not None or not KINDS[kind][2]):
            if not isinstance(body, dict):
                raise bad_request(f"the body of the request is not a {kind}")
            if (body.get("metadata") or {}).get("namespace") not in (None, ns):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            self._send(
                201, self.cluster.create_object(kind, body, ns, dry_run=dry_run, field_manager=manager)
            )
            return
        if method == "POST":
            if kind != "Deployment" or ns is None:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            if not isinstance(body, dict):
                raise bad_request("the body of the request is not a Deployment")
            if (body.get("metadata") or {}).get("namespace") not in (None, ns):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            self._send(201, self.cluster.create_deployment(body, ns, dry_run=dry_run, field_manager=manager))
            return
        if method != "GET":
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        label, fields = query.get("labelSelector"), query.get("fieldSelector")
        if query.get("watch") in ("true", "1"):
            self._watch(kind, ns, query, label, fields)
            return
        with self.cluster.lock:
            items = self.cluster.list_objects(kind, ns, label_selector=label, field_selector=fields)
            rv = str(self.cluster.resource_version)
        if self._wants_table():
            self._send(
                200, _table(kind, items, self.cluster.now(), query.get("includeObject", "Metadata"), rv)
            )
            return
        api_version = KINDS[kind][0]
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self._send(
            200,
            {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    def _item(
        self,
        method: str,
        kind: str,
        ns: str,
        name: str,
        content_type: str,
        body: Any,
        dry_run: bool,
        manager: str | None,
    ) -> None:
        cluster = self.cluster
        if method in ("GET", "HEAD"):
            obj = cluster.get(kind, ns, name)
            if self._wants_table():
                self._send(
                    200, _table(kind, [obj], cluster.now(), "Metadata", obj["metadata"]["resourceVersion"])
                )
            else:
                self._send(200, obj)
            return
        if kind == "Pod" and method == "DELETE":
            self._send(200, cluster.delete_pod(ns, name, dry_run=dry_run))
            return
        if kind != "Deployment":
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if method == "PATCH":
            if body is None:
                raise bad_request("the body of the request was empty")
            self._send(
                200,
                cluster.patch_deployment(
                    ns, name, content_type, body, dry_run=dry_run, field_manager=manager
                ),
            )
        elif method == "PUT":
            if not isinstance(body, dict):
                raise bad_request("the body of the request is not a Deployment")
            self._send(
                200, cluster.replace_deployment(ns, name, body, dry_run=dry_run, field_manager=manager)
            )
        elif method == "DELETE":
            self._send(200, cluster.delete_deployment(ns, name, dry_run=dry_run))
        else:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )

    def _generic_item(
        self,
        method: str,
        kind: str,
        ns: str,
        name: str,
        sub: str | None,
        content_type: str,
        body: Any,
        dry_run: bool,
        manager: str | None,
    ) -> None:
        """One object of a generic kind, or its status/scale subresource."""
        cluster = self.cluster
        if sub == "log" or (sub == "status" and kind not in STATUS_SUBRESOURCE):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if sub == "scale":
            if kind not in SCALE_SUBRESOURCE:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            if method == "GET":
                self._send(200, cluster.object_scale(kind, ns, name))
                return
            if method not in ("PATCH", "PUT") or body is None:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            mutate = (
                (lambda s: apply_patch(s, content_type, body)) if method == "PATCH" else (lambda _s: body)
            )
            self._send(
                200,
                cluster.update_object_scale(kind, ns, name, mutate, dry_run=dry_run, field_manager=manager),
            )
            return
        if method in ("GET", "HEAD"):
            obj = cluster.get(kind, ns, name)
            if self._wants_table() and sub is None:
                obj = _table(kind, [obj], cluster.now(), "Metadata", obj["metadata"]["resourceVersion"])
            self._send(200, obj)
        elif method == "PATCH":
            if body is None:
                raise bad_request("the body of the request was empty")
            self._send(
                200,
                cluster.patch_object(
                    kind,
                    ns,
                    name,
                    content_type,
                    body,
                    subresource=sub,
                    dry_run=dry_run,
                    field_manager=manager,
                ),
            )
        elif method == "PUT":
            if not isinstance(body, dict):
                raise bad_request(f"the body of the request is not a {kind}")
            self._send(
                200,
                cluster.update_object(
                    kind, ns, name, lambda _o: body, subresource=sub, dry_run=dry_run, field_manager=manager
                ),
            )
        elif method == "DELETE" and sub is None:
            self._send(200, cluster.delete_object(kind, ns, name, dry_run=dry_run))
        else:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )

    def _scale(
        self,
        method: str,
        ns: str,
        name: str,
        content_type: str,
        body: Any,
        dry_run: bool,
        manager: str | None,
    ) -> None:
        cluster = self.cluster
        if method == "GET":
            self._send(200, cluster.scale_of(ns, name))
        elif method == "PATCH":
            self._send(
                200,
                cluster.update_scale(
                    ns,
                    name,
                    lambda s: apply_patch(s, content_type, body),
                    dry_run=dry_run,
                    field_manager=manager,
                ),
            )
        elif method == "PUT":
            if not isinstance(body, dict):
                raise bad_request("the body of the request is not a Scale")
            self._send(
                200, cluster.update_scale(ns, name, lambda _s: body, dry_run=dry_run, field_manager=manager)
            )
        else:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )

    def _watch(
        self, kind: str, ns: str | None, query: dict[str, str], label: str | None, fields: str | None
    ) -> None:
        matches = object_matcher(kind, label, fields)
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        cluster = self.cluster
        with cluster.lock:
            since_text = query.get("resourceVersion", "")
            if since_text in ("", "0"):
                initial = [("ADDED", obj) for obj in cluster.list_objects(kind, ns) if matches(obj)]
                since = cluster.resource_version
            else:
                initial = []
                since = int(since_text)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

        def chunk(event_type: str, obj: JSON) -> None:
            data = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            for event_type, obj in initial:
                chunk(event_type, obj)
            while not self.state.stopping.is_set() and time.monotonic() < deadline:
                events = cluster.history_since(since, kind, ns)
                for rv, event_type, obj in events:
                    since = rv
                    if matches(obj):
                        chunk(event_type, obj)
                if not events:
                    with cluster.changed:
                        cluster.changed.wait(min(0.2, max(0.0, deadline - time.monotonic())))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        self.close_connection = True


def invalid_manager(manager: str) -> ApiError:
    """422 for a fieldManager longer than the server allows."""
    return ApiError(
        422, "Invalid", f'fieldManager: Invalid value: "{manager}": must be between 1 and 128 characters'
    )


class KubeEmulator:
    """A loopback HTTP Kubernetes API server for a :class:`Cluster`, run in a background thread."""

    def __init__(
        self,
        cluster: Cluster | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        tls: bool = False,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the emulator binds loopback addresses only, not {host}")
        self.cluster = cluster or Cluster()
        self.host = host
        self.port = port
        self._state = _State(tokens={token} if token else None)
        self.tls = tls
        self.ca_pem: bytes | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> KubeEmulator:
        """Bind and serve in a daemon thread; returns self."""
        handler = type("Handler", (_Handler,), {"cluster": self.cluster, "state": self._state})
        self._state.stopping.clear()
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        if self.tls:
            server.socket = self._tls_context().wrap_socket(server.socket, server_side=True)
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kube-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def _tls_context(self) -> ssl.SSLContext:
        # kubectl only sends bearer tokens over TLS, so an authenticated sandbox needs a certificate.
        certificate = issue_loopback_certificate(self.host)
        self.ca_pem = certificate.ca_pem
        return certificate.server_context()

    def stop(self) -> None:
        """Stop serving, end open watches and close the socket."""
        self._state.stopping.set()
        with self.cluster.changed:
            self.cluster.changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the API server, e.g. ``http://127.0.0.1:40123``."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    # -- auth, faults, request log ----------------------------------------------------------------

    def set_tokens(self, *tokens: str) -> None:
        """Accept exactly these bearer tokens from now on (none given: accept anonymous requests)."""
        with self._state.lock:
            self._state.tokens = set(tokens) if tokens else None

    def fail_next(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching method/path-regex with ``status`` and a Status body."""
        with self._state.lock:
            self._state.faults.append(
                _Fault(
                    status,
                    method,
                    re.compile(path) if path else None,
                    times,
                    message or f"injected failure ({status})",
                )
            )

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far."""
        with self._state.lock:
            return list(self._state.requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._state.lock:
            self._state.requests.clear()

    def count(
        self, method: str | None = None, path: str | None = None, *, mutating: bool | None = None
    ) -> int:
        """How many requests matched ``method`` and the ``path`` regex (full match), optionally mutating."""
        pattern = re.compile(path) if path else None
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (pattern is None or pattern.fullmatch(r.path))
            and (mutating is None or r.mutating == mutating)
        )

    def write_kubeconfig(
        self,
        path: Path | str,
        *,
        token: str | None = None,
        token_file: Path | str | None = None,
        context: str = "sandbox",
        namespace: str = "default",
    ) -> Path:
        """Write a kubeconfig pointing at this emulator (with a token or tokenFile if given)."""
        if token is None and token_file is None and self._state.tokens:
            token = sorted(self._state.tokens)[0]
        return write_kubeconfig(
            path,
            self.url,
            token=token,
            token_file=token_file,
            context=context,
            namespace=namespace,
            ca_pem=self.ca_pem,
        )


def write_kubeconfig(
    path: Path | str,
    server: str,
    *,
    token: str | None = None,
    token_file: Path | str | None = None,
    context: str = "sandbox",
    namespace: str = "default",
    ca_pem: bytes | None = None,
) -> Path:
    """Write a kubeconfig file for ``server`` and return its path."""
    user: JSON = {}
    if token is not None:
        user["token"] = token
    if token_file is not None:
        user["tokenFile"] = str(token_file)
    cluster: JSON = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": user}],
        "contexts": [
            {"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}
        ],
        "current-context": context,
        "preferences": {},
    }
    target = Path(path)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    target.chmod(0o600)
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI: run the emulator in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m bot.sandbox.kube_emulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument(
        "--tls", action="store_true", help="serve HTTPS with a throwaway CA (kubectl needs it for tokens)"
    )
    parser.add_argument("--kubeconfig", type=Path, default=None, help="write a kubeconfig here")
    parser.add_argument(
        "--seed-llmd", action="store_true", help="seed an llm-d namespace with vLLM deployments"
    )
    parser.add_argument("--namespace", default="llm-d", help="namespace for --seed-llmd")
    args = parser.parse_args(argv)
    emulator = KubeEmulator(host=args.host, port=args.port, token=args.token, tls=args.tls).start()
    if args.seed_llmd:
        emulator.cluster.seed_llmd(args.namespace)
    if args.kubeconfig:
        emulator.write_kubeconfig(args.kubeconfig, namespace=args.namespace if args.seed_llmd else "default")
    print(f"kube emulator serving on {emulator.url}", flush=True)
    if args.kubeconfig:
        print(f"kubeconfig: {args.kubeconfig}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
