#!/usr/bin/env bash
# The device check: every GPU claim of the project measured in one command (under 8 minutes on one GPU).
#
#   benchmarks/device_check.sh --prepare           here, online: fill .device-data/ (<= 60 MiB, git-ignored)
#   benchmarks/device_check.sh OUT_DIR             on the GPU machine: OUT_DIR/device_check.json and .log
#   DEVICE_CHECK=dry benchmarks/device_check.sh OUT_DIR   every step on the CPU at smoke sizes (what CI runs)
#
# The steps (benchmarks/device_check.py): the CUDA-marked tests, P1 (full step against model-only
# step), P4 (2 against 16 CPU threads), P2 (against lightly's pipeline), a short gpu-budget SimCLR and
# BYOL run, and every chapter under the smoke budget. The library is imported from this checkout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$ROOT/.device-data"
PYTHON="${PYTHON:-python3}"
FMNIST_DIR="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
# The device machine's interpreter, for which the wheels are chosen.
DEVICE_PY="${DEVICE_PY:-3.12}"

usage() { echo "usage: $0 --prepare | OUT_DIR   (DEVICE_CHECK=dry for the CPU dry run)" >&2; exit 2; }
[ $# -eq 1 ] || usage

if [ "$1" = "--prepare" ]; then
    rm -rf "$DATA/wheels" "$DATA/fashion-mnist"
    mkdir -p "$DATA/wheels" "$DATA/fashion-mnist"
    # Binary wheels for the device's Python, without dependencies (the file lists every one missing
    # there). They stay zipped (unpacked they are twice the limit: jedi and debugpy alone are 60 MiB);
    # the check unpacks them into a temporary folder on the machine that runs it.
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
        --python-version "$DEVICE_PY" --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$DATA/wheels" -r "$ROOT/benchmarks/device_requirements.txt"
    found=0
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [ -e "$FMNIST_DIR/$f.gz" ]; then cp "$FMNIST_DIR/$f.gz" "$DATA/fashion-mnist/"; found=$((found + 1)); fi
    done
    [ "$found" = 4 ] || { echo "error: expected Fashion-MNIST's 4 .gz files in $FMNIST_DIR, found $found" >&2; exit 1; }
    size=$(du -sk "$DATA" | cut -f1)
    echo "prepared $DATA: $((size / 1024)) MiB ($size KiB; the limit is 60 MiB)"
    [ "$size" -le $((60 * 1024)) ] || { echo "error: $DATA is over 60 MiB" >&2; exit 1; }
    exit 0
fi
case "$1" in -*) usage ;; esac

OUT="$1"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT:$ROOT/benchmarks/device_site${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$DATA/wheels/*.whl" >/dev/null; then
    # A wheel is a zip of the package's files: unpacked into one folder, they import from there.
    SITE="${TMPDIR:-/tmp}/contrastlab-device-site"
    rm -rf "$SITE" && mkdir -p "$SITE"
    for w in "$DATA"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$w" "$SITE"; done
    export DEVICE_CHECK_SITE="$SITE"
fi
[ -d "$DATA/fashion-mnist" ] && export CONTRASTLAB_DATA="$DATA"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec "$PYTHON" "$ROOT/benchmarks/device_check.py" --mode "${DEVICE_CHECK:-device}" "$OUT"
