"""The command line (incidents list/show, errors) and secret redaction in logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from bot.cli import main, redact_url
from bot.logconfig import RedactingFilter
from bot.models import AlertmanagerWebhook
from bot.storage.incidents import IncidentStore
from tests.support.payloads import alert, notification


def apply(store: IncidentStore, body: dict[str, object]) -> None:
    w = AlertmanagerWebhook.model_validate(body)
    store.apply_notification(w, w.idempotency_key())


def test_incidents_list_and_show(store: IncidentStore, capsys: pytest.CaptureFixture[str]) -> None:
    apply(store, notification([alert(severity="critical")]))
    apply(store, notification([alert(status="resolved", severity="critical")]))
    assert main(["incidents", "list"]) == 0
    out = capsys.readouterr().out
    assert "INC-0001" in out and "resolved" in out and "P1" in out
    assert main(["incidents", "show", "inc-0001"]) == 0
    out = capsys.readouterr().out
    assert "opened" in out and "resolved" in out and "critical-alert" in out
    assert main(["incidents", "show", "INC-0001", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["kind"] for t in data["timeline"]] == ["opened", "resolved"]
    assert main(["incidents", "list", "--open", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_unknown_incident_is_a_clear_error(store: IncidentStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["incidents", "show", "INC-9999"]) == 1
    assert "no incident 'INC-9999'" in capsys.readouterr().err


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh process with only `env` (plus PATH) as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_unreachable_redis_is_a_clear_error_without_password() -> None:
    r = run_cli({"REDIS_URL": "redis://:hunter2secret@127.0.0.1:1/0"}, "incidents", "list")
    assert r.returncode == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in r.stderr
    assert "hunter2secret" not in r.stderr + r.stdout


def test_bad_configuration_exits_2_naming_the_setting() -> None:
    r = run_cli({"ALERTMANAGER_USERNAME": "am"}, "incidents", "list")
    assert r.returncode == 2
    assert "ALERTMANAGER_PASSWORD" in r.stderr


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "worker", "beat", "dev", "incidents", "classify", "demo"):
        assert command in out


def test_redact_url() -> None:
    assert redact_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://user:pw@host/1") == "redis://user:***@host/1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_secrets_never_reach_log_output() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token is %s, again %s", ("s3cr3t-tok", "s3cr3t-tok"), None
    )
    assert RedactingFilter(["s3cr3t-tok"]).filter(record)
    assert record.getMessage() == "token is ***, again ***"


def test_a_missing_module_is_one_line_naming_what_to_install(tmp_path: object) -> None:
    code = (
        "import sys; sys.modules['cryptography'] = None; from bot.cli import main; "
        "sys.exit(main(['sandbox', 'up', '--duration', '0']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "incident-bot: Python module 'cryptography' is not installed: pip install cryptography  "
        "(or reinstall the bot: pip install -e .)"
    ]
    assert "Traceback" not in r.stderr


def test_missing_vllm_names_the_extra() -> None:
    from bot.cli import missing_module_hint

    hint = missing_module_hint(ModuleNotFoundError("No module named 'vllm.engine'", name="vllm.engine"))
    assert hint == "Python module 'vllm' is not installed: pip install 'llmd-incident-bot[vllm]'"
