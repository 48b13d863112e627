#!/usr/bin/env bash
# The test command: install, lint, run the test suite on the CPU (what CI runs).
# --quick: only the tests not marked slow (every package, under 3 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
select=()
case "${1:-}" in
  "") ;;
  --quick) select=(-m "not slow") ;;
  *) echo "usage: bash scripts/test.sh [--quick]" >&2; exit 2 ;;
esac
bash scripts/setup.sh
. scripts/activate
python3 -m ruff check .
WANDB_MODE=offline HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  python3 -m pytest -p no:cacheprovider ${select[@]+"${select[@]}"} tests  # -q -rs: pyproject
