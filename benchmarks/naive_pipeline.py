"""The naive script: what an afternoon's user writes to segment a CT series with a litseg model.

The baseline of issue 15's end-to-end target: a pydicom loop (sorted by ImagePositionPatient, rescaled to
HU), the model's HU window from its ONNX metadata, PIL bilinear resize of each slice to the model's input
size, onnxruntime with default session options in batches of 8, one pass, argmax, PIL nearest resize back,
and a nibabel NIfTI out. It imports nothing from litseg on purpose.

What it skips, and litseg does not: it ignores orientation (slices are fed as stored, which is right only
for the usual head-first-supine axial series with ImageOrientationPatient 1\\0\\0\\0\\1\\0, as the benchmark
series are); no series selection or consistency checks (one series per folder is assumed, every file is
read); no padding handling, no test-time augmentation, no post-processing (largest component, tumor
margin), no DICOM SEG. Its timings therefore bound what the same model needs at least, not what litseg
must do.

Usage::

    python -m benchmarks.naive_pipeline SERIES_DIR --model MODEL.onnx --out OUT_DIR

prints its per-stage timings as JSON and writes ``OUT_DIR/labels.nii.gz``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
import pydicom
from PIL import Image

SPEC_KEY = "litseg.preprocess_spec"
BATCH_SIZE = 8


def read_hu(folder: Path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """Every file of ``folder`` (recursively) as one float32 HU volume ``(z, rows, columns)``, sorted by the
    z of ImagePositionPatient; returns the volume and the datasets in that order."""
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(p) for p in sorted(folder.rglob("*")) if p.is_file()]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.empty((len(datasets), datasets[0].Rows, datasets[0].Columns), dtype=np.float32)
    for k, ds in enumerate(datasets):
        hu[k] = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return hu, datasets


def model_spec(session: ort.InferenceSession) -> tuple[tuple[float, float], tuple[int, int]]:
    """The model's HU window and input size (rows, columns) from its ``litseg.preprocess_spec`` metadata."""
    spec = json.loads(session.get_modelmeta().custom_metadata_map[SPEC_KEY])
    lo, hi = spec["window_hu"]
    rows, columns = spec["target_shape_yx"]
    return (float(lo), float(hi)), (int(rows), int(columns))


def to_model_input(hu: np.ndarray, window_hu: tuple[float, float], shape_yx: tuple[int, int]) -> np.ndarray:
    """Window to [0, 1] and PIL-bilinear resize every slice: float32 ``(z, 1, *shape_yx)``."""
    lo, hi = window_hu
    out = np.empty((hu.shape[0], 1, *shape_yx), dtype=np.float32)
    for k, hu_slice in enumerate(hu):
        unit = (np.clip(hu_slice, lo, hi) - lo) / (hi - lo)
        image = Image.fromarray(unit.astype(np.float32))  # float32 -> mode "F"
        out[k, 0] = np.asarray(image.resize((shape_yx[1], shape_yx[0]), Image.Resampling.BILINEAR))
    return out


def predict_labels(session: ort.InferenceSession, batch: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """One pass of the model in batches, argmax over classes: uint8 ``(z, h, w)``."""
    name = session.get_inputs()[0].name
    labels = np.empty((batch.shape[0], *batch.shape[2:]), dtype=np.uint8)
    for start in range(0, batch.shape[0], batch_size):
        (probs,) = session.run(None, {name: batch[start : start + batch_size]})
        labels[start : start + batch_size] = np.argmax(probs, axis=1)
    return labels


def to_native(labels: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """PIL nearest-neighbour resize of every label slice back to ``shape_yx``: uint8 ``(z, rows, columns)``."""
    out = np.empty((labels.shape[0], *shape_yx), dtype=np.uint8)
    for k, label_slice in enumerate(labels):
        out[k] = np.asarray(Image.fromarray(label_slice).resize((shape_yx[1], shape_yx[0]), Image.Resampling.NEAREST))
    return out


def affine_ras(datasets: Sequence[pydicom.Dataset]) -> np.ndarray:
    """The NIfTI affine of the (z, rows, columns) volume stored as (columns, rows, z): LPS -> RAS."""
    first, last = datasets[0], datasets[-1]
    iop = np.array(first.ImageOrientationPatient, dtype=float)
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    origin = np.array(first.ImagePositionPatient, dtype=float)
    step = (np.array(last.ImagePositionPatient, dtype=float) - origin) / max(len(datasets) - 1, 1)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_mm
    affine[:3, 1] = iop[3:] * row_mm
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def run(series: Path, model: Path, out: Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> dict[str, float]:
    """Segment ``series`` with ``model`` into ``out/labels.nii.gz``; returns seconds per stage."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    session = ort.InferenceSession(str(model), providers=list(providers))  # default SessionOptions
    window_hu, shape_yx = model_spec(session)
    timings["load_model"] = time.perf_counter() - t
    t = time.perf_counter()
    hu, datasets = read_hu(series)
    timings["read"] = time.perf_counter() - t
    t = time.perf_counter()
    batch = to_model_input(hu, window_hu, shape_yx)
    timings["preprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = predict_labels(session, batch)
    timings["inference"] = time.perf_counter() - t
    t = time.perf_counter()
    native = to_native(labels, hu.shape[1:])
    timings["postprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.ascontiguousarray(native.transpose(2, 1, 0)), affine_ras(datasets))
    nib.save(image, str(out / "labels.nii.gz"))
    timings["write_nifti"] = time.perf_counter() - t
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("series", type=Path, help="folder holding the files of one CT series")
    parser.add_argument("--model", type=Path, required=True, help="litseg ONNX model")
    parser.add_argument("--out", type=Path, required=True, help="output folder (labels.nii.gz)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    timings = run(args.series, args.model, args.out)
    report = {
        "wall_s": round(time.perf_counter() - start, 4),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
