#!/usr/bin/env bash
# Install continual-sim with its test tools and language-model extras into the current Python
# (torch 2.14.1 / torchvision 0.29.1 ranges). SmolLM2 for the CKL experiment: see docs/language_models.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[dev,lm]'
