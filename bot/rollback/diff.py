"""What a rollback changes: a pure diff of two pod templates, safe to show in a shared channel.

Shown: container images, command/args (flag by flag; the vLLM container's model and flags called out),
env var NAMES with where each value comes from, envFrom sources, resources (``nvidia.com/gpu``, cpu,
memory …), added/removed containers, and which other pod-spec fields differ (by key only).

Never shown: env values. A value from a Secret is not in the template at all; a plain ``value`` is not
shown either, only "value changed", because inline values are where credentials end up in practice
(``HF_TOKEN`` pasted into a manifest) and the preview is posted to a channel many people read. The
value's hash is compared, so a change is still detected. Flag values that look like credentials
(``--api-key``, ``--hf-token`` …) are redacted the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REDACTED = "<redacted>"
_SECRETISH = re.compile(r"(?i)(token|secret|passw(or)?d|api[-_]?key|credential|auth)")
_VLLM_IMAGE = re.compile(r"(?i)vllm")


@dataclass(frozen=True)
class Change:
    """One difference between the current and the target pod template."""

    kind: str  # image | model | flag | args | command | env | env_from | resources | container | pod
    container: str  # "" for pod-level changes
    text: str  # human-readable, with no secret or plain env value in it

    def __str__(self) -> str:
        where = f"[{self.container}] " if self.container else ""
        return f"{where}{self.text}"


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def env_source(var: Mapping[str, Any]) -> str:
    """Where an env var's value comes from, without the value: `value`, `secret name/key`, …"""
    if "valueFrom" not in var:
        return "value"
    source = var.get("valueFrom") or {}
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"] or {}
        return f"secret {ref.get('name', '?')}/{ref.get('key', '?')}"
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"] or {}
        return f"configMap {ref.get('name', '?')}/{ref.get('key', '?')}"
    if "fieldRef" in source:
        return f"field {(source['fieldRef'] or {}).get('fieldPath', '?')}"
    if "resourceFieldRef" in source:
        return f"resource {(source['resourceFieldRef'] or {}).get('resource', '?')}"
    return "valueFrom"


def _env(container: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (source, fingerprint of the value or reference)."""
    out = {}
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        out[name] = (env_source(var), _fingerprint(var.get("value", var.get("valueFrom"))))
    return out


def _env_from(container: Mapping[str, Any]) -> set[str]:
    out = set()
    for item in container.get("envFrom") or []:
        prefix = f" (prefix {item['prefix']})" if item.get("prefix") else ""
        if "secretRef" in item:
            out.add(f"secret {(item['secretRef'] or {}).get('name', '?')}{prefix}")
        elif "configMapRef" in item:
            out.add(f"configMap {(item['configMapRef'] or {}).get('name', '?')}{prefix}")
    return out


def parse_flags(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split a command line into positionals and `--flag value` / `--flag=value` / `--switch` pairs."""
    positional: list[str] = []
    flags: dict[str, str] = {}
    i = 0
    items = [str(a) for a in args]
    while i < len(items):
        word = items[i]
        if word.startswith("-") and len(word) > 1 and not _number(word):
            name, eq, value = word.partition("=")
            if eq:
                flags[name] = value
            elif i + 1 < len(items) and not (items[i + 1].startswith("-") and not _number(items[i + 1])):
                flags[name] = items[i + 1]
                i += 1
            else:
                flags[name] = ""
        else:
            positional.append(word)
        i += 1
    return positional, flags


def _number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _shown(flag: str, value: str) -> str:
    return REDACTED if value and _SECRETISH.search(flag) else value


def _is_vllm(container: Mapping[str, Any]) -> bool:
    return container.get("name") == "vllm" or bool(_VLLM_IMAGE.search(str(container.get("image", ""))))


def vllm_model(container: Mapping[str, Any]) -> str | None:
    """The model a vLLM container serves: `--model X`, or `vllm serve X`."""
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    positional, flags = parse_flags(words)
    if flags.get("--model"):
        return flags["--model"]
    if "serve" in positional:
        after = positional[positional.index("serve") + 1 :]
        return after[0] if after else None
    return None


def _flag_changes(name: str, current: Sequence[str], target: Sequence[str], what: str) -> list[Change]:
    cur_pos, cur_flags = parse_flags(current)
    tgt_pos, tgt_flags = parse_flags(target)
    changes = []
    for flag in sorted(set(cur_flags) | set(tgt_flags)):
        if flag == "--model":
            continue  # reported as the model
        before, after = cur_flags.get(flag), tgt_flags.get(flag)
        if before == after:
            continue
        if before is None:
            changes.append(
                Change("flag", name, f"{what} flag {flag} {_shown(flag, after or '')}".rstrip() + " added")
            )
        elif after is None:
            changes.append(Change("flag", name, f"{what} flag {flag} removed"))
        elif REDACTED in (_shown(flag, before), _shown(flag, after)):
            changes.append(Change("flag", name, f"{what} flag {flag} value changed ({REDACTED})"))
        else:
            changes.append(
                Change("flag", name, f"{what} flag {flag}: {before or '(set)'} -> {after or '(set)'}")
            )
    if cur_pos != tgt_pos:
        changes.append(
            Change("args", name, f"{what} positional arguments: {' '.join(cur_pos)} -> {' '.join(tgt_pos)}")
        )
    return changes


def _resources(container: Mapping[str, Any]) -> dict[str, str]:
    res = container.get("resources") or {}
    out = {}
    for kind in ("requests", "limits"):
        for resource, amount in (res.get(kind) or {}).items():
            out[f"{kind} {resource}"] = str(amount)
    return out


def _container_changes(current: Mapping[str, Any], target: Mapping[str, Any]) -> list[Change]:
    name = str(target.get("name") or current.get("name"))
    changes = []
    if current.get("image") != target.get("image"):
        changes.append(Change("image", name, f"image {current.get('image')} -> {target.get('image')}"))
    if _is_vllm(target) or _is_vllm(current):
        model_before, model_after = vllm_model(current), vllm_model(target)
        if model_before != model_after:
            changes.append(Change("model", name, f"model {model_before} -> {model_after}"))
    changes += _flag_changes(name, current.get("command") or [], target.get("command") or [], "command")
    changes += _flag_changes(name, current.get("args") or [], target.get("args") or [], "args")
    cur_env, tgt_env = _env(current), _env(target)
    for var in sorted(set(cur_env) | set(tgt_env)):
        before, after = cur_env.get(var), tgt_env.get(var)
        if before == after:
            continue
        if before is None:
            assert after is not None
            changes.append(Change("env", name, f"env {var} added (from {after[0]})"))
        elif after is None:
            changes.append(Change("env", name, f"env {var} removed (was from {before[0]})"))
        elif before[0] != after[0]:
            changes.append(Change("env", name, f"env {var} source {before[0]} -> {after[0]}"))
        else:
            changes.append(Change("env", name, f"env {var} value changed (from {after[0]}; not shown)"))
    cur_from, tgt_from = _env_from(current), _env_from(target)
    for source in sorted(tgt_from - cur_from):
        changes.append(Change("env_from", name, f"envFrom {source} added"))
    for source in sorted(cur_from - tgt_from):
        changes.append(Change("env_from", name, f"envFrom {source} removed"))
    cur_res, tgt_res = _resources(current), _resources(target)
    for key in sorted(set(cur_res) | set(tgt_res)):
        if cur_res.get(key) != tgt_res.get(key):
            changes.append(
                Change(
                    "resources", name, f"{key}: {cur_res.get(key, 'unset')} -> {tgt_res.get(key, 'unset')}"
                )
            )
    rest = {"image", "command", "args", "env", "envFrom", "resources", "name"}
    other = sorted(k for k in set(current) | set(target) if k not in rest and current.get(k) != target.get(k))
    if other:
        changes.append(Change("container", name, f"also differs: {', '.join(other)}"))
    return changes


def diff_templates(current: Mapping[str, Any], target: Mapping[str, Any]) -> list[Change]:
    """What rolling back from the `current` pod template to `target` changes (no values of env vars)."""
    cur_spec, tgt_spec = current.get("spec") or {}, target.get("spec") or {}
    changes: list[Change] = []
    for field, label in (("initContainers", "init container"), ("containers", "container")):
        cur = {str(c.get("name")): c for c in cur_spec.get(field) or []}
        tgt = {str(c.get("name")): c for c in tgt_spec.get(field) or []}
        for name in [n for n in tgt if n not in cur]:
            changes.append(Change("container", name, f"{label} added (image {tgt[name].get('image')})"))
        for name in [n for n in cur if n not in tgt]:
            changes.append(Change("container", name, f"{label} removed (image {cur[name].get('image')})"))
        for name in [n for n in tgt if n in cur]:
            changes += _container_changes(cur[name], tgt[name])
    pod_keys = sorted(
        k
        for k in set(cur_spec) | set(tgt_spec)
        if k not in ("containers", "initContainers") and cur_spec.get(k) != tgt_spec.get(k)
    )
    if pod_keys:
        changes.append(Change("pod", "", f"pod spec also differs: {', '.join(pod_keys)}"))
    cur_meta, tgt_meta = current.get("metadata") or {}, target.get("metadata") or {}
    for part in ("labels", "annotations"):
        a = {k: v for k, v in (cur_meta.get(part) or {}).items() if k != "pod-template-hash"}
        b = {k: v for k, v in (tgt_meta.get(part) or {}).items() if k != "pod-template-hash"}
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if keys:
            changes.append(Change("pod", "", f"template {part} differ: {', '.join(keys)}"))
    return changes


def summary(changes: Sequence[Change], limit: int = 6) -> str:
    """One line for audit records and PagerDuty: the first changes, then a count."""
    if not changes:
        return "no template differences"
    shown = "; ".join(str(c) for c in changes[:limit])
    more = len(changes) - limit
    return shown + (f"; +{more} more" if more > 0 else "")
