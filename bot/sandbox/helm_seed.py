"""Helm release Secrets for the sandbox's seeded workloads, stored the way Helm 3's Secret driver does.

helm (pkg/storage/driver) marshals the release to JSON, gzips it at best compression and base64-encodes the
result into the Secret's ``release`` key; the Secret API base64-encodes every data value once more.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from bot.sandbox.cluster import Cluster

JSON = dict[str, Any]


def helm_payload(release: Mapping[str, Any]) -> str:
    """What helm writes into ``data.release`` (before the Secret API's own base64)."""
    return base64.b64encode(gzip.compress(json.dumps(release).encode(), compresslevel=9)).decode()


def release_secret(release: Mapping[str, Any], *, modified: dt.datetime | None = None) -> JSON:
    """The Secret helm stores for one release revision (as the API serves it: data values base64)."""
    name, revision = str(release["name"]), int(release["version"])
    info = release.get("info") or {}
    created = dt.datetime.fromisoformat(str(info.get("last_deployed")).replace("Z", "+00:00"))
    labels = {
        "owner": "helm",
        "name": name,
        "version": str(revision),
        "status": str(info.get("status", "deployed")),
        "createdAt": str(int(created.timestamp())),
    }
    if modified is not None:
        labels["modifiedAt"] = str(int(modified.timestamp()))
    payload = helm_payload(release).encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {"name": f"sh.helm.release.v1.{name}.v{revision}", "labels": labels},
        "data": {"release": base64.b64encode(payload).decode()},
    }


def build_release(
    name: str,
    namespace: str,
    revision: int,
    *,
    chart: str,
    chart_version: str,
    app_version: str,
    status: str,
    deployed: dt.datetime,
    first_deployed: dt.datetime,
    manifests: Iterable[Mapping[str, Any]],
    description: str = "Upgrade complete",
) -> JSON:
    """A release object with the fields helm's release JSON carries."""

    def stamp(t: dt.datetime) -> str:
        return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

    manifest = "".join(
        f"---\n# Source: {chart}/templates/{m['kind'].lower()}.yaml\n"
        + yaml.safe_dump(dict(m), sort_keys=False)
        for m in manifests
    )
    return {
        "name": name,
        "namespace": namespace,
        "version": revision,
        "info": {
            "first_deployed": stamp(first_deployed),
            "last_deployed": stamp(deployed),
            "deleted": "",
            "description": description if revision > 1 else "Install complete",
            "status": status,
        },
        "chart": {
            "metadata": {
                "name": chart,
                "version": chart_version,
                "appVersion": app_version,
                "apiVersion": "v2",
            },
            "templates": [],
            "values": {},
        },
        "config": {},
        "manifest": manifest,
    }


def mark_managed(obj: JSON, release: str, namespace: str) -> JSON:
    """Give an object the labels and annotations helm puts on what it installs."""
    meta = obj.setdefault("metadata", {})
    meta.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
    meta.setdefault("annotations", {}).update(
        {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}
    )
    return obj


def seed_release_history(
    cluster: Cluster,
    namespace: str,
    release: str,
    revisions: Sequence[tuple[str, Sequence[Mapping[str, Any]], dt.datetime]],
    *,
    chart: str = "llm-d-modelservice",
    app_version: str = "v0.2.0",
) -> list[JSON]:
    """Store one Secret per (chart_version, manifests, deployed_at); the last is deployed, earlier ones
    superseded."""
    secrets = []
    first = revisions[0][2]
    for index, (chart_version, manifests, deployed) in enumerate(revisions, start=1):
        status = "deployed" if index == len(revisions) else "superseded"
        body = build_release(
            release, namespace, index, chart=chart, chart_version=chart_version, app_version=app_version,
            status=status, deployed=deployed, first_deployed=first, manifests=manifests,
        )  # fmt: skip
        secrets.append(cluster.create_object("Secret", release_secret(body), namespace))
    return secrets
