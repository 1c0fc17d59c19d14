"""``litseg-prepare``: a LiTS-layout folder -> (optional DICOM series) -> an HDF5 training set.

Per case: read ``volume-N`` / ``segmentation-N`` (NIfTI); trust the image header where the mask's
disagrees (LiTS 48-52); turn the volume into the canonical orientation from its affine and confirm it
with anatomy (liver on the patient's right, spine behind the liver), correcting headers that lie
(LiTS 28-47); optionally write the case as DICOM CT + grey-level mask series; keep the slices with
liver plus a small fraction of the empty ones; resample with the runtime's own ``preprocess``; append
to the HDF5 file, case by case (bounded memory), written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from litseg.runtime import kernels
from litseg.runtime.dicom_images import SeriesIdentity, ct_datasets, mask_datasets, write_datasets
from litseg.runtime.errors import EXIT_OUTPUT, InputError, LitsegError
from litseg.runtime.geometry import Reorientation, canonical_reorientation
from litseg.runtime.hu import TISSUE_HU
from litseg.runtime.nifti import read_nifti
from litseg.runtime.output_folder import commit_folder
from litseg.runtime.preprocess import preprocess
from litseg.runtime.spec import TASK_CLASSES, PreprocessSpec
from litseg.runtime.volume import Volume

from .h5set import H5Set

log = logging.getLogger(__name__)

#: Default fraction of the slices without liver that are kept (dropping all teaches false positives).
DEFAULT_EMPTY_FRACTION = 0.1
BONE_HU = 250.0
_CASE_RE = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of one preparation run (the CLI has one flag per field)."""

    source: Path
    out: Path
    task: str = "liver-tumor"
    empty_fraction: float = DEFAULT_EMPTY_FRACTION
    dicom_out: Path | None = None
    cases: tuple[int, ...] | None = None
    spec: PreprocessSpec = field(default_factory=PreprocessSpec)

    def __post_init__(self) -> None:
        if self.task not in TASK_CLASSES:
            raise ValueError(f"task must be one of {sorted(TASK_CLASSES)}; got {self.task!r}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction must be in [0, 1]; got {self.empty_fraction}")
        if self.spec.task != self.task:
            object.__setattr__(
                self,
                "spec",
                PreprocessSpec.for_task(
                    self.task, window_hu=self.spec.window_hu, target_shape_yx=self.spec.target_shape_yx
                ),
            )


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """A case in the canonical orientation: float32 HU and uint8 labels on one geometry."""

    name: str
    hu: Volume
    labels: Volume
    notes: dict[str, object]


def find_cases(folder: Path, only: Sequence[int] | None = None) -> list[tuple[int, Path, Path]]:
    """``(N, volume-N, segmentation-N)`` for every case in a LiTS-layout folder, sorted by N."""
    if not folder.is_dir():
        raise InputError(f"LiTS folder not found: {folder}; pass the folder holding volume-N.nii files")
    found = []
    for path in sorted(folder.iterdir()):
        match = _CASE_RE.match(path.name)
        if not match:
            continue
        n = int(match.group(1))
        if only is not None and n not in only:
            continue
        segs = [folder / f"segmentation-{n}.nii{ext}" for ext in (".gz", "")]
        seg = next((s for s in segs if s.is_file()), None)
        if seg is None:
            raise InputError(f"{path.name} has no segmentation-{n}.nii(.gz) beside it in {folder}")
        found.append((n, path, seg))
    if not found:
        raise InputError(f"no volume-N.nii(.gz) files in {folder}" + (f" for cases {list(only)}" if only else ""))
    return sorted(found)


def anatomical_flips(hu: npt.NDArray[np.floating], labels: npt.NDArray[np.uint8]) -> tuple[bool, bool]:
    """``(flip_x, flip_y)`` needed so the liver lies on the patient's right and the spine behind it.

    Expects a canonical array (columns to the patient's left, rows to posterior) whose header may lie.
    """
    liver_slices = np.nonzero(labels.any(axis=(1, 2)))[0]
    if liver_slices.size == 0:
        return False, False
    picked = liver_slices[:: max(1, liver_slices.size // 12)]
    sub_hu, sub_lab = hu[picked], labels[picked]
    body_cols = np.nonzero(sub_hu > TISSUE_HU)[2]
    liver_rows, liver_cols = np.nonzero(sub_lab > 0)[1:]
    flip_x = bool(liver_cols.mean() > body_cols.mean())
    centre = body_cols.mean()
    half_width = 0.12 * (body_cols.max() - body_cols.min() + 1)
    bone = sub_hu > BONE_HU
    bone[:, :, : max(0, int(centre - half_width))] = False
    bone[:, :, int(centre + half_width) :] = False
    bone_rows = np.nonzero(bone)[1]
    flip_y = bool(bone_rows.size > 0 and bone_rows.mean() < liver_rows.mean())
    return flip_x, flip_y


def load_case(n: int, volume_path: Path, seg_path: Path) -> PreparedCase:
    """Read one case and bring image and mask into the canonical orientation, checked by anatomy."""
    image = read_nifti(volume_path)
    mask = read_nifti(seg_path)
    notes: dict[str, object] = {}
    if image.shape_zyx != mask.shape_zyx:
        raise InputError(
            f"case {n}: image shape {image.shape_zyx} and mask shape {mask.shape_zyx} differ; "
            "the mask must be on the image's grid"
        )
    if not np.allclose(image.affine_lps, mask.affine_lps, atol=1e-3):
        log.warning("case %d: the mask header disagrees with the image header; trusting the image", n)
        notes["mask_affine_mismatch"] = True
    if np.allclose(image.spacing_mm, (1.0, 1.0, 1.0)):
        log.warning("case %d: the header claims 1 x 1 x 1 mm voxels, a known LiTS placeholder", n)
        notes["suspicious_spacing"] = True
    values = np.unique(mask.array)
    if values.max() > 2:
        raise InputError(f"case {n}: mask values {values.tolist()} outside 0/1/2 (background/liver/tumor)")
    reo = canonical_reorientation(image.affine_lps)
    hu = reo.apply(Volume(np.asarray(image.array, dtype=np.float32), image.affine_lps))
    labels_array = reo.apply_array(np.asarray(mask.array, dtype=np.uint8))
    flip_x, flip_y = anatomical_flips(hu.array, labels_array)  # type: ignore[arg-type]
    if flip_x or flip_y:
        log.warning("case %d: the header contradicts the anatomy (flip x: %s, y: %s); correcting", n, flip_x, flip_y)
        notes["anatomy_flip"] = {"x": flip_x, "y": flip_y}
        fix = Reorientation(flip_y=flip_y, flip_x=flip_x)
        # The header was wrong: correct the pixels and keep the canonical affine, now true.
        hu = Volume(fix.apply_array(hu.array), hu.affine_lps)
        labels_array = fix.apply_array(labels_array)
    notes["reorientation"] = {k: bool(v) for k, v in vars(reo).items()}
    return PreparedCase(f"volume-{n}", hu, Volume(labels_array, hu.affine_lps), notes)


def select_slices(labels: npt.NDArray[np.uint8], empty_fraction: float, key: str) -> npt.NDArray[np.int64]:
    """Slices with liver plus ``empty_fraction`` of the others, chosen reproducibly from ``key``."""
    has_liver = labels.any(axis=(1, 2))
    empty = np.nonzero(~has_liver)[0]
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    n_keep = round(empty_fraction * empty.size)
    kept_empty = np.random.default_rng(seed).choice(empty, size=n_keep, replace=False) if n_keep else empty[:0]
    return np.sort(np.concatenate([np.nonzero(has_liver)[0], kept_empty])).astype(np.int64)


def task_labels(labels: npt.NDArray[np.uint8], task: str) -> npt.NDArray[np.uint8]:
    """Class indices for the task: ``liver`` merges tumor into liver."""
    return (labels > 0).astype(np.uint8) if task == "liver" else labels


def resample_labels(
    labels: npt.NDArray[np.uint8], num_classes: int, shape_yx: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """Labels to the model grid: one-hot, anti-aliased resampling, argmax (the inverse of inference)."""
    out = np.empty((labels.shape[0], *shape_yx), dtype=np.uint8)
    for start in range(0, labels.shape[0], 16):
        chunk = labels[start : start + 16]
        onehot = np.ascontiguousarray((chunk[:, None] == np.arange(num_classes)[None, :, None, None]), np.float32)
        out[start : start + 16] = kernels.resample_argmax(onehot, shape_yx)
    return out


def write_case_dicom(case: PreparedCase, folder: Path, task: str) -> None:
    """The case as a DICOM CT series and a grey-level mask series (the seed's convention)."""
    identity = SeriesIdentity.derived(f"LITS-{case.name}", series_number=1, description="CT from NIfTI")
    ct = ct_datasets(case.hu, identity)  # rounds float HU to int16
    mask_identity = replace(
        identity,
        series_uid=SeriesIdentity.derived(f"LITS-{case.name}", series_number=2).series_uid,
        series_number=2,
        description=f"{task} mask",
    )
    masks = mask_datasets(case.labels, task, mask_identity, [str(ds.SOPInstanceUID) for ds in ct])
    for sub, datasets in (("ct", ct), (f"mask-{task}", masks)):
        commit_folder(folder / case.name / sub, partial(write_datasets, datasets), overwrite=True)


def prepare(config: PrepareConfig, progress: bool = False) -> Path:
    """Run the preparation; returns the HDF5 path."""
    cases = find_cases(config.source, config.cases)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    h5 = H5Set(config.out, config.spec, config.source.name, {"empty_fraction": config.empty_fraction})
    try:
        for n, volume_path, seg_path in tqdm(cases, desc="prepare", unit="case", disable=not progress):
            case = load_case(n, volume_path, seg_path)
            if config.dicom_out is not None:
                write_case_dicom(case, config.dicom_out, config.task)
            slices = select_slices(np.asarray(case.labels.array), config.empty_fraction, case.name)
            image = preprocess(case.hu, config.spec).image.array[slices]
            labels = task_labels(np.asarray(case.labels.array)[slices], config.task)
            masks = resample_labels(np.ascontiguousarray(labels), config.spec.num_classes, config.spec.target_shape_yx)
            h5.append(case.name, np.asarray(image, dtype=np.float32), masks, slices, case.hu.spacing_mm, case.notes)
            log.info("case %d: %d of %d slices kept", n, slices.size, case.hu.shape_zyx[0])
        h5.finish()
    except BaseException:
        h5.abort()
        raise
    return config.out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="litseg-prepare",
        description="Prepare LiTS17-layout data (volume-N / segmentation-N NIfTI) as an HDF5 training set.",
    )
    parser.add_argument("source", type=Path, help="folder with volume-N.nii(.gz) and segmentation-N.nii(.gz)")
    parser.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    parser.add_argument("--task", choices=sorted(TASK_CLASSES), default="liver-tumor")
    parser.add_argument(
        "--empty-fraction",
        type=float,
        default=DEFAULT_EMPTY_FRACTION,
        help="fraction of slices without liver to keep (default %(default)s)",
    )
    parser.add_argument(
        "--dicom-out",
        type=Path,
        default=None,
        help="also write each case as DICOM CT + grey-level mask series here",
    )
    parser.add_argument("--cases", default=None, help="case numbers to use, e.g. 0-9,15 (default: all)")
    parser.add_argument("--size", type=int, default=256, help="in-plane size of the training slices")
    add_window_flag(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cases = None
    if args.cases:
        try:
            cases = tuple(sorted({n for part in args.cases.split(",") for n in _expand(part)}))
        except ValueError:
            parser.error(f"--cases: expected numbers and ranges like 0-9,15; got {args.cases!r}")
    try:
        config = PrepareConfig(
            args.source,
            args.out,
            args.task,
            args.empty_fraction,
            args.dicom_out,
            cases,
            PreprocessSpec.for_task(args.task, window_hu=args.window_hu, target_shape_yx=(args.size, args.size)),
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        path = prepare(config, progress=sys.stderr.isatty())
    except LitsegError as exc:
        print(f"litseg-prepare: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"litseg-prepare: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_OUTPUT
    with h5py.File(path, "r") as f:
        print(
            json.dumps(
                {
                    "out": str(path),
                    "slices": int(f["images"].shape[0]),
                    "cases": int(f["case_names"].shape[0]),
                    "class_voxels": f.attrs["class_voxels"].tolist(),
                }
            )
        )
    return 0


def window_hu(text: str) -> tuple[float, float]:
    """``"LO,HI"`` -> ``(lo, hi)`` HU (argparse type of ``--window-hu``)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in HU such as 0,255; got {text!r}") from None
    if not hi > lo:
        raise argparse.ArgumentTypeError(f"the window's HI must exceed LO; got {text!r}")
    return lo, hi


def add_window_flag(parser: argparse.ArgumentParser) -> None:
    """``--window-hu LO,HI``: the model's HU window, recorded in the set's preprocessing spec."""
    parser.add_argument(
        "--window-hu",
        type=window_hu,
        default=PreprocessSpec().window_hu,
        metavar="LO,HI",
        help="HU window scaled to [0, 1] (default %(default)s); sets mixed in training must share it",
    )


def _expand(part: str) -> range:
    lo, _, hi = part.strip().partition("-")
    return range(int(lo), int(hi or lo) + 1)
