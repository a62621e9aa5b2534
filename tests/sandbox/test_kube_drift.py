"""Drift check: the emulator's JSON has the field names and value types of a real API server.

The REAL_* documents below are written from the Kubernetes v1.32 API reference (apps/v1 Deployment and
ReplicaSet, core/v1 Pod and Event, meta/v1 Status: field names, JSON types, ``omitempty`` rules) and from
objects as a real API server returns them (e.g. ``kubectl get deploy -o json`` on minikube/kind, with the
server defaults it fills in and ``creationTimestamp: null`` inside pod templates). They are not the emulator's
own output. Two checks per object:

* every field the emulator emits exists in the real shape with the same JSON type (no invented fields,
  no ints-as-strings);
* the fields a client relies on are present.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bot.sandbox.cluster import Cluster, PodBehaviour
from bot.sandbox.kube_emulator import KubeEmulator

NS = "llm-d"
# Fields whose values are maps with arbitrary keys (label/annotation/resource names).
MAPS = {
    "labels",
    "annotations",
    "matchLabels",
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "nodeSelector",
    "fieldsV1",
}

_MANAGED = [
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2025-05-02T10:11:12Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {}},
        "subresource": "status",
    }
]
_TEMPLATE = {
    "metadata": {
        "creationTimestamp": None,
        "labels": {"app": "vllm"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-05-02T10:11:12Z"},
    },
    "spec": {
        "containers": [
            {
                "name": "vllm",
                "image": "vllm/vllm-openai:v0.8.5",
                "args": ["--model", "m"],
                "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "b"}],
                "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
                "readinessProbe": {
                    "httpGet": {"path": "/health", "port": 8000, "scheme": "HTTP"},
                    "timeoutSeconds": 1,
                    "periodSeconds": 5,
                    "successThreshold": 1,
                    "failureThreshold": 3,
                },
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "securityContext": {},
        "schedulerName": "default-scheduler",
    },
}
REAL_DEPLOYMENT = {
    "kind": "Deployment",
    "apiVersion": "apps/v1",
    "metadata": {
        "name": "coredns",
        "namespace": "kube-system",
        "uid": "0b5d3f0e-9a1c-4c7e-8d0e-1f2a3b4c5d6e",
        "resourceVersion": "123456",
        "generation": 2,
        "creationTimestamp": "2025-05-02T10:11:12Z",
        "labels": {"k8s-app": "kube-dns"},
        "annotations": {"deployment.kubernetes.io/revision": "1"},
        "managedFields": _MANAGED,
    },
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
        "template": _TEMPLATE,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
        "paused": True,
    },
    "status": {
        "observedGeneration": 2,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "unavailableReplicas": 1,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "lastUpdateTime": "2023-01-12T10:37:00Z",
                "lastTransitionTime": "2023-01-12T10:37:00Z",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            }
        ],
    },
}
REAL_REPLICASET = {
    "kind": "ReplicaSet",
    "apiVersion": "apps/v1",
    "metadata": {
        "name": "coredns-b4854dd98",
        "namespace": "kube-system",
        "uid": "5c1e2d3f-0000-4000-8000-000000000001",
        "resourceVersion": "123457",
        "generation": 3,
        "creationTimestamp": "2025-05-02T10:11:12Z",
        "labels": {"k8s-app": "kube-dns", "pod-template-hash": "b4854dd98"},
        "annotations": {
            "deployment.kubernetes.io/desired-replicas": "2",
            "deployment.kubernetes.io/max-replicas": "3",
            "deployment.kubernetes.io/revision": "1",
        },
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "coredns",
                "uid": "0b5d3f0e-9a1c-4c7e-8d0e-1f2a3b4c5d6e",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "managedFields": _MANAGED,
    },
    "spec": {
        "replicas": 2,
        "minReadySeconds": 5,
        "selector": {"matchLabels": {"k8s-app": "kube-dns", "pod-template-hash": "b4854dd98"}},
        "template": _TEMPLATE,
    },
    "status": {
        "replicas": 2,
        "fullyLabeledReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "observedGeneration": 3,
    },
}
_CONTAINER_STATUS = {
    "name": "vllm",
    "state": {"running": {"startedAt": "2025-05-02T10:11:20Z"}},
    "lastState": {},
    "ready": True,
    "restartCount": 0,
    "image": "docker.io/vllm/vllm-openai:v0.8.5",
    "imageID": "docker.io/vllm/vllm-openai@sha256:abababab",
    "containerID": "containerd://0123abcd",
    "started": True,
}
_CRASHED_STATUS = {
    "name": "vllm",
    "state": {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}
    },
    "lastState": {
        "terminated": {
            "exitCode": 137,
            "reason": "OOMKilled",
            "startedAt": "2025-05-02T10:11:20Z",
            "finishedAt": "2025-05-02T10:12:20Z",
            "containerID": "containerd://0123abcd",
        }
    },
    "ready": False,
    "restartCount": 7,
    "image": "docker.io/vllm/vllm-openai:v0.8.5",
    "imageID": "docker.io/vllm/vllm-openai@sha256:abababab",
    "containerID": "containerd://0123abcd",
    "started": False,
}
REAL_POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {
        "name": "coredns-b4854dd98-7xk2p",
        "generateName": "coredns-b4854dd98-",
        "namespace": "kube-system",
        "uid": "8f0e1d2c-0000-4000-8000-000000000002",
        "resourceVersion": "123460",
        "creationTimestamp": "2025-05-02T10:11:13Z",
        "deletionTimestamp": "2025-05-02T10:20:13Z",
        "deletionGracePeriodSeconds": 30,
        "labels": {"k8s-app": "kube-dns", "pod-template-hash": "b4854dd98"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-05-02T10:11:12Z"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "coredns-b4854dd98",
                "uid": "5c1e2d3f-0000-4000-8000-000000000001",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "managedFields": _MANAGED,
    },
    "spec": {
        **_TEMPLATE["spec"],  # type: ignore[dict-item]
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "nodeName": "kind-worker",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    },
    "status": {
        "phase": "Running",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": "2025-05-02T10:11:13Z",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
        "hostIP": "172.18.0.2",
        "hostIPs": [{"ip": "172.18.0.2"}],
        "podIP": "10.244.1.3",
        "podIPs": [{"ip": "10.244.1.3"}],
        "startTime": "2025-05-02T10:11:13Z",
        "containerStatuses": [_CONTAINER_STATUS, _CRASHED_STATUS],
        "qosClass": "BestEffort",
    },
}
REAL_EVENT = {
    "kind": "Event",
    "apiVersion": "v1",
    "metadata": {
        "name": "coredns-b4854dd98-7xk2p.17c0a1b2c3d4e5f6",
        "namespace": "kube-system",
        "uid": "9a8b7c6d-0000-4000-8000-000000000003",
        "resourceVersion": "123470",
        "creationTimestamp": "2025-05-02T10:11:13Z",
    },
    "involvedObject": {
        "kind": "Pod",
        "namespace": "kube-system",
        "name": "coredns-b4854dd98-7xk2p",
        "uid": "8f0e1d2c-0000-4000-8000-000000000002",
        "apiVersion": "v1",
        "resourceVersion": "123460",
        "fieldPath": "spec.containers{vllm}",
    },
    "reason": "BackOff",
    "message": "Back-off restarting failed container vllm in pod coredns-b4854dd98-7xk2p_kube-system(8f0e…)",
    "source": {"component": "kubelet", "host": "kind-worker"},
    "firstTimestamp": "2025-05-02T10:11:13Z",
    "lastTimestamp": "2025-05-02T10:15:13Z",
    "count": 12,
    "type": "Warning",
    "eventTime": None,
    "reportingComponent": "kubelet",
    "reportingInstance": "kind-worker",
}
REAL_STATUS = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": 'Deployment.apps "x" is invalid: spec.replicas: Invalid value: -1: '
    "must be greater than or equal to 0",
    "reason": "Invalid",
    "details": {
        "name": "x",
        "group": "apps",
        "kind": "Deployment",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": "Invalid value: -1: must be greater than or equal to 0",
                "field": "spec.replicas",
            }
        ],
    },
    "code": 422,
}


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {str: "string", dict: "object", list: "array", float: "number"}[type(value)]


def shape(doc: Any, path: str = "") -> set[tuple[str, str]]:
    """(path, JSON type) of every node; list items become ``[]`` and free-form map keys ``*``."""
    found = {(path or ".", _type(doc))}
    if isinstance(doc, dict):
        free = path.rsplit(".", 1)[-1] in MAPS
        for key, value in doc.items():
            found |= shape(value, f"{path}.{'*' if free else key}")
    elif isinstance(doc, list):
        for item in doc:
            found |= shape(item, f"{path}[]")
    return found


def assert_same_shape(emulated: Any, real: Any, required: list[str]) -> None:
    """Every emulated (path, type) exists in the real shape; the required paths are present."""
    real_shape = shape(real)
    real_paths: dict[str, set[str]] = {}
    for path, kind in real_shape:
        real_paths.setdefault(path, set()).add(kind)
    # A field that may be null in one object and a value in another (creationTimestamp in templates is null).
    unknown = sorted(
        (path, kind)
        for path, kind in shape(emulated)
        if path not in real_paths or (kind not in real_paths[path] and kind != "null")
    )
    assert not unknown, f"fields/types a real API server does not send: {unknown}"
    emulated_paths = {path for path, _ in shape(emulated)}
    missing = [p for p in required if p not in emulated_paths]
    assert not missing, f"fields a real API server sends that the emulator lacks: {missing}"


@pytest.fixture(scope="module")
def emulator() -> Iterator[KubeEmulator]:
    cluster = Cluster(seed=11)
    cluster.seed_llmd(NS, decode_replicas=2)
    cluster.patch_deployment(
        NS,
        "vllm-decode",
        "application/strategic-merge-patch+json",
        {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "x"}}}}},
    )
    cluster.script_pods(PodBehaviour("oomkilled"), namespace=NS, deployment="vllm-prefill")
    with KubeEmulator(cluster) as emu:
        yield emu


def fetch(emulator: KubeEmulator, path: str, method: str = "GET", body: Any = None, ctype: str = "") -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(emulator.url + path, data=data, method=method)
    if ctype:
        request.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def test_deployment_shape(emulator: KubeEmulator) -> None:
    doc = fetch(emulator, f"/apis/apps/v1/namespaces/{NS}/deployments/vllm-decode")
    assert_same_shape(
        doc,
        REAL_DEPLOYMENT,
        [
            ".metadata.uid",
            ".metadata.resourceVersion",
            ".metadata.generation",
            ".metadata.creationTimestamp",
            ".metadata.annotations.*",
            ".spec.template.metadata.creationTimestamp",
            ".spec.strategy.rollingUpdate.maxSurge",
            ".spec.revisionHistoryLimit",
            ".spec.progressDeadlineSeconds",
            ".status.observedGeneration",
            ".status.conditions[].lastUpdateTime",
            ".status.conditions[].reason",
        ],
    )
    assert doc["spec"]["template"]["metadata"]["creationTimestamp"] is None


def test_replicaset_shape(emulator: KubeEmulator) -> None:
    listing = fetch(emulator, f"/apis/apps/v1/namespaces/{NS}/replicasets")
    assert listing["kind"] == "ReplicaSetList" and listing["apiVersion"] == "apps/v1"
    assert isinstance(listing["metadata"]["resourceVersion"], str)
    for rs in listing["items"]:
        name = rs["metadata"]["name"]
        doc = fetch(emulator, f"/apis/apps/v1/namespaces/{NS}/replicasets/{name}")
        assert_same_shape(
            doc,
            REAL_REPLICASET,
            [
                ".metadata.ownerReferences[].controller",
                ".metadata.annotations.*",
                ".spec.selector.matchLabels.*",
                ".spec.template.metadata.labels.*",
                ".status.replicas",
                ".status.observedGeneration",
            ],
        )


def test_pod_shapes(emulator: KubeEmulator) -> None:
    emulator.cluster.patch_deployment(
        NS, "vllm-decode", "application/merge-patch+json", {"spec": {"replicas": 9}}
    )  # two of them cannot be scheduled
    listing = fetch(emulator, f"/api/v1/namespaces/{NS}/pods")
    phases = set()
    for pod in listing["items"]:
        doc = fetch(emulator, f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}")
        phases.add(doc["status"]["phase"])
        assert_same_shape(
            doc, REAL_POD, [".metadata.ownerReferences[].uid", ".status.phase", ".status.conditions[].type"]
        )
    assert phases == {"Running", "Pending"}
    emulator.cluster.patch_deployment(
        NS, "vllm-decode", "application/merge-patch+json", {"spec": {"replicas": 2}}
    )


def test_event_shape(emulator: KubeEmulator) -> None:
    listing = fetch(emulator, f"/api/v1/namespaces/{NS}/events")
    assert listing["items"]
    for event in listing["items"]:
        assert_same_shape(
            {"kind": "Event", "apiVersion": "v1", **event},
            REAL_EVENT,
            [
                ".involvedObject.uid",
                ".firstTimestamp",
                ".lastTimestamp",
                ".count",
                ".source.component",
                ".type",
            ],
        )


def test_status_shapes(emulator: KubeEmulator) -> None:
    invalid = fetch(
        emulator,
        f"/apis/apps/v1/namespaces/{NS}/deployments/vllm-decode",
        "PATCH",
        {"spec": {"replicas": -1}},
        "application/merge-patch+json",
    )
    assert_same_shape(invalid, REAL_STATUS, [".details.causes[].field", ".code", ".reason"])
    assert invalid["code"] == 422 and invalid["details"]["causes"][0]["field"] == "spec.replicas"
    missing = fetch(emulator, f"/apis/apps/v1/namespaces/{NS}/deployments/ghost")
    assert_same_shape(missing, REAL_STATUS, [".details.name", ".details.kind", ".message"])
    assert (missing["code"], missing["reason"], missing["details"]["kind"]) == (
        404,
        "NotFound",
        "deployments",
    )
    assert missing["message"] == 'deployments.apps "ghost" not found'
    stale = fetch(
        emulator,
        f"/apis/apps/v1/namespaces/{NS}/deployments/vllm-decode",
        "PATCH",
        {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 3}},
        "application/merge-patch+json",
    )
    assert_same_shape(stale, REAL_STATUS, [".details.name"])
    assert (stale["code"], stale["reason"]) == (409, "Conflict")
    assert "the object has been modified" in stale["message"]
