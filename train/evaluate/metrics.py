"""``litseg-eval PRED GT``: the LiTS metrics, in millimetres, on NIfTI label maps or folders of them.

Per case and class (liver = labels 1 or 2, tumor = label 2): Dice, volume overlap error (VOE),
relative volume difference (RVD), average symmetric surface distance (ASSD) and maximum symmetric
surface distance (MSSD); tumor detection (a reference lesion counts as detected when the predicted
lesions overlapping it reach IoU > 0.5 with it; precision likewise from the predicted side); tumor
burden error; lesion recall by size (diameter of the sphere of the lesion's volume). Global Dice pools
all voxels of all cases.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from litseg.runtime.errors import InputError
from litseg.runtime.nifti import read_nifti
from litseg.runtime.volume import Volume
from litseg.runtime.write import strict_json

CLASSES = {"liver": lambda a: a > 0, "tumor": lambda a: a == 2}
SIZE_BINS_MM = (10.0, 20.0)  # lesion recall is reported for < 10, 10-20 and >= 20 mm


def size_bin(diameter_mm: float) -> str:
    low, high = SIZE_BINS_MM
    return f"<{low:g}" if diameter_mm < low else f"{low:g}-{high:g}" if diameter_mm < high else f">={high:g}"


@dataclass(frozen=True)
class ClassMetrics:
    dice: float
    voe: float
    rvd: float
    assd_mm: float
    mssd_mm: float
    ref_voxels: int
    pred_voxels: int
    intersection: int


@dataclass(frozen=True)
class CaseMetrics:
    case: str
    liver: ClassMetrics
    tumor: ClassMetrics
    lesions_ref: int
    lesions_pred: int
    lesions_detected: int
    lesions_true_pred: int
    tumor_burden_error: float
    lesions_by_size: dict[str, list[int]]  # size bin -> [reference lesions, detected]


def surface_distances(
    a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_], spacing_zyx: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``, and from ``b`` to ``a``.

    Both surfaces lie in the bounding box of ``a | b``, so the work is cropped to it (plus one voxel,
    so that erosion sees background at the crop's edge exactly as at the volume's): same distances.
    """
    idx = np.nonzero(a | b)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    struct = ndimage.generate_binary_structure(3, 1)
    surfaces = [m[box] & ~ndimage.binary_erosion(m[box], struct, border_value=0) for m in (a, b)]
    dist_to_b = ndimage.distance_transform_edt(~surfaces[1], sampling=spacing_zyx)
    dist_to_a = ndimage.distance_transform_edt(~surfaces[0], sampling=spacing_zyx)
    return np.asarray(dist_to_b[surfaces[0]]), np.asarray(dist_to_a[surfaces[1]])


def class_metrics(
    pred: npt.NDArray[np.bool_], ref: npt.NDArray[np.bool_], spacing_zyx: Sequence[float]
) -> ClassMetrics:
    inter = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    union = n_pred + n_ref - inter
    dice = 1.0 if n_pred + n_ref == 0 else 2 * inter / (n_pred + n_ref)
    voe = 0.0 if union == 0 else 1 - inter / union
    rvd = float("nan") if n_ref == 0 else (n_pred - n_ref) / n_ref
    if n_pred and n_ref:
        d_ab, d_ba = surface_distances(pred, ref, spacing_zyx)
        assd = float((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size))
        mssd = float(max(d_ab.max(), d_ba.max()))
    else:
        assd = mssd = 0.0 if n_pred == n_ref == 0 else float("inf")
    return ClassMetrics(dice, voe, rvd, assd, mssd, n_ref, n_pred, inter)


def _match_iou(a: np.ndarray, n_a: int, b: np.ndarray, n_b: int) -> np.ndarray:
    """IoU of each of the ``n_a`` components in ``a`` with the union of the ``b`` components they touch
    (components of one map are disjoint, so the union's counts are sums); index 0 is background."""
    both = (a > 0) & (b > 0)
    pairs, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    size_a = np.bincount(a.ravel(), minlength=n_a + 1)
    size_b = np.bincount(b.ravel(), minlength=n_b + 1)
    overlap = np.zeros(n_a + 1)
    touched = np.zeros(n_a + 1)
    np.add.at(overlap, pairs[0], inter)
    np.add.at(touched, pairs[0], size_b[pairs[1]])
    union = size_a + touched - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def case_metrics(name: str, pred: Volume, ref: Volume) -> CaseMetrics:
    if pred.shape_zyx != ref.shape_zyx or not np.allclose(pred.affine_lps, ref.affine_lps, atol=1e-3):
        raise InputError(
            f"{name}: prediction grid {pred.shape_zyx} does not match the reference grid {ref.shape_zyx} "
            "(shape or affine differ); evaluate predictions on the reference's own grid"
        )
    p, r = np.asarray(pred.array), np.asarray(ref.array)
    spacing_zyx = pred.spacing_mm[::-1]
    liver = class_metrics(CLASSES["liver"](p), CLASSES["liver"](r), spacing_zyx)
    tumor = class_metrics(CLASSES["tumor"](p), CLASSES["tumor"](r), spacing_zyx)
    ref_lesions, n_ref = ndimage.label(r == 2)
    pred_lesions, n_pred = ndimage.label(p == 2)
    burden_ref = tumor.ref_voxels / liver.ref_voxels if liver.ref_voxels else 0.0
    burden_pred = tumor.pred_voxels / liver.pred_voxels if liver.pred_voxels else 0.0
    detected = _match_iou(ref_lesions, n_ref, pred_lesions, n_pred)[1:] > 0.5
    true_pred = _match_iou(pred_lesions, n_pred, ref_lesions, n_ref)[1:] > 0.5
    voxel_mm3 = float(np.prod(spacing_zyx))
    diameters = np.cbrt(6 * np.bincount(ref_lesions.ravel(), minlength=n_ref + 1)[1:] * voxel_mm3 / np.pi)
    by_size = {size_bin(d): [0, 0] for d in (0.0, SIZE_BINS_MM[0], SIZE_BINS_MM[1])}
    for d, hit in zip(diameters, detected, strict=True):
        counts = by_size[size_bin(float(d))]
        counts[0] += 1
        counts[1] += int(hit)
    return CaseMetrics(
        name,
        liver,
        tumor,
        n_ref,
        n_pred,
        int(detected.sum()),
        int(true_pred.sum()),
        abs(burden_pred - burden_ref),
        by_size,
    )


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def summarize(cases: Sequence[CaseMetrics]) -> dict[str, object]:
    """Mean per-case metrics, global Dice, and lesion detection precision/recall."""
    out: dict[str, object] = {"cases": len(cases)}
    for cls in ("liver", "tumor"):
        ms = [getattr(c, cls) for c in cases]
        with_ref = [m for m in ms if m.ref_voxels > 0]
        out[cls] = {
            "dice_per_case_mean": float(np.mean([m.dice for m in with_ref])) if with_ref else float("nan"),
            "dice_per_case_min": float(np.min([m.dice for m in with_ref])) if with_ref else float("nan"),
            "dice_global": 2 * sum(m.intersection for m in ms) / max(1, sum(m.ref_voxels + m.pred_voxels for m in ms)),
            "voe_mean": float(np.mean([m.voe for m in with_ref])) if with_ref else float("nan"),
            "rvd_mean": float(np.mean(_finite([m.rvd for m in with_ref]))) if with_ref else float("nan"),
            "assd_mm_mean": float(np.mean(_finite([m.assd_mm for m in with_ref]) or [float("nan")])),
            "mssd_mm_mean": float(np.mean(_finite([m.mssd_mm for m in with_ref]) or [float("nan")])),
        }
    n_ref = sum(c.lesions_ref for c in cases)
    n_pred = sum(c.lesions_pred for c in cases)
    out["lesion_recall"] = sum(c.lesions_detected for c in cases) / n_ref if n_ref else float("nan")
    out["lesion_precision"] = sum(c.lesions_true_pred for c in cases) / n_pred if n_pred else float("nan")
    bins = cases[0].lesions_by_size if cases else {}
    totals = {key: [sum(c.lesions_by_size[key][i] for c in cases) for i in (0, 1)] for key in bins}
    out["lesions_by_diameter_mm"] = totals  # size bin -> [reference lesions, detected]
    out["lesion_recall_by_diameter_mm"] = {key: hits / n if n else float("nan") for key, (n, hits) in totals.items()}
    out["tumor_burden_error_mean"] = float(np.mean([c.tumor_burden_error for c in cases])) if cases else float("nan")
    return out


#: The label map inside a ``litseg-run`` output folder.
RUN_LABELS = "labels.nii.gz"


def _prediction_for(pred: Path, ref_name: str) -> Path | None:
    """The prediction for reference ``ref_name`` in folder ``pred``: a same-named NIfTI file, or the label map
    of a ``litseg-run`` output folder named after the reference (``segmentation-3/labels.nii.gz``)."""
    stem = ref_name.removesuffix(".gz").removesuffix(".nii")
    for candidate in (pred / ref_name, pred / stem / RUN_LABELS):
        if candidate.is_file():
            return candidate
    return None


def pair_files(pred: Path, ref: Path) -> list[tuple[str, Path, Path]]:
    """Pairs (name, prediction, reference): two files, or same-named NIfTI files in two folders; a prediction
    may also be a ``litseg-run`` output folder (its ``labels.nii.gz``)."""
    if pred.is_dir() and (pred / RUN_LABELS).is_file() and ref.is_file():
        return [(ref.name, pred / RUN_LABELS, ref)]
    if pred.is_file() and ref.is_file():
        return [(ref.name, pred, ref)]
    if pred.is_dir() and ref.is_dir():
        refs = sorted(p for p in ref.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        found = {p.name: _prediction_for(pred, p.name) for p in refs}
        missing = [name for name, path in found.items() if path is None]
        if missing or not refs:
            raise InputError(
                f"no prediction for {missing or 'any reference'} in {pred}; name predictions as their references "
                f"(segmentation-N.nii.gz) or as litseg-run output folders (segmentation-N/{RUN_LABELS})"
            )
        return [(p.name, found[p.name], p) for p in refs]  # type: ignore[misc]
    raise InputError(f"pass two NIfTI files or two folders; got {pred} and {ref}")


def evaluate(pred: Path, ref: Path) -> tuple[list[CaseMetrics], dict[str, object]]:
    cases = [case_metrics(name, read_nifti(p), read_nifti(r)) for name, p, r in pair_files(pred, ref)]
    return cases, summarize(cases)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litseg-eval", description="LiTS metrics of predicted label maps.")
    parser.add_argument("pred", type=Path, help="predicted NIfTI label map, or a folder of them")
    parser.add_argument("ref", type=Path, help="reference NIfTI label map, or a folder of them")
    parser.add_argument("--json", type=Path, default=None, help="write per-case and summary metrics here")
    args = parser.parse_args(argv)
    try:
        cases, summary = evaluate(args.pred, args.ref)
    except InputError as exc:
        print(f"litseg-eval: error: {exc}", file=sys.stderr)
        return exc.exit_code
    result = {"summary": summary, "cases": [asdict(c) for c in cases]}
    if args.json:  # strict JSON: undefined metrics (no reference lesion, ...) are null, never NaN
        args.json.write_text(json.dumps(strict_json(result), indent=1, allow_nan=False) + "\n")
    print(json.dumps(strict_json(summary), indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
