"""Real CT slices stored as pictures: read them, put them in the canonical orientation, map them to HU.

Two public collections (see ``../shared/data/README.md`` for how they were made; this module relies on
those facts):

- ``msd-liver-slices/`` (Medical Segmentation Decathlon liver task = LiTS17 volumes; 122 patients):
  ``images|masks/PREFIX_CASE_SLICE.jpg``, 256 x 256 JPEG. The grey is the HU value saturated to 0..255,
  so ``HU = grey`` (fat and air read 0, bone 255). Each slice is a NIfTI ``data[:, :, k]``, then mirrored
  left-right (``mirrored_``) or flipped top-bottom (``flipped_``): within one patient the ``mirrored_``
  slices share one orientation and the ``flipped_`` ones the same turned by 180 degrees. Masks > 127 are
  liver or tumor (merged). 20 slices occur under both prefixes: one copy is kept.
- ``ircad-liver-slices/`` (3D-IRCADb-01; 16 patients; TEST ONLY): ``images|masks/CASE_SLICE.png``,
  512 x 512, each slice min-max normalised (HU map estimated by :mod:`.intensity_map`), rotated; liver
  mask colour (180, 40, 40).

The orientation comes from anatomy (:mod:`.orientation`). For MSD the scores of all slices of a
patient are pooled (those of ``flipped_`` slices first turned by 180 degrees), so one clear slice carries
its neighbours; each slice's own verdict is kept for the record. IRCAD slices are judged one by one.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from litseg.runtime.errors import InputError
from litseg.runtime.geometry import Reorientation

from . import orientation as so
from .intensity_map import LinearMap, estimate_hu_map

log = logging.getLogger(__name__)

MSD = "msd"
IRCAD = "ircad"
SOURCES = (MSD, IRCAD)
_MSD_NAME = re.compile(r"^(mirrored|flipped)_(\d+)_(\d+)\.jpg$")
_IRCAD_NAME = re.compile(r"^(\d+)_(\d+)\.png$")
IRCAD_LIVER_RGB = (180, 40, 40)
ROT180 = Reorientation(flip_y=True, flip_x=True)
#: The 0.5 and 0.6 models' patient-wise validation split of MSD: 22 of the 122 patients (CASE numbers of
#: the file names), the first 22 of ``numpy.random.default_rng(13).permutation`` of the 122 sorted case
#: numbers; those models trained on the other 100. Kept because only these 22 were never trained on by
#: them; the clean split that replaced it (which patients train, select and report) is :mod:`.patients`'.
MSD_VALIDATION_CASES: tuple[int, ...] = (
    10002, 10008, 10014, 10016, 10018, 10023, 10026, 10031, 10035, 10038, 10053,
    10057, 10061, 10068, 10071, 10079, 10088, 10094, 10102, 10104, 10110, 10112,
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class RealSlice:
    """One real slice in the canonical orientation.

    Attributes
    ----------
    source
        ``"msd"`` or ``"ircad"``.
    patient
        Patient id, e.g. ``msd-10001`` (one source volume per patient).
    slice_index
        The slice's index in its source volume.
    name
        File name of the image.
    hu
        float32 ``(h, w)`` Hounsfield units, canonical orientation (MSD: saturated to 0..255).
    liver
        bool ``(h, w)``: liver (IRCAD) or liver-or-tumor (MSD, merged by the source), canonical.
    transform
        What turned the file's array into the canonical one.
    orientation
        The anatomical verdict of this slice alone (its transform may differ from ``transform`` when the
        patient's pooled verdict overruled it).
    hu_map
        The estimated grey -> HU map (IRCAD); None where the grey is HU (MSD) or the map is a collection's
        (lits-tumor: :mod:`.lits_tumor`).
    tumor
        bool ``(h, w)``: tumor, canonical, where the source labels it apart from the liver (lits-tumor);
        None where it does not (MSD merges liver and tumor, IRCAD's masks hold liver only).
    """

    source: str
    patient: str
    slice_index: int
    name: str
    hu: npt.NDArray[np.float32]
    liver: npt.NDArray[np.bool_]
    transform: Reorientation
    orientation: so.Orientation
    hu_map: LinearMap | None = None
    tumor: npt.NDArray[np.bool_] | None = None

    @property
    def agrees(self) -> bool:
        """Whether the slice's own verdict matches the orientation it was given."""
        return self.orientation.transform == self.transform


def _grey(path: Path) -> npt.NDArray[np.uint8]:
    """The first channel of a picture (the collections store equal RGB channels)."""
    with Image.open(path) as img:
        array = np.asarray(img)
    return np.ascontiguousarray(array[..., 0] if array.ndim == 3 else array)


def _require_folder(folder: Path) -> tuple[Path, Path]:
    images, masks = folder / "images", folder / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise InputError(f"{folder} must hold images/ and masks/ folders (a real-slice collection); not found")
    return images, masks


def msd_files(folder: Path) -> dict[tuple[int, int], list[tuple[str, Path, Path]]]:
    """``(case, slice) -> [(prefix, image, mask), ...]`` of an ``msd-liver-slices`` folder."""
    images, masks = _require_folder(folder)
    found: dict[tuple[int, int], list[tuple[str, Path, Path]]] = defaultdict(list)
    for path in sorted(images.iterdir()):
        match = _MSD_NAME.match(path.name)
        if not match:
            continue
        mask = masks / path.name
        if not mask.is_file():
            raise InputError(f"{path.name} has no mask of the same name in {masks}")
        found[(int(match.group(2)), int(match.group(3)))].append((match.group(1), path, mask))
    if not found:
        raise InputError(f"no PREFIX_CASE_SLICE.jpg files in {images}")
    return dict(found)


def load_msd(folder: Path, cases: set[int] | None = None) -> list[RealSlice]:
    """Every distinct slice of an ``msd-liver-slices`` folder, canonical, HU = grey (0..255).

    ``cases`` restricts to those CASE numbers. Slices present under both prefixes are read once (the
    ``mirrored_`` copy). Sorted by case, then slice.
    """
    files = msd_files(folder)
    by_case: dict[int, list[tuple[int, str, Path, Path]]] = defaultdict(list)
    for (case, index), copies in sorted(files.items()):
        if cases is None or case in cases:
            prefix, image, mask = sorted(copies, key=lambda c: c[0] != "mirrored")[0]
            by_case[case].append((index, prefix, image, mask))
    out: list[RealSlice] = []
    for case, entries in sorted(by_case.items()):
        # Bring every slice into the patient's "mirrored" frame (a flipped slice is the mirrored one
        # turned by 180 degrees), pool the anatomical scores there, then orient each slice.
        frames = []
        for index, prefix, image_path, mask_path in entries:
            to_frame = ROT180 if prefix == "flipped" else Reorientation()
            grey = so.apply(to_frame, _grey(image_path)).astype(np.float32)
            liver = so.apply(to_frame, _grey(mask_path) > 127)
            own = so.recover(grey, liver)
            frames.append((index, image_path.name, to_frame, grey, liver, own))
        pooled = so.choose([f[5].scores for f in frames]).transform
        for index, name, to_frame, grey, liver, own in frames:
            out.append(
                RealSlice(
                    MSD,
                    f"msd-{case}",
                    index,
                    name,
                    np.asarray(so.apply(pooled, grey), dtype=np.float32),
                    np.asarray(so.apply(pooled, liver), dtype=bool),
                    so.compose(to_frame, pooled),
                    so.Orientation(so.compose(to_frame, own.transform), own.scores, own.margin),
                )
            )
    return out


def load_ircad(folder: Path) -> list[RealSlice]:
    """Every slice of an ``ircad-liver-slices`` folder, HU estimated per slice, canonical, one by one."""
    images, masks = _require_folder(folder)
    out: list[RealSlice] = []
    for path in sorted(images.iterdir(), key=lambda p: tuple(int(v) for v in re.findall(r"\d+", p.name))):
        match = _IRCAD_NAME.match(path.name)
        if not match:
            continue
        mask_path = masks / path.name
        if not mask_path.is_file():
            raise InputError(f"{path.name} has no mask of the same name in {masks}")
        with Image.open(mask_path) as img:
            rgb = np.asarray(img.convert("RGB"))
        liver = np.all(np.abs(rgb.astype(np.int16) - np.array(IRCAD_LIVER_RGB)) <= 30, axis=-1)
        hu_map = estimate_hu_map(_grey(path))
        hu = hu_map(_grey(path))
        own = so.recover(hu, liver)
        out.append(
            RealSlice(
                IRCAD,
                f"ircad-{match.group(1)}",
                int(match.group(2)),
                path.name,
                np.asarray(so.apply(own.transform, hu), dtype=np.float32),
                np.asarray(so.apply(own.transform, liver), dtype=bool),
                own.transform,
                own,
                hu_map,
            )
        )
    if not out:
        raise InputError(f"no CASE_SLICE.png files in {images}")
    return out


def load(source: str, folder: Path) -> list[RealSlice]:
    """The slices of a collection: ``source`` is ``"msd"`` or ``"ircad"``."""
    if source == MSD:
        return load_msd(folder)
    if source == IRCAD:
        return load_ircad(folder)
    raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
