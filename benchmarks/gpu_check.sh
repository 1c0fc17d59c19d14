#!/usr/bin/env bash
# The GPU check of issue 15 (what it measures: benchmarks/gpu_check.py). Runs from a bare copy of the
# working tree on a GPU machine with PyTorch and CUDA but no litseg install and no network:
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine (about 3-6 minutes, 432 slices)
#   bash benchmarks/gpu_check.sh --cpu      # dry run here on the CPU (8 slices; figures mean nothing)
#
# Python: $LITSEG_PYTHON, else the repo's .venv when present, else python3 (the GPU image's, with torch).
# litseg is imported from the working tree through a link tree (litseg/runtime -> runtime/, ...), so no
# install is needed. The runtime's own dependencies missing on the machine (pydicom, highdicom, nibabel)
# can travel as wheels in build/gpu-wheels/ (made here by `bash benchmarks/gpu_wheels.sh`, carried with
# the call); they are installed into a private folder, never from the network. Without them the check
# measures the model alone and says why. Results: $OUT (when set) or build/gpu-check/.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
RESULTS="${OUT:-$REPO/build/gpu-check}"
mkdir -p "$RESULTS"
say() { echo "[gpu-check.sh] $*"; }

if [ -n "${LITSEG_PYTHON:-}" ]; then PY="$LITSEG_PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY="$(command -v python3)"; fi
say "python: $PY ($("$PY" --version 2>&1))"
command -v nvidia-smi >/dev/null && nvidia-smi -L

# Carried wheels, installed without an index into a private folder (nothing reaches the network).
shopt -s nullglob
wheels=("$REPO"/build/gpu-wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    site="${TMPDIR:-/tmp}/litseg-gpu-site"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
            --target "$site" "${wheels[@]}"; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        say "installed ${#wheels[@]} carried wheels into $site"
    else
        say "could not install the carried wheels; going on without them"
    fi
fi

# litseg's import names without installing it (as `make typecheck` does).
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('litseg.runtime') is None)" 2>/dev/null; then
    tree="$REPO/build/gpu-check-pkg/litseg"
    mkdir -p "$tree"
    for part in runtime train export; do ln -sfn "$REPO/$part" "$tree/$part"; done
    export PYTHONPATH="$REPO/build/gpu-check-pkg${PYTHONPATH:+:$PYTHONPATH}"
    say "litseg imported from the working tree through $tree"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PY" -m benchmarks.gpu_check "$@" 2>&1 | tee "$RESULTS/gpu_check.log"
status=${PIPESTATUS[0]}
say "exit $status; results in $RESULTS (gpu_check.json, gpu_check.txt, gpu_check.log)"
exit "$status"
