#!/usr/bin/env bash
# From a fresh clone of HEAD: the README's first command exactly as written (set-up, then the
# main job), then the quick tier (`bash scripts/test.sh --quick`). The clone gets its own .venv
# (--system-site-packages from this python3, so installed packages are reused and this
# environment's own install is left alone). CI runs it after the full suite.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/continual"
cd "$tmp/continual"
python3 -m venv --system-site-packages .venv
first="$(sed -n '/^```bash$/,/^```$/{/^```/d;p;}' README.md | head -n 1)"
echo "fresh clone: $first"
bash -c "$first"
.venv/bin/python -c "import continual, sys; sys.exit(0 if continual.__file__.startswith('$tmp') else 'continual imports from ' + continual.__file__ + ', not the clone')"
bash scripts/test.sh --quick
