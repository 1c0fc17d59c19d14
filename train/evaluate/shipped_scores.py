"""The scores of shipped-path predictions on real slices: per slice, per lits-tumor volume, and their summary.

Pure functions of the slices, their series (:mod:`.shipped_series`) and the predicted labels on each slice's
own grid (0 background, 1 liver, 2 tumour), so they are tested on known pairs without a model.

- Per slice: liver Dice on liver-or-tumour (a slice without reference liver has none: it counts among the
  liver-free slices instead), and where the source labels tumour apart (lits-tumor) tumour Dice on the
  slices where the reference or the prediction has tumour.
- Per lits-tumor volume: the volume's exported slices stacked in slice order (gaps closed, ``2 t`` apart,
  ``t`` the series' estimated slice spacing) and scored by :func:`.metrics.case_metrics`: liver and tumour
  Dice, lesions matched in 3-D. A lesion's diameter there is that of its exported slices only (every second
  slice, fewer where the collection skipped slices), so the size bins read small.
- Liver-free reference slices: how many get any predicted tumour or liver, and the predicted liver in mL
  (pixels times the series' voxel volume).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt

from litseg.runtime.volume import Volume

from ..data.real_slices import RealSlice
from .metrics import CaseMetrics, case_metrics, summarize
from .shipped_series import ShippedSeries

Labels = npt.NDArray[np.uint8]


def dice(pred: npt.NDArray[np.bool_], ref: npt.NDArray[np.bool_]) -> float:
    """Dice of two masks; 1.0 when both are empty."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total


def reference_labels(s: RealSlice) -> Labels:
    """0 background, 1 liver, 2 tumour (tumour only where the source labels it apart)."""
    labels = s.liver.astype(np.uint8)
    if s.tumor is not None:
        labels[s.tumor] = 2
    return labels


def slice_row(s: RealSlice, pred: Labels, series: ShippedSeries) -> dict[str, Any]:
    """The scores of one slice."""
    voxel_ml = float(np.prod(series.spacing_mm)) / 1000.0
    pred_liver = pred > 0
    row: dict[str, Any] = {
        "patient": s.patient,
        "slice_index": s.slice_index,
        "file": s.name,
        "series": series.key,
        "series_slices": len(series.slices),
        "ref_liver_px": int(s.liver.sum()),
        "pred_liver_px": int(pred_liver.sum()),
        "pred_liver_ml": round(int(pred_liver.sum()) * voxel_ml, 3),
        "liver_dice": round(dice(pred_liver, s.liver), 6) if s.liver.any() else None,
        "pred_tumor_px": int((pred == 2).sum()),
    }
    if s.tumor is not None:
        has_tumor = bool(s.tumor.any() or (pred == 2).any())
        row["ref_tumor_px"] = int(s.tumor.sum())
        row["tumor_dice"] = round(dice(pred == 2, s.tumor), 6) if has_tumor else None
    return row


def patient_order(patient: str) -> tuple[str, int]:
    """``lits-5`` before ``lits-10``."""
    prefix, _, number = patient.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (patient, 0)


def score_series(
    segmented: Iterable[tuple[ShippedSeries, Labels]],
) -> tuple[list[dict[str, Any]], list[tuple[CaseMetrics, dict[str, Any]]]]:
    """The per-slice rows of every series' predicted labels ``(n, rows, columns)``, and the LiTS metrics of
    each volume with separate tumour labels (its slices stacked), in patient order."""
    rows: list[dict[str, Any]] = []
    by_volume: dict[str, list[tuple[RealSlice, Labels, ShippedSeries]]] = defaultdict(list)
    for series, labels in segmented:
        for s, pred in zip(series.slices, labels, strict=True):
            rows.append(slice_row(s, pred, series))
            if s.tumor is not None:
                by_volume[s.patient].append((s, pred, series))
    return rows, [volume_metrics(patient, by_volume[patient]) for patient in sorted(by_volume, key=patient_order)]


def volume_metrics(
    patient: str, items: Sequence[tuple[RealSlice, Labels, ShippedSeries]]
) -> tuple[CaseMetrics, dict[str, Any]]:
    """LiTS metrics of one lits-tumor volume: its slices stacked in slice order (gaps closed)."""
    items = sorted(items, key=lambda item: item[0].slice_index)
    spacing = items[0][2].spacing_mm
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    pred = Volume(np.stack([p for _, p, _ in items]), affine)
    ref = Volume(np.stack([reference_labels(s) for s, _, _ in items]), affine)
    case = case_metrics(patient, pred, ref)
    row = {
        "patient": patient,
        "slices": len(items),
        "series": len({series.key for _, _, series in items}),
        "slice_spacing_mm": round(spacing[2], 4),
        "liver_dice": case.liver.dice,
        "tumor_dice": case.tumor.dice if case.tumor.ref_voxels else None,
        "ref_tumor_voxels": case.tumor.ref_voxels,
        "pred_tumor_voxels": case.tumor.pred_voxels,
        "lesions_ref": case.lesions_ref,
        "lesions_pred": case.lesions_pred,
        "lesions_detected": case.lesions_detected,
        "lesions_true_pred": case.lesions_true_pred,
        "metrics": asdict(case),
    }
    return case, row


def _stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "min": None}
    array = np.asarray(values, dtype=np.float64)
    return {"n": len(values), "mean": float(array.mean()), "median": float(np.median(array)), "min": float(array.min())}


def liver_free_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the model finds on the slices whose reference has no liver (and so no tumour)."""
    free = [r for r in rows if r["ref_liver_px"] == 0]
    ml = [float(r["pred_liver_ml"]) for r in free]
    return {
        "slices": len(free),
        "with_predicted_tumor": sum(1 for r in free if r["pred_tumor_px"] > 0),
        "with_predicted_liver": sum(1 for r in free if r["pred_liver_px"] > 0),
        "predicted_liver_ml_total": round(sum(ml), 3),
        "predicted_liver_ml_max": round(max(ml), 3) if ml else None,
    }


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-slice summary: liver Dice over slices with reference liver (mean, median, min, per patient, pooled
    over slices by pixels), tumour Dice where scored, and the liver-free slices."""
    with_liver = [r for r in rows if r["liver_dice"] is not None]
    by_patient: dict[str, list[float]] = defaultdict(list)
    for r in with_liver:
        by_patient[r["patient"]].append(float(r["liver_dice"]))
    out: dict[str, Any] = {
        "slices": len(rows),
        "patients": len({r["patient"] for r in rows}),
        "liver_dice_per_slice": _stats([float(r["liver_dice"]) for r in with_liver]),
        "liver_dice_per_patient_mean": float(np.mean([np.mean(v) for v in by_patient.values()]))
        if by_patient
        else None,
        "liver_free": liver_free_summary(rows),
    }
    if any("tumor_dice" in r for r in rows):
        out["tumor_dice_per_slice"] = _stats([float(r["tumor_dice"]) for r in rows if r.get("tumor_dice") is not None])
        out["slices_with_ref_tumor"] = sum(1 for r in rows if r.get("ref_tumor_px", 0) > 0)
    return out


def summarize_volumes(cases: Sequence[CaseMetrics]) -> dict[str, Any]:
    """LiTS summary of the stacked volumes (:func:`.metrics.summarize`), tumour Dice per volume with reference
    tumour listed."""
    out = summarize(cases)
    out["tumor_dice_per_volume"] = {c.case: c.tumor.dice for c in cases if c.tumor.ref_voxels}
    out["liver_dice_per_volume"] = {c.case: c.liver.dice for c in cases if c.liver.ref_voxels}
    return out
