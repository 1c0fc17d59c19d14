"""``litseg-eval-slices``: liver Dice per slice of an ONNX model on real 2-D CT slices (MSD, IRCAD).

Each slice goes the runtime's way: canonical HU slice (:mod:`.real_slices`) -> ``preprocess`` with the
model's own spec -> onnxruntime with the model's test-time shifts -> ``restore_labels`` onto the slice's
own grid; the liver of the prediction (label > 0: liver, or liver plus tumor for the liver-tumor model)
is compared with the slice's mask (liver-or-tumor for MSD, liver for IRCAD). The volume post-processing
of ``litseg-run`` (largest connected liver, tumor margin) is not applied: it needs the whole volume, and
a lone slice's liver may rightly be in pieces.

A model whose window reaches outside 0..255 HU (the bundled 0.4 models: -200..300) gets MSD slices whose
HU were saturated to 0..255 by their source: its input differs from a real scan's there, which the report
states (``msd_input_exact``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from litseg.runtime.errors import LitsegError
from litseg.runtime.model import NO_TTA, Model
from litseg.runtime.preprocess import preprocess, restore_labels
from litseg.runtime.volume import Volume

from ..data.real_slices import MSD, MSD_VALIDATION_CASES, SOURCES, RealSlice, load_ircad, load_msd

SPLITS = ("val", "train", "all")


def select(source: str, folder: Path, split: str) -> list[RealSlice]:
    """The slices to evaluate: MSD by split (the fixed 22 validation patients, the 100 others, or all);
    IRCAD all (it is a test set)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if source != MSD:
        return load_ircad(folder)
    slices = load_msd(folder)
    if split == "all":
        return slices
    val = set(MSD_VALIDATION_CASES)
    return [s for s in slices if (int(s.patient.split("-")[1]) in val) == (split == "val")]


def predict_liver(model: Model, slices: Sequence[RealSlice], tta: bool = True) -> list[np.ndarray]:
    """The predicted liver (label > 0) of each slice on its own grid, as the runtime predicts it."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, s in enumerate(slices):
        groups[s.hu.shape].append(i)
    out: list[np.ndarray] = [np.zeros(0, bool)] * len(slices)
    shifts = model.info.tta_shifts_px if tta else NO_TTA
    for members in groups.values():
        volume = Volume(np.stack([slices[i].hu for i in members]).astype(np.float32), np.eye(4))
        model_input = preprocess(volume, model.spec)
        probs = model.predict_volume(np.asarray(model_input.image.array, dtype=np.float32), shifts=shifts)
        labels = np.asarray(restore_labels(probs, model_input, volume).array)
        for k, i in enumerate(members):
            out[i] = labels[k] > 0
    return out


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total


def evaluate(model_path: Path, source: str, folder: Path, split: str = "val", tta: bool = True) -> dict[str, object]:
    """Per-slice liver Dice of a model on a real slice collection, with its summary."""
    model = Model(model_path, device="cpu")
    slices = select(source, folder, split)
    preds = predict_liver(model, slices, tta)
    rows = [
        {"patient": s.patient, "file": s.name, "dice": round(dice(p, s.liver), 6), "ref_pixels": int(s.liver.sum())}
        for s, p in zip(slices, preds, strict=True)
    ]
    scores = np.array([r["dice"] for r in rows], dtype=np.float64)
    by_patient: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_patient[str(r["patient"])].append(float(r["dice"]))  # type: ignore[arg-type]
    inter = sum(int((p & s.liver).sum()) for s, p in zip(slices, preds, strict=True))
    total = sum(int(p.sum()) + int(s.liver.sum()) for s, p in zip(slices, preds, strict=True))
    lo, hi = model.spec.window_hu
    return {
        "model": model_path.name,
        "model_version": model.info.version,
        "task": model.spec.task,
        "window_hu": [lo, hi],
        "source": source,
        "split": split if source == MSD else "test",
        "slices": len(rows),
        "patients": len(by_patient),
        "tta_shifts_px": [list(t) for t in (model.info.tta_shifts_px if tta else NO_TTA)],
        "liver_dice_per_slice_mean": float(scores.mean()),
        "liver_dice_per_slice_median": float(np.median(scores)),
        "liver_dice_per_slice_min": float(scores.min()),
        "liver_dice_per_patient_mean": float(np.mean([np.mean(v) for v in by_patient.values()])),
        "liver_dice_global": 2.0 * inter / max(1, total),
        "msd_input_exact": source != MSD or (lo >= 0.0 and hi <= 255.0),
        "cases": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="litseg-eval-slices",
        description="Liver Dice per slice of an ONNX model on real CT slices (msd-liver-slices, ircad-liver-slices).",
    )
    parser.add_argument("model", type=Path, help="ONNX model with litseg metadata")
    parser.add_argument("source", choices=SOURCES)
    parser.add_argument("folder", type=Path, help="the collection's folder (holding images/ and masks/)")
    parser.add_argument(
        "--split", choices=SPLITS, default="val", help="MSD patients: the 22 validation ones (default), train, all"
    )
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="one pass, not the model's shifts")
    parser.add_argument("--json", type=Path, default=None, help="write the summary and every slice's Dice here")
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.model, args.source, args.folder, args.split, args.tta)
    except LitsegError as exc:
        print(f"litseg-eval-slices: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
