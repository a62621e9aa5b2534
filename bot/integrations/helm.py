"""Helm awareness without the helm binary: which release manages an object, and the release history.

Helm 3 stores each revision of a release in a Secret of type ``helm.sh/release.v1`` named
``sh.helm.release.v1.<release>.v<revision>`` in the release's namespace, labelled ``owner=helm``,
``name=<release>``, ``version=<revision>``, ``status=<status>``. Its ``release`` key holds what helm's
storage driver encodes (pkg/storage/driver/util.go: JSON, gzip at best compression, base64); the Secret API
base64-encodes that value once more, so a reader decodes base64 twice and gunzips when the bytes start
with the gzip magic ``1f 8b 08`` (releases written before compression are plain JSON).

A Helm-managed object carries ``app.kubernetes.io/managed-by: Helm`` and the annotations
``meta.helm.sh/release-name`` / ``meta.helm.sh/release-namespace``. Changing such an object with kubectl
(an undo) lasts only until the next ``helm upgrade`` re-applies the chart, so the bot names the
``helm rollback`` a person should run instead.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client as k8s

from bot.errors import IncidentBotError, PermanentError
from bot.integrations.kube import JSON, KubeClient, _int, _parse_time

RELEASE_TYPE = "helm.sh/release.v1"
MANAGED_BY = "app.kubernetes.io/managed-by"
RELEASE_NAME = "meta.helm.sh/release-name"
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
GZIP_MAGIC = b"\x1f\x8b\x08"


class HelmDecodeError(PermanentError):
    """A release Secret whose payload is not what Helm writes."""


@dataclass(frozen=True)
class HelmRelease:
    """One revision of a Helm release."""

    name: str
    namespace: str
    revision: int
    status: str
    chart: str
    chart_version: str
    app_version: str
    first_deployed: dt.datetime | None
    last_deployed: dt.datetime | None
    description: str
    manifest: str

    def as_output(self) -> dict[str, Any]:
        """JSON-able (no manifest)."""
        return {
            "revision": self.revision,
            "status": self.status,
            "chart": f"{self.chart}-{self.chart_version}",
            "app_version": self.app_version,
            "updated": self.last_deployed.isoformat() if self.last_deployed else None,
            "description": self.description,
        }


def decode_release(value: str | bytes) -> JSON:
    """The release JSON from a Secret's ``data.release`` as the API serves it (base64 of helm's base64)."""
    try:
        helm_text = base64.b64decode(value, validate=True)
        payload = base64.b64decode(helm_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HelmDecodeError(f"release payload is not base64: {exc}") from exc
    if payload[:3] == GZIP_MAGIC:
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError) as exc:
            raise HelmDecodeError(f"release payload is not valid gzip: {exc}") from exc
    try:
        release = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HelmDecodeError(f"release payload is not JSON: {exc}") from exc
    if not isinstance(release, dict):
        raise HelmDecodeError("release payload is not a JSON object")
    return release


def parse_release(release: Mapping[str, Any]) -> HelmRelease:
    """Summarise a decoded release."""
    info = release.get("info") or {}
    meta = (release.get("chart") or {}).get("metadata") or {}
    return HelmRelease(
        name=str(release.get("name", "")),
        namespace=str(release.get("namespace", "")),
        revision=_int(release.get("version")),
        status=str(info.get("status", "unknown")),
        chart=str(meta.get("name", "")),
        chart_version=str(meta.get("version", "")),
        app_version=str(meta.get("appVersion", "")),
        first_deployed=_parse_time(info.get("first_deployed")),
        last_deployed=_parse_time(info.get("last_deployed")),
        description=str(info.get("description", "")),
        manifest=str(release.get("manifest", "")),
    )


def release_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(release, namespace) when Helm manages the object, else None."""
    meta = obj.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    name = annotations.get(RELEASE_NAME)
    if labels.get(MANAGED_BY) != "Helm" or not name:
        return None
    return str(name), str(annotations.get(RELEASE_NAMESPACE) or meta.get("namespace", ""))


def rollback_command(release: str, revision: int, namespace: str) -> str:
    """What a person runs instead of a kubectl-style undo."""
    return f"helm rollback {release} {revision} -n {namespace}"


def _ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "at an unknown time"
    minutes = max(0, round((now - when).total_seconds() / 60))
    if minutes < 120:
        return f"{minutes} min ago"
    hours = minutes / 60
    return f"{hours:.0f} h ago" if hours < 48 else f"{hours / 24:.0f} days ago"


def describe_change(history: list[HelmRelease], now: dt.datetime) -> str | None:
    """ "release llm-d rev 7 → 8, chart 1.3.0 → 1.3.1, deployed 12 min ago" (None without history)."""
    if not history:
        return None
    new = history[-1]
    verb = "deployed" if new.status in ("deployed", "superseded") else new.status
    when = f"{verb} {_ago(new.last_deployed, now)}"
    if len(history) == 1:
        return f"release {new.name} rev {new.revision}, chart {new.chart_version}, {when}"
    old = history[-2]
    chart = (
        f"chart {old.chart_version} → {new.chart_version}"
        if old.chart_version != new.chart_version
        else f"chart {new.chart_version} (unchanged)"
    )
    return f"release {new.name} rev {old.revision} → {new.revision}, {chart}, {when}"


def manifest_object(manifest: str, kind: str, name: str) -> JSON | None:
    """The object of ``kind``/``name`` in a release manifest (helm's multi-document YAML)."""
    try:
        documents = list(yaml.safe_load_all(manifest))
    except yaml.YAMLError:
        return None
    for doc in documents:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == kind
            and (doc.get("metadata") or {}).get("name") == name
        ):
            return doc
    return None


class HelmHistory:
    """Release history read from the release Secrets (list with ``owner=helm,name=<release>``)."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    def history(self, namespace: str, release: str) -> list[HelmRelease]:
        """The release's revisions, oldest first (Secrets of another type or undecodable are skipped)."""
        self.kube._check_namespace(namespace)
        listing: JSON = self.kube._raw(
            f"list helm release secrets of {namespace}/{release}",
            lambda api: k8s.CoreV1Api(api).list_namespaced_secret(
                namespace, label_selector=f"owner=helm,name={release}", **self.kube._opts()
            ),
        )
        releases = []
        for secret in listing.get("items") or []:
            value = (secret.get("data") or {}).get("release")
            if secret.get("type") != RELEASE_TYPE or not value:
                continue
            try:
                releases.append(parse_release(decode_release(value)))
            except HelmDecodeError:
                continue
        return sorted(releases, key=lambda r: r.revision)

    def for_object(self, obj: Mapping[str, Any]) -> tuple[str, str, list[HelmRelease]] | None:
        """(release, namespace, history) for a Helm-managed object, else None."""
        found = release_of(obj)
        if found is None:
            return None
        release, namespace = found
        return release, namespace, self.history(namespace, release)


def previous_template(
    history: list[HelmRelease], kind: str, name: str, field: str
) -> tuple[JSON, HelmRelease] | None:
    """``spec.<field>`` of the object in the newest release before the current one that has it."""
    for release in reversed(history[:-1]):
        obj = manifest_object(release.manifest, kind, name)
        template = ((obj or {}).get("spec") or {}).get(field)
        if isinstance(template, dict):
            return template, release
    return None


def lws_template_fallback(kube: KubeClient) -> Callable[[JSON], tuple[JSON, str] | None]:
    """For a LeaderWorkerSet with no previous ControllerRevision: the previous Helm release's template."""

    def fallback(obj: JSON) -> tuple[JSON, str] | None:
        try:
            found = HelmHistory(kube).for_object(obj)
        except IncidentBotError:
            return None
        if found is None:
            return None
        release, _namespace, history = found
        previous = previous_template(
            history, "LeaderWorkerSet", obj["metadata"]["name"], "leaderWorkerTemplate"
        )
        if previous is None:
            return None
        template, rel = previous
        return template, f"helm release {release} rev {rel.revision} manifest"

    return fallback
