#!/usr/bin/env bash
# Install continual-sim (editable) with its test tools and language-model extras, and the data
# the tests and documented commands read (scripts/install_data.sh).
#
# Where: the repo's .venv when there is one; else python3, unless python3 refuses pip
# (externally managed, PEP 668: Debian 12, Ubuntu 23.04+), in which case .venv is created
# with --system-site-packages, so an installed torch is reused. --venv: always use .venv.
# Afterwards `. scripts/activate` puts that Python first on PATH (scripts/test.sh does it itself).
# SmolLM2 for the CKL experiment: see docs/language_models.md.
set -euo pipefail
cd "$(dirname "$0")/.."

want_venv=false
[ "${1:-}" = --venv ] && want_venv=true
externally_managed() {
  python3 - <<'PY'
import pathlib, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = pathlib.Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED"
sys.exit(0 if marker.exists() and not in_venv else 1)
PY
}
if [ ! -x .venv/bin/python ] && { $want_venv || externally_managed; }; then
  $want_venv || echo "setup: $(command -v python3) is externally managed (PEP 668): installing into .venv instead"
  python3 -m venv --system-site-packages .venv
fi
PY=python3
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
fi

"$PY" -m pip install -q -e '.[dev,lm]'
bash scripts/install_data.sh
if [ "$PY" = .venv/bin/python ] && [ "${VIRTUAL_ENV:-}" != "$PWD/.venv" ]; then
  echo "setup: installed into .venv; to use it in this shell: . scripts/activate"
fi
