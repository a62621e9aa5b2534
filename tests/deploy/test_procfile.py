"""The Procfile and the manifests run the same commands."""

from __future__ import annotations

import shlex

from tests.deploy.conftest import ROOT, pod_specs, rendered

# Options a manifest may add after a Procfile command (sizing for the pod, not a different program).
EXTRA_OPTIONS = {"--concurrency", "--pool"}


def procfile() -> dict[str, list[str]]:
    """Process type -> argv, with ${PORT:-8080} as the manifests spell it."""
    out = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            out[name.strip()] = shlex.split(command.replace("${PORT:-8080}", "8080"))
    return out


def container_commands(overlay: str) -> dict[str, list[str]]:
    """kind/name/container -> command + args of every bot container."""
    out = {}
    for name, spec in pod_specs(rendered(overlay)):
        for container in spec["containers"]:
            argv = [*container.get("command", []), *container.get("args", [])]
            if argv and argv[0] == "incident-bot":
                out[f"{name}/{container['name']}"] = argv

    return out


def matches(procfile_argv: list[str], argv: list[str]) -> bool:
    """Whether argv is the Procfile command, optionally followed by sizing options."""
    head, tail = argv[: len(procfile_argv)], argv[len(procfile_argv) :]
    return head == procfile_argv and all(tail[i] in EXTRA_OPTIONS for i in range(0, len(tail), 2))


def test_each_procfile_command_runs_in_the_manifests(overlay: str) -> None:
    commands = container_commands(overlay)
    for name, argv in procfile().items():
        assert any(matches(argv, c) for c in commands.values()), (
            f"Procfile {name!r} ({argv}) not in {overlay}"
        )


def test_each_manifest_command_is_in_the_procfile(overlay: str) -> None:
    entries = procfile().values()
    for where, argv in container_commands(overlay).items():
        assert any(matches(p, argv) for p in entries), f"{where} runs {argv}, which the Procfile lacks"
