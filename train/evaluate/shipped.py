"""``python -m litseg.train.evaluate.shipped``: real CT slices scored through the shipped path.

Every figure comes from what ``litseg-run`` does: each series (:mod:`.shipped_series`: one slice, or one run
of neighbouring slices of a lits-tumor volume, with a plausible scanner geometry) is written as DICOM CT
files into a temporary folder and segmented by :func:`litseg.runtime.segment` with the model's own defaults
(``RunConfig()``: the coarse focus pass, the model's test-time shifts, largest liver, smallest tumour and
tumour margin as calibrated with the model). The one setting added is ``allow_thin=True`` for series of
fewer than three slices, which ``litseg-run`` refuses by default (``--allow-thin``). The labels come back on
the series' own grid (checked against the written geometry) and are scored slice by slice and, for
lits-tumor, volume by volume (:mod:`.shipped_scores`).

Sets (``--set``), from the fixed splits: lits-tumor ``test`` (LiTS 5, 10, 16, 48), ``selection`` (9, 22, 50),
``train`` (the others); ``report`` is the set figures are reported on (lits-tumor: test; IRCAD: all of it;
MSD: its clean report part). MSD follows the clean split of :mod:`..data.patients` (``test`` = ``report``,
``selection``, ``train``, and ``excluded``: the MSD patients who are IRCAD patients or lits-tumor test
volumes, reportable only as their own group). IRCAD is a test set only (``test``, ``report``, ``all``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from litseg.runtime import Model, RunConfig, segment
from litseg.runtime.dicom_images import write_datasets
from litseg.runtime.errors import InputError, LitsegError
from litseg.runtime.series import MIN_SLICES
from litseg.runtime.write import strict_json

from ..data.lits_tumor import LITS_TUMOR, load_lits_tumor, split_of
from ..data.lits_tumor import rows as lits_rows
from ..data.patients import msd_role
from ..data.real_slices import IRCAD, MSD, RealSlice, load_ircad, load_msd, msd_files
from . import shipped_scores as scores
from . import shipped_series as geometry
from .shipped_series import ShippedSeries

log = logging.getLogger(__name__)

SOURCES = (MSD, IRCAD, LITS_TUMOR)
SETS = ("test", "selection", "train", "report", "excluded", "all")


def select(source: str, folder: Path, set_name: str, patients: Sequence[str] = ()) -> list[RealSlice]:
    """The slices of ``set_name`` of a collection (optionally only ``patients``, e.g. ``lits-10``)."""
    if set_name not in SETS:
        raise ValueError(f"set must be one of {SETS}; got {set_name!r}")
    if source != MSD and set_name == "excluded":
        raise InputError(f"--set excluded names MSD patients (IRCAD patients, lits-tumor test volumes); not {source}")
    if source == LITS_TUMOR:
        wanted = "test" if set_name == "report" else set_name
        members = {r.volume for r in lits_rows(folder) if wanted == "all" or split_of(r.volume) == wanted}
        numbers = _only(patients, {f"lits-{v}": v for v in members}, source, set_name)
        slices = load_lits_tumor(folder, numbers)  # only the volumes asked for are read
    elif source == IRCAD:
        if set_name in ("selection", "train"):
            raise InputError(f"IRCAD is a test set only; --set {set_name} has no IRCAD slices: use test or report")
        slices = load_ircad(folder)
        _only(patients, {s.patient: 0 for s in slices}, source, set_name)  # names the unknown ones
        slices = [s for s in slices if not patients or s.patient in patients]
    elif source == MSD:
        cases = {case for case, _ in msd_files(folder)}
        wanted = "report" if set_name == "test" else set_name
        members = {c for c in cases if wanted == "all" or msd_role(c) == wanted}
        slices = load_msd(folder, _only(patients, {f"msd-{c}": c for c in members}, source, set_name))
    else:
        raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
    if not slices:
        raise InputError(f"the {source} {set_name} set of {folder} holds no slices")
    return slices


def _only(patients: Sequence[str], members: dict[str, int], source: str, set_name: str) -> set[int]:
    """The numbers of ``patients`` among a set's ``members`` (patient id -> number), all without a choice."""
    unknown = sorted(set(patients) - set(members))
    if unknown:
        known = sorted(members)
        raise InputError(
            f"--patients {unknown} are not in the {source} {set_name} set; it holds {', '.join(known[:8])}"
            + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        )
    return {members[p] for p in (patients or members)}


def segment_series(
    series: ShippedSeries, model: Model, workdir: Path, config: RunConfig | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Write the series as DICOM files, segment them as ``litseg-run`` does, return the labels ``(n, rows,
    columns)`` uint8 on the series' grid (slice order as ``series.slices``) and the run's record.

    ``config`` replaces the model's defaults (calibration runs its post-processing off); ``allow_thin`` is
    set for a series under three slices either way."""
    folder = Path(tempfile.mkdtemp(prefix="series-", dir=workdir))
    try:
        write_datasets(geometry.series_datasets(series), folder)
        config = dataclasses.replace(config or RunConfig(), allow_thin=len(series.slices) < MIN_SLICES)
        result = segment(folder, config, model=model)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # A lone slice's normal comes from its orientation alone (the reader's right-handed convention), so its
    # third column is compared only where slice positions define it.
    columns = [0, 1, 3] if len(series.slices) == 1 else [0, 1, 2, 3]
    if result.labels.shape_zyx[0] != len(series.slices) or not np.allclose(
        result.labels.affine_lps[:, columns], series.affine_lps[:, columns], atol=1e-3
    ):
        raise RuntimeError(
            f"{series.key}: the labels came back on {result.labels.shape_zyx} / {result.labels.affine_lps.tolist()}, "
            f"not on the written grid {series.affine_lps.tolist()}"
        )
    report = result.report()
    record = {
        "series": series.key,
        "slices": len(series.slices),
        "spacing_mm": [round(v, 4) for v in series.spacing_mm],
        "allow_thin": config.allow_thin,
        "focus": report["focus"],
        "liver_volume_ml": report["liver_volume_ml"],
        "tumor_count": report["tumor_count"],
        "plausibility_warnings": list(result.plausibility.codes if result.plausibility else ()),
    }
    return np.asarray(result.labels.array, dtype=np.uint8), record


def score_slices(
    model: Model, slices: Sequence[RealSlice], mode: str = "runs", lits_slice_mm: float | None = None
) -> dict[str, Any]:
    """Segment the slices' series through the shipped path and score them: ``{"summary", "volumes", "series",
    "slices"}`` (JSON-able; the summary's source and set are the caller's to add)."""
    plan = geometry.plan_series(slices, mode, lits_slice_mm)
    records: list[dict[str, Any]] = []
    segmented: list[tuple[ShippedSeries, np.ndarray]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="litseg-shipped-") as work:
        for series in tqdm(plan, desc="segment", unit="series", disable=not sys.stderr.isatty()):
            labels, record = segment_series(series, model, Path(work))
            records.append(record)
            segmented.append((series, labels))
    rows, volumes = scores.score_series(segmented)
    info = model.info
    summary: dict[str, Any] = {
        "model": info.path.name,
        "model_version": info.version,
        "task": info.spec.task,
        "series_mode": mode,
        "shipped_settings": {
            "config": "RunConfig() (allow_thin for series under 3 slices)",
            "focus": True,
            "tta_shifts_px": [list(t) for t in info.tta_shifts_px],
            "tumor_margin_mm": info.tumor_margin_mm,
            "min_tumor_ml": info.min_tumor_ml,
        },
        "geometry": {
            "field_of_view_mm": geometry.FIELD_OF_VIEW_MM,
            "single_slice_mm": geometry.SINGLE_SLICE_MM,
            "lits_slice_mm": lits_slice_mm if lits_slice_mm is not None else "estimated per volume from the liver",
            "stored": "uint16, RescaleIntercept -1024",
        },
        "series": len(plan),
        "seconds": round(time.perf_counter() - start, 1),
        **scores.summarize_rows(rows),
    }
    if volumes:
        summary["volumes"] = scores.summarize_volumes([case for case, _ in volumes])
    return {"summary": summary, "volumes": [row for _, row in volumes], "series": records, "slices": rows}


def evaluate(
    model_path: Path,
    source: str,
    folder: Path,
    set_name: str = "report",
    patients: Sequence[str] = (),
    mode: str = "runs",
    lits_slice_mm: float | None = None,
) -> dict[str, Any]:
    """Score a model on a set of a real-slice collection through the shipped path (:func:`score_slices`)."""
    model = Model(model_path, device="cpu")
    result = score_slices(model, select(source, folder, set_name, patients), mode, lits_slice_mm)
    result["summary"] = {"source": source, "set": set_name, **result["summary"]}
    return result


def _fmt(value: object) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def table(result: dict[str, Any]) -> str:
    """A readable table: per volume (lits-tumor) or per patient, then the summary's figures."""
    summary, lines = result["summary"], []
    if result["volumes"]:
        header = f"{'volume':10} {'slices':>6} {'series':>6} {'dz mm':>6} {'liver':>6} {'tumour':>6}"
        lines.append(header + " lesions ref/pred/hit/true")
        for v in result["volumes"]:
            lesions = f"{v['lesions_ref']}/{v['lesions_pred']}/{v['lesions_detected']}/{v['lesions_true_pred']}"
            lines.append(
                f"{v['patient']:10} {v['slices']:>6} {v['series']:>6} {v['slice_spacing_mm']:>6.2f} "
                f"{_fmt(v['liver_dice']):>6} {_fmt(v['tumor_dice']):>6} {lesions}"
            )
        vol = summary["volumes"]
        lines.append(
            f"volumes: liver Dice per case {_fmt(vol['liver']['dice_per_case_mean'])} (min "
            f"{_fmt(vol['liver']['dice_per_case_min'])}); tumour Dice per case "
            f"{_fmt(vol['tumor']['dice_per_case_mean'])}, global {_fmt(vol['tumor']['dice_global'])}; "
            f"lesion recall {_fmt(vol['lesion_recall'])}, precision "
            f"{_fmt(vol['lesion_precision'])}"
        )
    else:
        per_patient: dict[str, list[float]] = defaultdict(list)
        for r in result["slices"]:
            if r["liver_dice"] is not None:
                per_patient[r["patient"]].append(r["liver_dice"])
        lines.append(f"{'patient':12} {'slices':>6} {'liver Dice mean':>16} {'min':>6}")
        for patient, values in sorted(per_patient.items(), key=lambda item: scores.patient_order(item[0])):
            lines.append(f"{patient:12} {len(values):>6} {np.mean(values):>16.3f} {min(values):>6.3f}")
    per_slice = summary["liver_dice_per_slice"]
    lines.append(
        f"{summary['source']} {summary['set']}: {summary['slices']} slices, {summary['patients']} patients, "
        f"{summary['series']} series; liver Dice per slice mean {_fmt(per_slice['mean'])}, median "
        f"{_fmt(per_slice['median'])}, min {_fmt(per_slice['min'])}"
    )
    if "tumor_dice_per_slice" in summary:
        lines.append(
            f"tumour Dice per slice (slices with tumour in reference or prediction, n="
            f"{summary['tumor_dice_per_slice']['n']}): mean {_fmt(summary['tumor_dice_per_slice']['mean'])}"
        )
    free = summary["liver_free"]
    lines.append(
        f"liver-free slices: {free['slices']}, with predicted tumour {free['with_predicted_tumor']}, with predicted "
        f"liver {free['with_predicted_liver']} ({_fmt(free['predicted_liver_ml_total'])} mL in all)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m litseg.train.evaluate.shipped",
        description="Score an ONNX model on real CT slices through the shipped path (DICOM series -> segment()).",
    )
    parser.add_argument("model", type=Path, help="ONNX model with litseg metadata")
    parser.add_argument("source", choices=SOURCES)
    parser.add_argument("folder", type=Path, help="the collection's folder (images/ and masks/)")
    parser.add_argument("--set", dest="set_name", choices=SETS, default="report", help="default: %(default)s")
    parser.add_argument("--patients", default="", help="only these patients, e.g. lits-10,lits-48")
    parser.add_argument(
        "--series",
        choices=geometry.SERIES_MODES,
        default="runs",
        help="lits-tumor series: runs of neighbouring slices (default) or one per volume",
    )
    parser.add_argument(
        "--lits-slice-mm",
        type=float,
        default=None,
        help="original slice spacing of the lits-tumor volumes (default: estimated per volume)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the summary, volumes, series and slices here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the runtime's warnings (per series)")
    args = parser.parse_args(argv)
    if args.lits_slice_mm is not None and not args.lits_slice_mm > 0:
        parser.error(f"--lits-slice-mm must be > 0 mm; got {args.lits_slice_mm}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr)
    patients = tuple(p.strip() for p in args.patients.split(",") if p.strip())
    try:
        result = evaluate(
            args.model, args.source, args.folder, args.set_name, patients, args.series, args.lits_slice_mm
        )
    except LitsegError as exc:
        print(f"shipped: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(strict_json(result), indent=1, allow_nan=False) + "\n")
        tmp.replace(args.json)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
