"""The shipped step types; importing this package registers them all in ``bot.plan.steptypes``.

Whoever needs them registered (``bot.wiring.build_engine``, the runbook CLI, tests) imports ``bot.steps``;
the registry itself never does.
"""

from __future__ import annotations

from bot.steps import argo, flow, k8s, prometheus, vllm

__all__ = ["argo", "flow", "k8s", "prometheus", "vllm"]
