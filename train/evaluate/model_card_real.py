"""The model card's parts about real data: what the model was trained on, and how it did on real CT and on
phantom cases without a liver, read from the JSON files ``train/recipe.sh`` writes into its work folder:
``shipped-<set>-<task>.json`` (:mod:`.shipped`: real slices through the shipped path, on the clean sets of
:mod:`..data.patients`), their ``-baseline`` twins measured on the models the recipe replaced,
``calibrate-real.json`` (:mod:`.calibrate_real`) and ``eval-negatives-<task>.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def uses_real_data(data: dict[str, Any]) -> bool:
    return any("provenance" in s for s in data.get("sets", [data]))


def headline(data: dict[str, Any]) -> list[str]:
    if uses_real_data(data):
        return [
            "**Trained on litseg phantoms and real CT slices with real tumour labels (below); chosen on real",
            "selection volumes and reported once, through the shipped path, on real patients never used for a",
            "choice. Not for clinical use.**",
        ]
    return [
        "**Trained on synthetic phantoms only. Not for clinical use.** It shows the litseg pipeline working end",
        "to end; train on LiTS17 for real use (README, 'Running on your data').",
    ]


def data_lines(data: dict[str, Any], members: bool) -> list[str]:
    """One line per HDF5 set of the run (mixed runs), with its share of each epoch and its provenance."""
    if "sets" not in data:
        return []
    lines = ["- Data, mixed in every epoch (each set split by patient and validated on its own):"]
    for s in data["sets"]:
        source = s.get("provenance") or "litseg phantoms (`litseg-phantom --seed 1000`), `litseg-prepare`"
        lines.append(
            f"  - `{s['file']}`, {s['epoch_share']:.0%} of each epoch: {s['cases']} cases, {s['train_cases']} for "
            f"training ({s['train_slices']} slices), {s['val_cases']} for validation ({s['val_slices']} slices); "
            f"{source}."
        )
    if members:
        lines.append("  (each member draws its own split of the phantoms; MSD's split is fixed)")
    return lines


#: The shipped-path result files of the recipe, in the card's order: key, what the set is, what it was used for.
SHIPPED_SETS = (
    ("lits-test", "lits-tumor test volumes (LiTS 5, 10, 16, 48)", "report only"),
    ("msd-report", "MSD report patients (11, clean split)", "report only"),
    ("ircad", "3D-IRCADb-01 (16 patients; all of them excluded from training)", "report only"),
    ("lits-selection", "lits-tumor selection volumes (LiTS 9, 22, 50)", "checkpoint and post-processing choice"),
)


def card_number(value: object, spec: str) -> str:
    """A number for the card; ``n/a`` where a metric is undefined (litseg-eval writes null, logs NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def shipped_row(title: str, use: str, ev: dict[str, Any]) -> str:
    """One table row of a shipped-path result: liver Dice per slice (and per volume), tumour, lesions."""
    s = ev["summary"]
    per_slice = s["liver_dice_per_slice"]
    volumes = s.get("volumes")
    tumor = lesions = liver_volume = "n/a"
    if volumes is not None:
        t = volumes["tumor"]
        tumor = f"{card_number(t['dice_per_case_mean'], '.3f')} / {card_number(t['dice_global'], '.3f')}"
        lesions = f"{card_number(volumes['lesion_recall'], '.2f')} / {card_number(volumes['lesion_precision'], '.2f')}"
        liver_volume = f"{card_number(volumes['liver']['dice_per_case_mean'], '.3f')}"
    free = s["liver_free"]
    free_text = f"{free['with_predicted_tumor']} of {free['slices']}" if free["slices"] else "n/a"
    return (
        f"| {title} ({s['model_version']}) | {use} | {card_number(per_slice['mean'], '.3f')} "
        f"({card_number(per_slice['median'], '.3f')}) | {liver_volume} | {tumor} | {lesions} | {free_text} |"
    )


def evaluation_lines(work: Path, task: str) -> list[str]:
    """The real-CT and no-liver sections, for whichever of their JSON files exist."""
    lines: list[str] = []
    found = [(key, title, use, _load(work / f"shipped-{key}-{task}.json")) for key, title, use in SHIPPED_SETS]
    if any(ev for *_, ev in found):
        lines += [
            "",
            "## Real CT, through the shipped path",
            "Each real slice, or each run of neighbouring slices of a lits-tumor volume, written as a DICOM series "
            "(384 mm field of view; slice spacing estimated per volume) and segmented by `segment()` with the "
            "model's defaults (focus, post-processing), as `litseg-run` does (`python -m "
            "litseg.train.evaluate.shipped`). Which patient is where: docs/training.md, 'Clean sets'. Liver Dice on "
            "liver plus tumour; volumes are a lits-tumor volume's exported slices stacked.",
            "",
            "| set (model) | used for | liver Dice per slice, mean (median) | liver Dice per volume | tumour Dice "
            "per volume / global | lesion recall / precision | liver-free slices with tumour |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, title, use, ev in found:
            if ev is None:
                continue
            lines.append(shipped_row(title, use, ev))
            base = _load(work / f"shipped-{key}-{task}-baseline.json")
            if base is not None:
                lines.append(shipped_row(title + ", the model replaced", "(baseline)", base))
    calibration = _load(work / "calibrate-real.json")
    if calibration is not None and task == "liver-tumor":
        c = calibration["chosen"]
        lines += [
            "",
            f"Tumour post-processing chosen on the lits-tumor selection volumes ({calibration['rule']}): small-tumour "
            f"filter {c['min_tumor_ml']:g} mL, margin {c['tumor_margin_mm']:g} mm (there: tumour Dice per volume "
            f"{card_number(c['tumor_dice_per_volume'], '.3f')}, global "
            f"{card_number(c['tumor_dice_global'], '.3f')}, lesion recall {card_number(c['lesion_recall'], '.2f')}, "
            f"precision {card_number(c['lesion_precision'], '.2f')}).",
        ]
    healthy = _load(work / f"eval-healthy-{task}.json")
    if healthy is not None and task == "liver-tumor":
        lines += [
            "",
            "## Healthy livers",
            f"{healthy['cases']} held-out phantom cases with a healthy liver (no tumour) through `litseg-run`: tumours "
            f"found in **{healthy['cases_with_tumor']}** cases ({healthy['tumors_total']} in all).",
        ]
    negatives = _load(work / f"eval-negatives-{task}.json")
    if negatives is not None:
        lines += [
            "",
            "## Phantom cases without a liver",
            f"{negatives['cases']} held-out phantom cases of regions without liver ({', '.join(negatives['regions'])}) "
            f"through `litseg-run`: liver found max **{negatives['liver_ml_max']:.1f} mL** (mean "
            f"{negatives['liver_ml_mean']:.1f}), tumors found in {negatives['cases_with_tumor']} cases "
            f"({negatives['tumors_total']} in all).",
        ]
    return lines
