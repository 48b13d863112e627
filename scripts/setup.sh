#!/usr/bin/env bash
# Install continual-sim with its test tools into the current Python (torch 2.14.1 / torchvision 0.29.1 ranges).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[dev]'
