#!/usr/bin/env bash
# Install the bot and play the built-in demo scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh --redis-only
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/incident-bot demo "$@"
