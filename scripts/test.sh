#!/usr/bin/env bash
# Install everything and run the whole test suite: lint, format check, types, tests.
# Usage: bash scripts/test.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
PYTHONPATH=. .venv/bin/lint-imports
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
