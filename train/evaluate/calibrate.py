"""Calibrate a liver-tumor model's run settings on validation phantoms: test-time shifts, tumor margin and
the small-tumor filter, the three things ``litseg-run`` reads from the model's metadata.

Every case (a ``litseg-phantom --dicom`` folder never used for training or testing) is segmented once per
test-time setting (the model's shifts, and one unshifted pass; once when the model has no shifts) with
margin and filter off; the margins and filters are then applied to those labels by the runtime's own
post-processing, written as NIfTI and scored with ``litseg-eval``. The table (tumor Dice per case and
global, lesion recall and precision, liver Dice) is what the recipe's choices cite.

Usage::

    python -m litseg.train.evaluate.calibrate MODEL.onnx PHANTOMS_DIR --out DIR \\
        [--margin-mm 0 --margin-mm 2 ...] [--min-tumor-ml 0 --min-tumor-ml 0.2 ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from litseg.runtime import Model, RunConfig, segment
from litseg.runtime.nifti import write_nifti
from litseg.runtime.postprocess import postprocess_labels

from .metrics import main as evaluate_main

MARGINS_MM = (0.0, 2.0, 3.0)
MIN_TUMOR_ML = (0.0, 0.2, 0.5, 1.0)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _variant(tta: bool, min_ml: float, margin: float) -> str:
    return f"tta{int(tta)}-min{min_ml:g}-margin{margin:g}"


def calibrate(
    model_path: Path, phantoms: Path, out: Path, margins: Sequence[float], min_mls: Sequence[float]
) -> dict[str, dict[str, float | None]]:
    """Write every variant's predictions under ``out`` and return its scores by variant name."""
    model = Model(model_path, device="cpu")
    cases = sorted(phantoms.glob("dicom/case-*"), key=lambda p: int(p.name.split("-")[1]))
    if not cases:
        raise SystemExit(f"calibrate: no cases in {phantoms}/dicom (make them with litseg-phantom --dicom)")
    ref = out / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    grid = list(itertools.product((True, False), min_mls, margins))
    one_pass_only = len(model.info.tta_shifts_px) == 1  # without shifts both settings are the same pass
    for case in cases:
        n = case.name.split("-")[1]
        (ref / f"segmentation-{n}.nii.gz").write_bytes((phantoms / f"segmentation-{n}.nii.gz").read_bytes())
        unshifted = segment(case, RunConfig(tta=False, tumor_margin_mm=0.0, min_tumor_ml=0.0), model=model)
        passes = {False: unshifted}
        passes[True] = (
            unshifted
            if one_pass_only
            else segment(case, RunConfig(tta=True, tumor_margin_mm=0.0, min_tumor_ml=0.0), model=model)
        )
        for tta, min_ml, margin in grid:
            labels = passes[tta].labels
            voxels = math.ceil(min_ml / labels.voxel_volume_ml)
            folder = out / _variant(tta, min_ml, margin)
            folder.mkdir(exist_ok=True)
            # the runtime's own post-processing (its clean-up is a no-op on labels it already cleaned)
            write_nifti(postprocess_labels(labels, True, voxels, margin), folder / f"segmentation-{n}.nii.gz")
        print(f"calibrate: case {n} segmented", file=sys.stderr, flush=True)
    scores = {}
    for tta, min_ml, margin in grid:
        name = _variant(tta, min_ml, margin)
        report = out / f"{name}.json"
        evaluate_main([str(out / name), str(ref), "--json", str(report)])
        s = json.loads(report.read_text())["summary"]
        scores[name] = {
            "liver_dice_per_case": _round(s["liver"]["dice_per_case_mean"], 4),
            "tumor_dice_per_case": _round(s["tumor"]["dice_per_case_mean"], 4),
            "tumor_dice_global": _round(s["tumor"]["dice_global"], 4),
            "lesion_recall": _round(s["lesion_recall"], 3),
            "lesion_precision": _round(s["lesion_precision"], 3),  # None: no lesion predicted
        }
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m litseg.train.evaluate.calibrate", description=__doc__)
    parser.add_argument("model", type=Path, help="liver-tumor ONNX model (its test-time shifts are tried)")
    parser.add_argument("phantoms", type=Path, help="litseg-phantom --dicom output: dicom/case-N, segmentation-N")
    parser.add_argument("--out", type=Path, required=True, help="folder for the predictions and scores")
    parser.add_argument("--margin-mm", type=float, action="append", help=f"default: {MARGINS_MM}")
    parser.add_argument("--min-tumor-ml", type=float, action="append", help=f"default: {MIN_TUMOR_ML}")
    args = parser.parse_args(argv)
    scores = calibrate(
        args.model, args.phantoms, args.out, args.margin_mm or MARGINS_MM, args.min_tumor_ml or MIN_TUMOR_ML
    )
    (args.out / "calibration.json").write_text(json.dumps(scores, indent=2) + "\n")
    for name, row in scores.items():
        print(name, " ".join(f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
