"""The preview of a rollback: current and target revisions, what changes, the server-side dry run.

`build_preview` reads the Deployment and its history through the Kubernetes adapter and refuses, with
a reason a person can act on, whatever `kubectl rollout undo` would refuse or do nothing for, plus a
Deployment whose latest change the controller has not observed yet. The diff itself is pure
(`bot.rollback.diff`); the dry run is the adapter's undo with ``dryRun=All``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.errors import IncidentBotError, PermanentError
from bot.integrations.helm import (
    HelmHistory,
    describe_change,
    lws_template_fallback,
    release_of,
    rollback_command,
)
from bot.integrations.kube import (
    HASH_LABEL,
    DeploymentSummary,
    KubeClient,
    KubeNotFound,
    NamespaceNotAllowed,
    RevisionInfo,
    same_template,
)
from bot.integrations.workloads import workload_for
from bot.rollback.diff import Change, diff_templates


class Refused(PermanentError):
    """The rollback cannot go ahead; `code` names the rule, the message says why and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RevisionView:
    """One revision as the preview shows it."""

    revision: int
    replicaset: str
    created: datetime | None
    images: tuple[str, ...]

    def age_s(self, now: datetime) -> float | None:
        """Seconds since the revision's ReplicaSet was created."""
        return (now - self.created).total_seconds() if self.created else None


@dataclass(frozen=True)
class Preview:
    """Everything a person needs to approve a rollback."""

    namespace: str
    deployment: str
    current: RevisionView
    target: RevisionView
    changes: tuple[Change, ...]
    dry_run_ok: bool
    dry_run_message: str
    generation: int
    revisions: tuple[int, ...]
    at: datetime
    kind: str = "Deployment"
    source: str = ""
    """Where the target template comes from when it is not a revision the cluster keeps (a Helm release)."""
    helm: dict[str, Any] | None = None
    argo: dict[str, Any] | None = None
    """For a Rollout (bot.rollback.preview_argo): abort or undo, weight, stable/canary images, analysis."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored with the request."""

        def rev(r: RevisionView) -> dict[str, Any]:
            return {
                "revision": r.revision,
                "replicaset": r.replicaset,
                "created": r.created.isoformat() if r.created else None,
                "age_s": r.age_s(self.at),
                "images": list(r.images),
            }

        return {
            "namespace": self.namespace,
            "deployment": self.deployment,
            "current": rev(self.current),
            "target": rev(self.target),
            "changes": [{"kind": c.kind, "container": c.container, "text": c.text} for c in self.changes],
            "dry_run_ok": self.dry_run_ok,
            "dry_run_message": self.dry_run_message,
            "generation": self.generation,
            "revisions": list(self.revisions),
            "at": self.at.isoformat(),
            "kind": self.kind,
            "source": self.source,
            "helm": self.helm,
            **({"argo": self.argo} if self.argo is not None else {}),
        }


def _view(info: RevisionInfo) -> RevisionView:
    return RevisionView(info.revision, info.replicaset, info.created, info.images)


def _clean(template: Any) -> Any:
    copy = dict(template)
    meta = dict(copy.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    meta["labels"] = labels
    copy["metadata"] = meta
    return copy


def live_template(kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """What a revision records of the live object (an LWS's leaderWorkerTemplate, else the pod template)."""
    field = "leaderWorkerTemplate" if kind == "LeaderWorkerSet" else "template"
    return dict((raw.get("spec") or {}).get(field) or {})


def _is_current(kind: str, target: RevisionInfo, live: Mapping[str, Any]) -> bool:
    if kind in ("Deployment", "Rollout"):
        return same_template(_clean(target.template), live)
    return dict(target.template) == {k: v for k, v in live.items() if k != "$patch"}


def template_changes(kind: str, live: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[Change, ...]:
    """What the rollback changes; a LeaderWorkerSet's leader and worker templates are diffed apart."""
    if kind != "LeaderWorkerSet":
        return tuple(diff_templates(live, target))
    changes: list[Change] = []
    if live.get("size") != target.get("size"):
        changes.append(Change("pod", "", f"group size {live.get('size')} → {target.get('size')}"))
    for role, short in (("leaderTemplate", "leader"), ("workerTemplate", "worker")):
        for c in diff_templates(live.get(role) or {}, target.get(role) or {}):
            changes.append(Change(c.kind, f"{short}/{c.container}" if c.container else short, c.text))
    return tuple(changes)


def helm_info(kube: KubeClient, raw: Mapping[str, Any], target: str, now: datetime) -> dict[str, Any] | None:
    """The Helm release managing the workload, its latest change and the ``helm rollback`` to run."""
    found = release_of(raw)
    if found is None:
        return None
    release, namespace = found
    info: dict[str, Any] = {"release": release, "namespace": namespace}
    try:
        history = HelmHistory(kube).history(namespace, release)
    except IncidentBotError as exc:
        history, info["error"] = [], f"release history unreadable: {exc}"
    info["change"] = describe_change(history, now)
    info["current_revision"] = history[-1].revision if history else None
    previous = history[-2].revision if len(history) >= 2 else None
    info["previous_revision"] = previous
    command = (
        rollback_command(release, previous, namespace)
        if previous
        else f"helm history {release} -n {namespace}"
    )
    info["rollback_command"] = command
    info["warning"] = (
        f"{target} is managed by Helm release {release}: this kubectl-style undo is reverted by the next "
        f"`helm upgrade`. To make it stick, run `{command}`."
    )
    return info


def _read(
    workload: Any, kind: str, namespace: str, name: str
) -> tuple[DeploymentSummary, dict[str, Any], list[RevisionInfo]]:
    try:
        return workload.get(namespace, name), workload.raw(namespace, name), workload.history(namespace, name)
    except NamespaceNotAllowed as exc:
        raise Refused("namespace_not_allowed", str(exc)) from exc
    except KubeNotFound as exc:
        raise Refused("not_found", f"{kind.lower()} {namespace}/{name} not found ({exc})") from exc


def _pick_target(
    workload: Any, raw: dict[str, Any], target_name: str, history: list[RevisionInfo], current_rev: int,
    to_revision: int | None,
) -> RevisionInfo:  # fmt: skip
    by_revision = {r.revision: r for r in history}
    if to_revision is not None:
        target = by_revision.get(to_revision)
        if target is None:
            raise Refused(
                "revision_not_found",
                f"revision {to_revision} is not in the history of {target_name} "
                f"(known: {', '.join(str(r) for r in sorted(by_revision))})",
            )
        return target
    older = sorted(r for r in by_revision if r != current_rev)
    if older:
        return by_revision[older[-1]]
    fallback = getattr(workload, "_no_history", None)
    found = fallback(raw["metadata"]["namespace"], raw["metadata"]["name"], raw) if fallback else None
    if found is None:
        raise Refused("no_previous_revision", f"{target_name} has no previous revision to roll back to")
    template, revision, source = found
    return RevisionInfo(revision, source, None, workload.images_of(template), None, 0, template)


def build_preview(
    kube: KubeClient,
    namespace: str,
    deployment: str,
    to_revision: int | None,
    *,
    now: datetime,
    kind: str = "Deployment",
) -> Preview:
    """Read the workload and its history, diff current vs target, dry-run the undo; or raise Refused."""
    workload = workload_for(kube, kind, fallback=lws_template_fallback(kube))
    dep, raw, history = _read(workload, kind, namespace, deployment)
    target_name = f"{namespace}/{deployment}"
    if dep.paused:
        raise Refused(
            "paused", f"{target_name} is paused; resume it (kubectl rollout resume) before rolling back"
        )
    if dep.generation > dep.observed_generation:
        raise Refused(
            "rollout_in_progress",
            f"{target_name} changed a moment ago (generation {dep.generation} not yet observed by the "
            "controller); wait for the rollout to start, then request again",
        )
    by_revision = {r.revision: r for r in history}
    current_rev = dep.revision or (max(by_revision) if by_revision else 0)
    current = by_revision.get(current_rev)
    if current is None:
        raise Refused("no_previous_revision", f"{target_name} has no rollout history")
    target = _pick_target(workload, raw, target_name, history, current_rev, to_revision)
    live = live_template(kind, raw)
    if target.revision == current_rev or _is_current(kind, target, live):
        raise Refused(
            "target_is_current",
            f"{revision_label({'revision': target.revision}, target.replicaset)} of {target_name} is what "
            "runs now; nothing to roll back",
        )
    source = target.replicaset if target.revision == 0 else ""
    try:
        result = workload.undo(namespace, deployment, target.revision or None, dry_run=True)
        where = f"the {source}" if source else f"revision {result.to_revision}"
        ok, message = True, f"server-side dry run accepted the change to {where}"
    except IncidentBotError as exc:
        ok, message = False, f"server-side dry run refused: {exc}"
    return Preview(
        namespace=namespace,
        deployment=deployment,
        current=_view(current),
        target=_view(target),
        changes=template_changes(kind, live, target.template),
        dry_run_ok=ok,
        dry_run_message=message,
        generation=dep.generation,
        revisions=tuple(sorted(by_revision)),
        at=now,
        kind=kind,
        source=source,
        helm=helm_info(kube, raw, f"{kind} {target_name}", now),
    )


def age_text(seconds: float | None) -> str:
    """`42s`, `17 min`, `3 h`, `2 d` ago, or `age unknown`."""
    if seconds is None:
        return "age unknown"
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} d ago"


def revision_label(view: Mapping[str, Any], source: str = "", kind: str = "Deployment") -> str:
    """``revision 3`` (``template revision 3`` for a kind whose history is ControllerRevisions), or where a
    template the cluster no longer keeps comes from."""
    if not view.get("revision") and source:
        return source
    word = "template revision" if kind in ("LeaderWorkerSet", "StatefulSet") else "revision"
    return f"{word} {view.get('revision')}"


def argo_lines(argo: dict[str, Any]) -> list[str]:
    """What a Rollout's preview adds: the action and its meaning, the canary, the failed analysis."""
    lines = [f"  action:  {argo['action_text']}"]
    if argo.get("canary_images"):
        lines.append(
            f"  canary:  {', '.join(argo['canary_images'])} at {argo['canary_weight']}% "
            f"({argo['phase']}, step {argo['step']})"
        )
    lines.append(f"  stable:  {', '.join(argo['stable_images']) or 'unknown'}")
    if argo.get("failed_analysis"):
        lines.append(
            f"  analysis {argo['failed_analysis']} failed: {argo.get('failed_analysis_message') or ''}"
        )
    return lines


def preview_lines(p: dict[str, Any]) -> list[str]:
    """The stored preview as plain text lines (the CLI prints these)."""
    cur, tgt = p["current"], p["target"]
    kind = p.get("kind") or "Deployment"
    argo = p.get("argo")
    if argo:
        action = "Abort" if argo["action"] == "abort" else "Rollback"
        what = f"{action} of Rollout {p['namespace']}/{p['deployment']}"
    elif kind == "Deployment":
        what = f"Rollback of {p['namespace']}/{p['deployment']}"
    else:
        what = f"Rollback of {kind} {p['namespace']}/{p['deployment']}"
    lines = [
        what,
        *(argo_lines(argo) if argo else []),
        f"  current: {revision_label(cur, '', kind)} ({age_text(cur['age_s'])}): {', '.join(cur['images'])}",
        f"  target:  {revision_label(tgt, p.get('source', ''), kind)} ({age_text(tgt['age_s'])}): "
        f"{', '.join(tgt['images'])}",
        "  changes:",
    ]
    changes: Sequence[dict[str, str]] = p["changes"]
    for c in changes or [{"container": "", "text": "none in the pod template"}]:
        where = f"[{c['container']}] " if c["container"] else ""
        lines.append(f"    - {where}{c['text']}")
    lines.append(f"  dry run: {p['dry_run_message']}")
    helm = p.get("helm")
    if helm:
        if helm.get("change"):
            lines.append(f"  helm: {helm['change']}")
        lines.append(f"  WARNING: {helm['warning']}")
    return lines
