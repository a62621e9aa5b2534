"""Celery task names the Slack side sends or runs (routing: workers/celery_app.py task_routes)."""

from __future__ import annotations

#: Sync an incident's Slack messages (root + thread) with its state and timeline. Args: incident_id, event_id.
NOTIFY_INCIDENT = "workers.tasks.notify.incident_event"
#: Re-render a channel's alert-storm digest. Args: channel.
FLUSH_DIGEST = "workers.tasks.notify.flush_digest"
#: Run a slash command that the web side acknowledged. Args: the command's form fields (dict).
SLACK_COMMAND = "workers.tasks.notify.slack_command"
#: Handle a button click that the web side acknowledged. Args: the interaction fields (dict).
SLACK_ACTION = "workers.tasks.notify.slack_action"

#: Start a runbook run (workers/runbook_tasks.py). kwargs: incident_id, runbook, dry_run, trigger.
RUNBOOK_RUN = "workers.tasks.runbook.run"
#: Rollback flow (another issue). kwargs: namespace, deployment, to_revision, incident_id, dry_run, actor.
ROLLBACK_REQUEST = "workers.tasks.runbook.rollback_request"
#: Approval gate (another issue). args: incident_id, step_key, decision ("approve"|"deny"), actor.
APPROVAL_DECISION = "workers.tasks.runbook.approval_decision"
