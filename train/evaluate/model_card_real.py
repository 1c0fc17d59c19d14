"""The model card's parts about real data: what the model was trained on, and how it did on real slices
and on phantom cases without a liver (read from the JSON files ``train/recipe.sh`` writes into its work
folder: ``eval-msd-<task>.json``, ``eval-ircad-<task>.json``, their ``-baseline`` twins measured on the
models the recipe replaced, and ``eval-negatives-<task>.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def uses_real_data(data: dict[str, Any]) -> bool:
    return any("provenance" in s for s in data.get("sets", [data]))


def headline(data: dict[str, Any]) -> list[str]:
    if uses_real_data(data):
        return [
            "**Trained on litseg phantoms and real CT slices (below); validated on real slices of 22 held-out",
            "patients and tested once on another hospital's slices. Not for clinical use.**",
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


def _slice_result(ev: dict[str, Any]) -> str:
    return (
        f"liver Dice per slice mean **{ev['liver_dice_per_slice_mean']:.4f}** (median "
        f"{ev['liver_dice_per_slice_median']:.4f}, min {ev['liver_dice_per_slice_min']:.4f}), per patient "
        f"{ev['liver_dice_per_patient_mean']:.4f}, global {ev['liver_dice_global']:.4f} ({ev['slices']} slices, "
        f"{ev['patients']} patients)"
    )


def evaluation_lines(work: Path, task: str) -> list[str]:
    """The real-slice and no-liver sections, for whichever of their JSON files exist."""
    lines: list[str] = []
    sets = (
        ("msd", "MSD validation patients (the fixed 22 of 122, never trained on; LiTS17 / Decathlon slices)"),
        ("ircad", "3D-IRCADb-01 (16 patients of another hospital; evaluated once, after every choice was made)"),
    )
    found = [(key, title, _load(work / f"eval-{key}-{task}.json")) for key, title in sets]
    if any(ev for _, _, ev in found):
        what = "liver" if task == "liver" else "liver plus tumor"
        lines += [
            "",
            "## Real CT slices",
            f"Measured with `litseg-eval-slices`: each slice through the runtime's preprocessing, the model (with its "
            f"test-time shifts) and back to the slice's grid; the predicted {what} against the reference liver "
            "(MSD: liver and tumor merged by the source). No volume post-processing (a lone slice has no 3-D "
            "connectivity).",
            "",
        ]
        for key, title, ev in found:
            if ev is None:
                continue
            lines.append(f"- {title}: {_slice_result(ev)}.")
            base = _load(work / f"eval-{key}-{task}-baseline.json")
            if base is not None:
                caveat = "" if base.get("msd_input_exact", True) else "; its window reaches outside MSD's 0..255 HU"
                lines.append(
                    f"  - the model this one replaced ({base['model']} {base['model_version']}, window "
                    f"{base['window_hu']} HU{caveat}): {_slice_result(base)}."
                )
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
