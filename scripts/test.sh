#!/usr/bin/env bash
# The test command: install, lint, run the test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m ruff check .
WANDB_MODE=offline HF_HUB_OFFLINE=1 python3 -m pytest -q -p no:cacheprovider tests
