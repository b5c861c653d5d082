#!/usr/bin/env bash
# Set up everything the tests need (idempotent, cached outside the repo), lint (ruff check and
# format --check), and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f scripts/setup_editors.sh ] && bash scripts/setup_editors.sh
. .venv/bin/activate
ruff check .  # what is not linted is excluded in pyproject.toml's [tool.ruff]
ruff format --check .
python -m pytest -q "$@"
