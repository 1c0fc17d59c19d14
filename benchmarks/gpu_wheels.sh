#!/usr/bin/env bash
# Wheels of the litseg runtime's dependencies that the GPU machine's image lacks, for
# benchmarks/gpu_check.sh (which installs them there without an index). All pure Python, so one wheel
# serves any Python >= 3.10 on any platform; the versions are this venv's. About 6 MB in build/gpu-wheels/.
#
#   bash benchmarks/gpu_wheels.sh       # here, once; then carry build/gpu-wheels with the device call
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${LITSEG_PYTHON:-.venv/bin/python}"
DEST=build/gpu-wheels
rm -rf "$DEST"
mkdir -p "$DEST"
# pydicom: the reader; highdicom: DICOM SEG; nibabel: NIfTI. (numpy, numba, pillow, packaging,
# typing-extensions, onnxruntime are in that image already; highdicom's pyjpegls is imported lazily.)
for name in pydicom highdicom nibabel; do
    version="$("$PY" -c "from importlib.metadata import version; print(version('$name'))")"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d "$DEST" "$name==$version"
done
ls -l "$DEST"
du -sh "$DEST"
