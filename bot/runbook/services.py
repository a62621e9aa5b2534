"""The adapters a runbook's steps use, created lazily so a read-only run needs only what it touches.

``bot.wiring`` hands in the Kubernetes and Prometheus clients, or factories that build them on first use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from bot.errors import ConfigError, IntentMissing
from bot.integrations.argo import ActionResult, ArgoRollouts
from bot.integrations.helm import lws_template_fallback
from bot.integrations.kube import DeploymentSummary, KubeClient, ScaleResult, UndoResult
from bot.integrations.prometheus import PrometheusClient
from bot.integrations.vllm import VLLMClient, run_sync
from bot.integrations.workloads import workload_for
from bot.settings import Settings
from bot.storage.incidents import IncidentStore

if TYPE_CHECKING:
    from bot.plan.steptypes import StepContext

T = TypeVar("T")


class Services:
    """Kubernetes, Prometheus, vLLM and plain-HTTP access for steps, plus the incident store."""

    def __init__(
        self,
        settings: Settings,
        store: IncidentStore,
        *,
        kube: KubeClient | None = None,
        prometheus: PrometheusClient | None = None,
        vllm_endpoints: list[str] | None = None,
        kube_factory: Callable[[], KubeClient] | None = None,
        prometheus_factory: Callable[[], PrometheusClient] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._kube = kube
        self._prometheus = prometheus
        self._kube_factory = kube_factory
        self._prometheus_factory = prometheus_factory
        self.vllm_endpoints = list(vllm_endpoints if vllm_endpoints is not None else settings.vllm_endpoints)

    @property
    def kube(self) -> KubeClient:
        """The Kubernetes adapter (built by the factory on first use)."""
        if self._kube is None:
            if self._kube_factory is None:
                raise ConfigError("no Kubernetes client was wired into the runbook services")
            self._kube = self._kube_factory()
        return self._kube

    def kube_for(self, ctx: StepContext) -> GuardedKube:
        """The adapter as a step sees it: dry-run applied, mutations refused before the intent."""
        return GuardedKube(self.kube, ctx)

    def prometheus(self) -> PrometheusClient | None:
        """The Prometheus client, or None when PROMETHEUS_URL is not set (or no factory was wired)."""
        if self._prometheus is None and self.settings.prometheus_url and self._prometheus_factory:
            self._prometheus = self._prometheus_factory()
        return self._prometheus

    def vllm(self, factory: Callable[[VLLMClient], Coroutine[Any, Any, T]]) -> T:
        """Run one vLLM client coroutine to completion."""
        if not self.vllm_endpoints:
            raise ConfigError("no vLLM endpoints configured (VLLM_ENDPOINTS)")
        return run_sync(factory, self.settings)

    def http(self, timeout: float) -> httpx.Client:
        """A plain HTTP client for probes (no environment proxies)."""
        return httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False)

    def close(self) -> None:
        """Release connection pools."""
        if self._kube is not None:
            self._kube.close()
        if self._prometheus is not None:
            self._prometheus.close()


class GuardedKube:
    """KubeClient as a step sees it: reads pass through; changes carry the dry-run flag and need an intent."""

    def __init__(self, kube: KubeClient, ctx: StepContext) -> None:
        self._kube = kube
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    def _may_change(self, what: str) -> bool:
        if not self._ctx.dry_run and not self._ctx.scratch.get("intent_recorded"):
            raise IntentMissing(f"{self._ctx.step_type}: {what} attempted before ctx.record_intent()")
        return self._ctx.dry_run

    def scale(self, namespace: str, name: str, replicas: int) -> ScaleResult:
        """Scale (server-side dry run when the run is a dry run)."""
        return self._kube.scale(namespace, name, replicas, dry_run=self._may_change("scale"))

    def rollout_restart(
        self, namespace: str, name: str, *, now: dt.datetime | None = None
    ) -> DeploymentSummary:
        """Rollout restart (server-side dry run when the run is a dry run)."""
        return self._kube.rollout_restart(namespace, name, dry_run=self._may_change("restart"), now=now)

    def rollout_undo(self, namespace: str, name: str, *, to_revision: int | None = None) -> UndoResult:
        """Rollout undo (server-side dry run when the run is a dry run)."""
        return self._kube.rollout_undo(
            namespace, name, to_revision=to_revision, dry_run=self._may_change("undo")
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod (server-side dry run when the run is a dry run)."""
        self._kube.delete_pod(namespace, name, dry_run=self._may_change("delete pod"))

    def workload(self, kind: str | None) -> GuardedWorkload:
        """The adapter for ``kind`` (Deployment when empty), with the same dry-run and intent rules."""
        adapter = workload_for(self._kube, kind, fallback=lws_template_fallback(self._kube))
        return GuardedWorkload(adapter, self)

    @property
    def argo(self) -> GuardedArgo:
        """The Argo Rollouts adapter over the same client, with the same dry-run and intent rules."""
        return GuardedArgo(ArgoRollouts(self._kube), self)


class GuardedArgo:
    """ArgoRollouts as a step sees it: reads pass through; actions need the intent and carry the dry run."""

    def __init__(self, argo: ArgoRollouts, guard: GuardedKube) -> None:
        self._argo = argo
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        if name in ("abort", "retry", "pause", "promote", "undo", "restart"):
            raise AttributeError(name)
        return getattr(self._argo, name)

    def abort(self, namespace: str, name: str) -> ActionResult:
        """Abort (server-side dry run when the run is a dry run)."""
        return self._argo.abort(namespace, name, dry_run=self._guard._may_change("abort"))

    def retry(self, namespace: str, name: str) -> ActionResult:
        """Retry an aborted Rollout."""
        return self._argo.retry(namespace, name, dry_run=self._guard._may_change("retry"))

    def pause(self, namespace: str, name: str) -> ActionResult:
        """Pause."""
        return self._argo.pause(namespace, name, dry_run=self._guard._may_change("pause"))

    def promote(self, namespace: str, name: str, *, full: bool = False) -> ActionResult:
        """Promote one step or fully."""
        return self._argo.promote(namespace, name, full=full, dry_run=self._guard._may_change("promote"))

    def undo(self, namespace: str, name: str, to_revision: int | None = None) -> UndoResult:
        """Undo to a revision."""
        return self._argo.undo(namespace, name, to_revision, dry_run=self._guard._may_change("undo"))


class GuardedWorkload:
    """A Workload as a step sees it: reads pass through; scale, restart and undo need the intent."""

    def __init__(self, workload: Any, guard: GuardedKube) -> None:
        self._workload = workload
        self._guard = guard
        self.kind: str = workload.kind

    def __getattr__(self, name: str) -> Any:
        if name in ("scale", "restart", "undo"):
            raise AttributeError(name)
        return getattr(self._workload, name)

    def scale(self, namespace: str, name: str, replicas: int) -> ScaleResult:
        """Scale (server-side dry run when the run is a dry run)."""
        result: ScaleResult = self._workload.scale(
            namespace, name, replicas, dry_run=self._guard._may_change("scale")
        )
        return result

    def restart(self, namespace: str, name: str, *, now: dt.datetime | None = None) -> DeploymentSummary:
        """Rolling restart."""
        result: DeploymentSummary = self._workload.restart(
            namespace, name, dry_run=self._guard._may_change("restart"), now=now
        )
        return result

    def undo(self, namespace: str, name: str, to_revision: int | None = None) -> UndoResult:
        """Back to the previous (or the given) revision."""
        result: UndoResult = self._workload.undo(
            namespace, name, to_revision, dry_run=self._guard._may_change("undo")
        )
        return result
