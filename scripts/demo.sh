#!/usr/bin/env bash
# Install the bot (runtime dependencies only) and play the built-in demo scenario.
# The venv is .venv unless INCIDENT_BOT_VENV names another one (CI proves this command in a fresh venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${INCIDENT_BOT_VENV:-.venv}"
bash scripts/services.sh --redis-only
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e .
exec "$venv/bin/incident-bot" demo "$@"
