"""Write a model card (Markdown) from the run's log, the held-out evaluation and the real-CT check."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from litseg.runtime import Model, RunConfig, segment

from ..data.nrrd import read_nrrd
from .model_card_real import card_number, data_lines, evaluation_lines, headline, uses_real_data

#: ../shared/data beside the repository root (train/evaluate/model_card.py -> the root's parent).
REAL_CT = Path(__file__).resolve().parents[3] / "shared" / "data" / "dcmqi-ct-3slice"


def real_ct_liver_dice(model_path: Path, real_ct: Path = REAL_CT) -> float | None:
    """Liver Dice on the three real CT slices of ../shared/data against their manual reference."""
    if not (real_ct / "dicom").is_dir():
        return None
    result = segment(real_ct / "dicom", RunConfig(), model=Model(model_path, device="cpu"))
    ref = np.asarray(read_nrrd(real_ct / "liver_seg.nrrd").array) > 0
    pred = np.asarray(result.labels.array) > 0
    return float(2 * (pred & ref).sum() / max(1, pred.sum() + ref.sum()))


def hardware(histories: list[list[dict[str, Any]]]) -> str:
    """The devices the epochs ran on, as ``litseg-train`` logged them, in order of first use; logs older
    than the column say so rather than guess."""
    logged = (str(row.get("hardware", "not recorded in the training log")) for rows in histories for row in rows)
    return "; ".join(dict.fromkeys(logged))


def case_order(name: str) -> tuple[str, int, str]:
    """Sort key that puts segmentation-2 before segmentation-10 (text order puts it after)."""
    match = re.search(r"(\d+)", name)
    return (name[: match.start()], int(match.group(1)), name[match.end() :]) if match else (name, -1, "")


def member_runs(work: Path, task: str, members: int) -> list[Path]:
    """The run folders of a model's members, as train/recipe.sh names them: run-<task>, run-<task>-2, ..."""
    return [work / f"run-{task}"] + [work / f"run-{task}-{k}" for k in range(2, members + 1)]


def card(task: str, work: Path, model_path: Path, notes: str = "") -> str:
    model = Model(model_path, device="cpu")
    members = json.loads(model.info.metadata.get("litseg.members", "[]"))
    histories = [json.loads((run / "log.json").read_text()) for run in member_runs(work, task, max(1, len(members)))]
    history = histories[0]
    ev = json.loads((work / f"eval-{task}.json").read_text())
    summary, cases = ev["summary"], ev["cases"]
    liver = summary["liver"]
    training = json.loads(model.info.metadata.get("litseg.training", "{}"))
    data = json.loads(model.info.metadata.get("litseg.training_data", "{}"))
    real = real_ct_liver_dice(model_path)
    phantom_data = (
        f"- Data: litseg phantoms (`litseg-phantom --seed 1000`), prepared by `litseg-prepare --task {task}`"
        + (
            f": {data['cases']} cases, {data['train_cases']} for training ({data['train_slices']} slices) and "
            f"{data['val_cases']} for validation ({data['val_slices']} slices), split by case"
            + (" (each member draws its own split)." if members else ".")
            if data
            else "."
        )
    )
    dice_columns = [k for k in history[0] if k.startswith("val_") and "_dice_" in k]
    lines = [
        f"# Model card: {model.info.name} {model.info.version}",
        "",
        *headline(data),
        "",
        "## Model",
        f"- Task `{task}`, classes {list(model.spec.class_names)}; "
        + (
            f"ensemble of {len(members)} 2-D U-Nets (the mean of their softmax probabilities, one ONNX graph), "
            f"base width {training.get('base')} each, trained alike with split and initialisation seeds "
            f"{[m['training']['seed'] for m in members]} "
            if members
            else f"2-D U-Net, base width {training.get('base')} "
        )
        + f"({model_path.stat().st_size / 1e6:.1f} MB ONNX, float32).",
        f"- Input: axial slices in the canonical LPS orientation, window {list(model.spec.window_hu)} HU -> [0, 1], "
        f"resampled to {list(model.spec.target_shape_yx)} (spec v{model.spec.version}, in the ONNX metadata).",
        *(
            [
                f"- Post-processing: litseg-run grows tumors by {model.info.tumor_margin_mm:g} mm (in-plane) within "
                "the liver, a margin calibrated on validation data (below; `litseg.postprocess` in the ONNX metadata; "
                "`--tumor-margin-mm 0` turns it off)."
            ]
            if model.info.tumor_margin_mm
            else []
        ),
        *(
            [
                f"- Small-tumor filter: litseg-run relabels tumor components under {model.info.min_tumor_ml:g} mL "
                "(6-connected) as liver, calibrated on validation data (below; `litseg.postprocess`; "
                "`--min-tumor-ml 0` keeps every component)."
            ]
            if model.info.min_tumor_ml
            else []
        ),
        *(
            [
                f"- Test-time augmentation: litseg-run averages the probabilities of {len(model.info.tta_shifts_px)} "
                f"passes with the input shifted by {[list(t) for t in model.info.tta_shifts_px]} pixels (y, x) and "
                "shifted back, calibrated on validation phantoms (`litseg.inference` in the ONNX metadata; "
                "`--no-tta` runs one pass at a fraction of the inference time)."
            ]
            if len(model.info.tta_shifts_px) > 1
            else []
        ),
        "",
        "## Training",
        *(data_lines(data, bool(members)) or [phantom_data]),
        f"- Recipe: `make models` (train/recipe.sh); loss `{training.get('loss') or 'default'}`, Adam, batch "
        f"{training.get('batch_size')}, class weights capped at {training.get('weight_cap')}x the smallest, "
        f"rare-class boost {training.get('rare_class_boost')}, augmentation (intensity, noise, rotation, scale; "
        "no flips); learning rate and patch size per epoch in the table.",
        f"- Hardware: {hardware(histories)}; {sum(r['seconds'] for h in histories for r in h) / 60:.0f} min of training"
        + (f" ({len(histories)} members)." if members else "."),
        *([f"- Schedule: {notes}"] if notes else []),
        "",
        ("| member " if members else "")
        + "| epoch | samples | patch | lr | precision | train loss | "
        + " | ".join(k.removeprefix("val_") for k in dice_columns)
        + " |",
        ("|---" if members else "") + "|---|---|---|---|---|---|" + "---|" * len(dice_columns),
    ]
    for member, rows in enumerate(histories, start=1):
        for r in rows:
            vals = " | ".join(f"{card_number(r[k], '.4f')}" if k in r else "" for k in dice_columns)
            lr = f"{r.get('lr', '?')}{' poly' if r.get('lr_schedule') == 'poly' else ''}"
            precision = r.get("precision", "float32")  # runs before the column were fp32 on CPU
            head = f"| {member} " if members else ""
            head += f"| {r['epoch']} | {r.get('samples', '?')} | {r.get('patch', '?')} | {lr} | {precision} "
            head += f"| {card_number(r['train_loss'], '.4f')}"
            lines.append(f"{head} | {vals} |")
    lines += [
        "",
        f"## Held-out evaluation ({summary['cases']} phantom cases, seeds 9000+, never seen in training)",
        "Measured with `litseg-eval` on the predictions of `litseg-run` (DICOM in, NIfTI out, native grid).",
        "",
        f"- Liver Dice per case: mean {card_number(liver['dice_per_case_mean'], '.4f')}, "
        f"min {card_number(liver['dice_per_case_min'], '.4f')}; global {card_number(liver['dice_global'], '.4f')}; "
        f"VOE {card_number(liver['voe_mean'], '.4f')}; RVD {card_number(liver['rvd_mean'], '+.4f')}; "
        f"ASSD {card_number(liver['assd_mm_mean'], '.2f')} mm; MSSD {card_number(liver['mssd_mm_mean'], '.1f')} mm.",
    ]
    if task == "liver-tumor":
        t = summary["tumor"]
        lines += [
            f"- Tumor Dice per case (cases with tumor): mean {card_number(t['dice_per_case_mean'], '.4f')}, min "
            f"{card_number(t['dice_per_case_min'], '.4f')}; global {card_number(t['dice_global'], '.4f')}; "
            f"ASSD {card_number(t['assd_mm_mean'], '.2f')} mm.",
            f"- Lesion detection (IoU > 0.5): recall {card_number(summary['lesion_recall'], '.3f')}, precision "
            f"{card_number(summary['lesion_precision'], '.3f')}; tumor burden error "
            f"{card_number(summary['tumor_burden_error_mean'], '.4f')}.",
            "- Lesion recall by diameter (sphere of equal volume): "
            + "; ".join(f"{key} mm {hits}/{n}" for key, (n, hits) in summary["lesions_by_diameter_mm"].items())
            + ".",
            "",
            "| case | liver Dice | tumor Dice | lesions ref / pred / detected |",
            "|---|---|---|---|",
        ]
        for c in sorted(cases, key=lambda c: case_order(c["case"])):
            lines.append(
                f"| {c['case']} | {card_number(c['liver']['dice'], '.4f')} | "
                f"{card_number(c['tumor']['dice'], '.4f')} | "
                f"{c['lesions_ref']} / {c['lesions_pred']} / {c['lesions_detected']} |"
            )
    lines += evaluation_lines(work, task)
    lines += [
        "",
        "## Real CT check",
        "Liver Dice on the three real abdominal CT slices in ../shared/data/dcmqi-ct-3slice (GE, unenhanced,",
        "dcmqi project, BSD-3-Clause) against their manual segmentation: "
        + (f"**{real:.4f}**." if real is not None else "not measured (data absent)."),
        "",
        "## Limits",
        "- Phantom anatomy is drawn from analytic shapes; real livers, lesions and neighbours vary far more."
        + (
            " Real tumour labels come from a dozen LiTS patients (the lits-tumor training volumes, every second"
            " slice); the MSD slices merge liver and tumour (a marginal loss). The real slices were exported as"
            " 8-bit pictures (HU estimated; above 160 HU a lower bound in the lits-tumor export)."
            if uses_real_data(data)
            else ""
        ),
        *(
            [
                "- Lesion recall falls with size (by diameter above): lesions under 10 mm, 6 pixels or fewer at",
                "  256 x 256 input, are mostly missed, which pulls down the tumor Dice of cases holding only small",
                "  lesions. False positive lesions are common (precision above).",
            ]
            if task == "liver-tumor"
            else []
        ),
        *(
            [f"- Every slice runs through all {len(members)} members: {len(members)}x the inference of one U-Net."]
            if members
            else []
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m litseg.train.evaluate.model_card")
    parser.add_argument("--task", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--notes", default="", help="training schedule, in words")
    args = parser.parse_args(argv)
    args.out.write_text(card(args.task, args.work, args.model, args.notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
