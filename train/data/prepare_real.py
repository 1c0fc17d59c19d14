"""``litseg-prepare-real``: real CT slice collections (MSD, IRCAD, lits-tumor) -> the HDF5 set ``litseg-train`` reads.

Each slice is put in the canonical orientation and mapped to HU by :mod:`.real_slices`, then goes
through the runtime's own :func:`~litseg.runtime.preprocess.preprocess` (window of the spec, resampling
to its size), exactly as a DICOM slice of that HU would at inference. Masks: ``liver`` task 1 = liver;
``liver-tumor`` task 3 = liver-or-tumor where the source does not tell the two apart (MSD, IRCAD; see
:data:`~.h5set.LIVER_OR_TUMOR`), and the full labels 1 = liver, 2 = tumor where it does (lits-tumor, whose
liver-free slices are kept as real negatives). Patients are cases (``msd-10001``, ``ircad-10001``,
``lits-3``); the MSD set holds the training and selection patients of the clean split
(:mod:`.patients`), recorded as ``train`` / ``val`` (``case_split``), the lits-tumor set its training
volumes as ``train`` and its selection volumes as ``val``; neither holds a patient of a report or test set.
An IRCAD set is marked ``use = "test"`` and ``litseg-train`` refuses it.

The slices have no pixel spacing (the whole field of view was resized by their source, as the runtime
resizes it), so ``case_spacing_mm`` is NaN.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from litseg.runtime.errors import EXIT_OUTPUT, LitsegError
from litseg.runtime.preprocess import preprocess
from litseg.runtime.spec import TASK_CLASSES, PreprocessSpec
from litseg.runtime.volume import Volume

from .h5set import LIVER_OR_TUMOR, H5Set
from .lits_tumor import LITS_TUMOR, TEST_VOLUMES, load_lits_tumor, rows, split_of
from .patients import msd_role
from .prepare import add_window_flag, resample_labels
from .real_slices import IRCAD, MSD, RealSlice, load, load_msd, msd_files

log = logging.getLogger(__name__)

#: The window of the models trained with real slices: MSD keeps HU only within 0..255, so a window inside
#: it makes MSD slices and runtime input of the same tissue identical (grey g -> input g / 255).
REAL_WINDOW_HU = (0.0, 255.0)
SOURCES = (MSD, IRCAD, LITS_TUMOR)
PROVENANCE = {
    MSD: "msd-liver-slices: Medical Segmentation Decathlon Task03 Liver (LiTS17 volumes; CC-BY-SA 4.0), slices "
    "from sarah-antillia/Image-Segmentation-Liver-Tumor (Apache-2.0; its README names the data licence as "
    "ODC DbCL 1.0)",
    IRCAD: "ircad-liver-slices: 3D-IRCADb-01, slices from sarah-antillia/TensorFlow-FlexUNet-Image-Segmentation-"
    "IRCAD-Digestive-Cancer-Liver (Apache-2.0; derived data CDLA-Sharing-1.0); test only",
    LITS_TUMOR: "lits-tumor-slices: LiTS17 training volumes (Bilic et al., MedIA 2023; the Medical Segmentation "
    "Decathlon Task03 releases them under CC-BY-SA 4.0, the LiTS challenge states CC BY-NC-SA), slices from "
    "jobs-code/Liver-Tumor-Segmentation-using-Transunet (no licence file); training and selection volumes only",
}


@dataclass(frozen=True)
class RealPrepareConfig:
    """One run: which collection, where it lies, the HDF5 file, the task and the preprocessing spec."""

    source: str
    folder: Path
    out: Path
    spec: PreprocessSpec

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}; got {self.source!r}")
        lo, hi = self.spec.window_hu
        if self.source == MSD and (lo < 0.0 or hi > 255.0):
            log.warning(
                "window %s HU reaches outside 0..255, where MSD slices are saturated: their model input will "
                "differ from a real DICOM slice's; use --window-hu 0,255",
                list(self.spec.window_hu),
            )


def slice_label(task: str) -> int:
    """The mask value of a real slice's (merged) liver in a set of ``task``."""
    return 1 if task == "liver" else LIVER_OR_TUMOR


def model_input(slices: Sequence[RealSlice], spec: PreprocessSpec) -> npt.NDArray[np.float32]:
    """The runtime's model input of canonical HU slices of one size: ``(n, *spec.target_shape_yx)``.

    The slices are stacked as one volume on a canonical (LPS) grid of unknown pixel size (1 mm stands
    in: preprocessing resamples by pixel count and never reads the spacing), so ``preprocess`` keeps
    their orientation and only resamples and windows.
    """
    hu = np.stack([s.hu for s in slices]).astype(np.float32)
    return np.asarray(preprocess(Volume(hu, np.eye(4)), spec).image.array, dtype=np.float32)


def slice_labels(s: RealSlice, task: str) -> npt.NDArray[np.uint8]:
    """A slice's label values for ``task``: its own tumor label where it has one, else the merged liver."""
    labels = s.liver.astype(np.uint8)
    if s.tumor is not None and task != "liver":
        labels[s.tumor] = 2
        return labels
    return labels * np.uint8(slice_label(task))


def model_masks(slices: Sequence[RealSlice], spec: PreprocessSpec) -> npt.NDArray[np.uint8]:
    """The slices' labels on the model grid, as label values of the task."""
    labels = np.stack([slice_labels(s, spec.task) for s in slices])
    return resample_labels(np.ascontiguousarray(labels), max(int(labels.max()) + 1, 2), spec.target_shape_yx)


def load_source(source: str, folder: Path) -> list[RealSlice]:
    """The slices a set of ``source`` may hold: lits-tumor never its test volumes, MSD only its training
    and selection patients of the clean split (:mod:`.patients`; never the report part, nor the patients who
    are IRCAD patients or lits-tumor test volumes)."""
    if source == LITS_TUMOR:
        usable = {r.volume for r in rows(folder)} - set(TEST_VOLUMES)
        return load_lits_tumor(folder, volumes=usable)
    if source == MSD:  # only these patients are read (each patient's orientation is pooled over its own slices)
        return load_msd(folder, {case for case, _ in msd_files(folder) if msd_role(case) in ("train", "selection")})
    return load(source, folder)


def case_split(source: str, patient: str) -> str:
    """The recorded split of a patient: ``train`` or ``val`` (selection) for MSD and lits-tumor, ``test``
    for IRCAD."""
    number = int(patient.split("-")[1])
    if source == MSD:
        return "val" if msd_role(number) == "selection" else "train"
    if source == LITS_TUMOR:
        return "val" if split_of(number) == "selection" else "train"
    return "test"


def _notes(slices: Sequence[RealSlice]) -> dict[str, object]:
    return {
        "source": slices[0].source,
        "pixel_spacing": "unknown (the source resized the whole field of view)",
        "slices": [
            {
                "file": s.name,
                "transform": {k: bool(v) for k, v in vars(s.transform).items() if k != "flip_z"},
                "orientation_margin": round(s.orientation.margin, 4),
                "own_verdict_agrees": s.agrees,
                **({"hu_map": s.hu_map.to_json()} if s.hu_map is not None else {}),
            }
            for s in slices
        ],
    }


def prepare_real(config: RealPrepareConfig, progress: bool = False) -> dict[str, object]:
    """Write the HDF5 set; returns a summary (slices, cases, split, orientation confidence)."""
    slices = load_source(config.source, config.folder)
    by_patient: dict[str, list[RealSlice]] = defaultdict(list)
    for s in slices:
        by_patient[s.patient].append(s)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    partial = config.spec.task != "liver" and config.source != LITS_TUMOR
    attrs: dict[str, object] = {"provenance": PROVENANCE[config.source], "partial_label": partial}
    if config.source == IRCAD:
        attrs["use"] = "test"
    h5 = H5Set(config.out, config.spec, config.folder.name, attrs)
    splits: list[str] = []
    try:
        for patient, group in tqdm(sorted(by_patient.items()), desc="prepare", unit="patient", disable=not progress):
            images = model_input(group, config.spec)
            masks = model_masks(group, config.spec)
            indices = np.array([s.slice_index for s in group], dtype=np.int64)
            h5.append(patient, images, masks, indices, (float("nan"),) * 3, _notes(group))
            splits.append(case_split(config.source, patient))
        h5.finish({"case_split": splits, "case_source": [config.source] * len(splits)})
    except BaseException:
        h5.abort()
        raise
    margins = np.array([s.orientation.margin for s in slices])
    return {
        "out": str(config.out),
        "source": config.source,
        "task": config.spec.task,
        "window_hu": list(config.spec.window_hu),
        "slices": len(slices),
        "cases": len(by_patient),
        "split_cases": {k: splits.count(k) for k in sorted(set(splits))},
        "orientation_own_verdict_agrees": round(float(np.mean([s.agrees for s in slices])), 4),
        "orientation_margin_over_0.2": round(float(np.mean(margins > 0.2)), 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="litseg-prepare-real",
        description="Prepare a real CT slice collection (msd-liver-slices, lits-tumor-slices or "
        "ircad-liver-slices) as an HDF5 set.",
    )
    parser.add_argument(
        "source",
        choices=SOURCES,
        help="msd (training/validation), lits-tumor (training/selection) or ircad (test only)",
    )
    parser.add_argument("folder", type=Path, help="the collection's folder (holding images/ and masks/)")
    parser.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    parser.add_argument("--task", choices=sorted(TASK_CLASSES), default="liver-tumor")
    parser.add_argument("--size", type=int, default=256, help="in-plane size of the model input")
    add_window_flag(parser)
    parser.set_defaults(window_hu=REAL_WINDOW_HU)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        spec = PreprocessSpec.for_task(args.task, window_hu=args.window_hu, target_shape_yx=(args.size, args.size))
        config = RealPrepareConfig(args.source, args.folder, args.out, spec)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        summary = prepare_real(config, progress=sys.stderr.isatty())
    except LitsegError as exc:
        print(f"litseg-prepare-real: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"litseg-prepare-real: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_OUTPUT
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
