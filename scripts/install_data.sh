#!/usr/bin/env bash
# Fashion-MNIST for the tests and the documented commands: Debian's dataset-fashion-mnist.
# Installs it when apt-get is there and we are root; otherwise prints exactly what to run.
# Without it the tests that read it skip (saying why) and stream=split_fashion_mnist needs
# stream.dataset_root=<folder with the IDX files> or stream.download=true.
# --require: exit 1 unless the dataset is there at the end (CI: it means to test the real loader).
set -euo pipefail
FOLDER=/usr/share/datasets/fashion-mnist
require=false
[ "${1:-}" = --require ] && require=true
have() { [ -f "$FOLDER/train-images-idx3-ubyte.gz" ] && [ -f "$FOLDER/t10k-labels-idx1-ubyte.gz" ]; }

if ! have; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's dataset-fashion-mnist (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
      || echo "setup: apt-get could not install dataset-fashion-mnist" >&2
  elif command -v apt-get >/dev/null; then
    echo "setup: Fashion-MNIST is not installed; the tests that read it will skip. To install it, run:"
    echo "  sudo apt-get install -y dataset-fashion-mnist"
  else
    echo "setup: Fashion-MNIST is not installed and there is no apt-get; the tests that read it will skip."
    echo "  Runs on it need stream.dataset_root=<folder with train-images-idx3-ubyte.gz ...> or stream.download=true"
  fi
fi
if $require && ! have; then
  echo "error: Fashion-MNIST is required here but $FOLDER lacks its IDX files" >&2
  exit 1
fi
