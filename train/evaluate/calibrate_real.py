"""``python -m litseg.train.evaluate.calibrate_real MODEL.onnx LITS_FOLDER --json out.json``: the tumour
post-processing of a liver-tumor model calibrated on the real selection volumes, through the shipped path.

The lits-tumor *selection* volumes (never trained on, never reported) are segmented once as ``litseg-run``
would segment them (:mod:`.shipped`: runs of neighbouring slices as DICOM series, the model's focus and
test-time shifts) with the small-tumour filter and the tumour margin off; every candidate setting is then
applied to those labels by the runtime's own post-processing (its clean-up, the largest liver with the
tumours inside it, is a no-op on labels it already cleaned) and scored as a whole volume: tumour Dice per
volume and global, lesion recall and precision, and the liver-free slices' predicted tumour.

Healthy livers: the selection volumes all hold tumours, so ``--healthy DIR`` adds validation phantoms with
healthy livers (``litseg-phantom --tumors 0 --dicom``, seeds never trained or tested on), segmented the same
way; every setting counts the tumours it leaves in them.

The choice: the settings that leave the fewest tumours in the healthy livers (none, where one can); among
them those with lesion precision of at least :data:`MIN_PRECISION` (false tumours on vessels and healthy
liver cost a reader more than they help) and of those the best mean of tumour Dice per volume and global;
when none reaches that precision, the most precise. The numbers go into the model's metadata with
``litseg-export --min-tumor-ml --tumor-margin-mm``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from litseg.runtime import Model, RunConfig, segment
from litseg.runtime.postprocess import measure, postprocess_labels
from litseg.runtime.volume import Volume
from litseg.runtime.write import strict_json

from ..data.lits_tumor import LITS_TUMOR
from . import shipped
from . import shipped_scores as scores
from . import shipped_series as geometry
from .shipped_series import ShippedSeries

MIN_TUMOR_ML = (0.0, 0.1, 0.25, 0.5, 1.0)
MARGINS_MM = (0.0, 1.0, 2.0)
MIN_PRECISION = 0.7


def _voxels(labels: Volume, min_ml: float) -> int:
    return math.ceil(min_ml / labels.voxel_volume_ml) if min_ml > 0 else 0


def _score(
    segmented: Sequence[tuple[ShippedSeries, Volume]],
    healthy: Sequence[Volume],
    min_ml: float,
    margin_mm: float,
) -> dict[str, Any]:
    """One setting applied to the raw labels of every series, scored per volume, on liver-free slices and on
    the healthy livers."""
    rows, volumes = scores.score_series(
        (series, np.asarray(postprocess_labels(raw, True, _voxels(raw, min_ml), margin_mm).array, dtype=np.uint8))
        for series, raw in segmented
    )
    cases = [case for case, _ in volumes]
    summary = scores.summarize_volumes(cases)
    tumor = summary["tumor"]
    return {
        "min_tumor_ml": min_ml,
        "tumor_margin_mm": margin_mm,
        "tumor_dice_per_volume": tumor["dice_per_case_mean"],
        "tumor_dice_global": tumor["dice_global"],
        "lesion_recall": summary["lesion_recall"],
        "lesion_precision": summary["lesion_precision"],
        "lesions_predicted": sum(c.lesions_pred for c in cases),
        "liver_dice_per_volume": summary["liver"]["dice_per_case_mean"],
        "liver_free_slices_with_tumor": scores.liver_free_summary(rows)["with_predicted_tumor"],
        "healthy_livers": len(healthy),
        "healthy_tumors": sum(
            measure(postprocess_labels(raw, True, _voxels(raw, min_ml), margin_mm)).tumor_count for raw in healthy
        ),
        "per_volume": summary["tumor_dice_per_volume"],
    }


def choose(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The setting this module's docstring describes."""

    def dice(row: dict[str, Any]) -> float:
        return float(np.nanmean([row["tumor_dice_per_volume"], row["tumor_dice_global"]]))

    fewest = min(int(r.get("healthy_tumors", 0)) for r in rows)
    clean = [r for r in rows if int(r.get("healthy_tumors", 0)) == fewest]
    precise = [r for r in clean if not math.isnan(r["lesion_precision"]) and r["lesion_precision"] >= MIN_PRECISION]
    if precise:
        return max(precise, key=dice)
    return max(clean, key=lambda r: (np.nan_to_num(r["lesion_precision"]), dice(r)))


def calibrate(
    model_path: Path,
    folder: Path,
    min_mls: Sequence[float] = MIN_TUMOR_ML,
    margins: Sequence[float] = MARGINS_MM,
    patients: Sequence[str] = (),
    healthy: Path | None = None,
) -> dict[str, Any]:
    """Segment the selection volumes (or only ``patients`` of them) and the ``healthy`` phantoms once, score
    every setting, choose one."""
    model = Model(model_path, device="cpu")
    if model.spec.task != "liver-tumor":
        raise SystemExit(f"calibrate_real: {model_path} is a {model.spec.task} model; tumours need liver-tumor")
    slices = shipped.select(LITS_TUMOR, folder, "selection", patients)
    raw_config = RunConfig(min_tumor_ml=0.0, tumor_margin_mm=0.0)
    segmented: list[tuple[ShippedSeries, Volume]] = []
    with tempfile.TemporaryDirectory(prefix="litseg-calibrate-") as work:
        for series in geometry.plan_series(slices, "runs", None):
            labels, _ = shipped.segment_series(series, model, Path(work), raw_config)
            segmented.append((series, Volume(labels, series.affine_lps)))
    cases = sorted(healthy.glob("dicom/case-*"), key=lambda p: int(p.name.split("-")[1])) if healthy else []
    if healthy is not None and not cases:
        raise SystemExit(f"calibrate_real: no dicom/case-* in {healthy} (make them with litseg-phantom --dicom)")
    livers = [segment(case, raw_config, model=model).labels for case in cases]
    rows = [_score(segmented, livers, min_ml, margin) for min_ml, margin in itertools.product(min_mls, margins)]
    return {
        "model": model_path.name,
        "model_version": model.info.version,
        "set": "lits-tumor selection volumes (runs of neighbouring slices, shipped path)"
        + (f"; {len(cases)} healthy-liver validation phantoms" if cases else ""),
        "rule": f"fewest tumours in healthy livers, then lesion precision >= {MIN_PRECISION}, then the best mean of "
        "tumour Dice per volume and global",
        "chosen": choose(rows),
        "settings": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m litseg.train.evaluate.calibrate_real", description=__doc__)
    parser.add_argument("model", type=Path, help="liver-tumor ONNX model")
    parser.add_argument("folder", type=Path, help="the lits-tumor-slices collection")
    parser.add_argument("--min-tumor-ml", type=float, action="append", help=f"default: {MIN_TUMOR_ML}")
    parser.add_argument("--margin-mm", type=float, action="append", help=f"default: {MARGINS_MM}")
    parser.add_argument("--patients", default="", help="only these selection volumes, e.g. lits-9,lits-50")
    parser.add_argument("--healthy", type=Path, default=None, help="litseg-phantom --tumors 0 --dicom validation cases")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    patients = [p for p in args.patients.split(",") if p]
    result = calibrate(
        args.model, args.folder, args.min_tumor_ml or MIN_TUMOR_ML, args.margin_mm or MARGINS_MM, patients, args.healthy
    )
    if args.json:
        args.json.write_text(json.dumps(strict_json(result), indent=1) + "\n")
    for row in result["settings"]:
        print(
            " ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "per_volume"
            )
        )
    chosen = result["chosen"]
    print(f"chosen: --min-tumor-ml {chosen['min_tumor_ml']:g} --tumor-margin-mm {chosen['tumor_margin_mm']:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
