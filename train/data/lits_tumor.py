"""The ``lits-tumor-slices`` collection: real LiTS slices with separate liver and tumor labels.

1580 axial slices of 19 LiTS17 volumes (``../shared/data/README.md``): ``images/volume-N_slice_S.jpg``
(512 x 512 RGB JPEG), ``masks/volume-N_slice_S_mask.png`` (0 background, 1 liver, 2 tumor, lossless) and
``slices.csv``. Every second slice of each volume, so a volume's slices ``S, S + 2, ...`` are neighbours.

**The three channels are three intensity windows, not grey.** Measured on the pixels, channel 0 is linear
in channel 1 where neither saturates (:func:`fit_channel_relation`: slope about 1.33, offset about 8 grey
levels), which is what fastai's ``windowed`` gives for the liver window W150/L30 (channel 0: -45..105 HU)
and the W200/L60 window (channel 1: -40..160 HU): slope 200 / 150, offset 255 * 5 / 150. Channel 2 is a
histogram-scaled range (fastai's ``hist_scaled``, breakpoints from each slice's own quantiles): monotone
in HU within a slice but with no fixed scale, and saturated from about 80-140 HU on in most slices, so it
says nothing above channel 1's window. HU is therefore read from channels 0 and 1 where either is inside
its window (-45..160 HU, their estimates averaged by precision where both are). Above it a pixel reads
:data:`ABOVE_WINDOW_HU` = 160 HU, a lower bound: inside the liver, where vessels must not look like tumor,
pixels of at least 160 HU have a median of 169 HU on the MSD slices (whose grey is exact HU up to 255;
dense bone, 216 HU and more outside the liver, is darker here than in a scan). Below -45 HU, where both
windows saturate, a pixel reads :data:`BELOW_WINDOW_HU` (fat and air are one value here; the models' window
starts at 0 HU). Before a
collection is read, the channel relation is measured on a sample of its images and compared with the
windows' (:func:`check_windows`), so another export is refused instead of misread.

**Orientation**: the view is the radiological one, checked per volume by anatomy (:mod:`.orientation`): the
scores of a volume's liver slices are pooled and the winning transform applied to all its slices, the
liver-free ones included; each liver slice's own verdict is kept for the record.

**Split by volume, fixed by the data's README** (so that no figure is tuned on its own test): test
:data:`TEST_VOLUMES`, selection :data:`SELECTION_VOLUMES`, training the others.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from litseg.runtime.errors import InputError
from litseg.runtime.geometry import Reorientation

from . import orientation as so
from .real_slices import RealSlice

log = logging.getLogger(__name__)

LITS_TUMOR = "lits-tumor"
#: The fixed split by LiTS volume number (``../shared/data/lits-tumor-slices``'s README).
TEST_VOLUMES: tuple[int, ...] = (5, 10, 16, 48)
SELECTION_VOLUMES: tuple[int, ...] = (9, 22, 50)
SPLITS = ("test", "selection", "train")


@dataclass(frozen=True)
class Window:
    """A fastai-style intensity window: HU ``level - width / 2`` -> grey 0, ``level + width / 2`` -> 255."""

    width_hu: float
    level_hu: float

    @property
    def low_hu(self) -> float:
        return self.level_hu - self.width_hu / 2

    @property
    def high_hu(self) -> float:
        return self.level_hu + self.width_hu / 2

    def hu(self, grey: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        return np.asarray(self.low_hu + grey * (self.width_hu / 255.0), dtype=np.float32)

    def grey(self, hu: npt.NDArray[np.floating] | float) -> npt.NDArray[np.float64]:
        return np.clip((np.asarray(hu, dtype=np.float64) - self.low_hu) * (255.0 / self.width_hu), 0.0, 255.0)


#: fastai's ``dicom_windows.liver`` (channel 0) and ``dicom_windows.custom`` (channel 1).
LIVER_WINDOW = Window(150.0, 30.0)
WIDE_WINDOW = Window(200.0, 60.0)
#: What a pixel below both windows (fat, air) reads: below the models' 0..255 HU window either way.
BELOW_WINDOW_HU = -100.0
#: What a pixel above both windows reads (the wide window's top; see the module docstring).
ABOVE_WINDOW_HU = WIDE_WINDOW.high_hu
#: What those pixels show the orientation cues (dense: above :data:`.orientation.DENSE_HU`).
DENSE_CUE_HU = 1000.0
#: Grey levels from a window's ends within which a channel counts as saturated (JPEG rings by a few levels).
SATURATION_MARGIN = 6.0
#: How far the measured channel relation may lie from the windows' before the export is refused.
SLOPE_TOLERANCE = 0.08
OFFSET_TOLERANCE_GREY = 8.0


@dataclass(frozen=True)
class ChannelRelation:
    """``channel0 = slope * channel1 + offset`` where neither saturates, fitted on a collection's pixels."""

    slope: float
    offset: float
    pixels: int

    @staticmethod
    def expected() -> ChannelRelation:
        """The relation the two windows imply."""
        slope = WIDE_WINDOW.width_hu / LIVER_WINDOW.width_hu
        offset = (WIDE_WINDOW.low_hu - LIVER_WINDOW.low_hu) * 255.0 / LIVER_WINDOW.width_hu
        return ChannelRelation(slope, offset, 0)


def _rgb(path: Path) -> npt.NDArray[np.float32]:
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    return rgb


def fit_channel_relation(images: list[npt.NDArray[np.float32]]) -> ChannelRelation:
    """Fit channel 0 against channel 1 on pixels where both are well inside their windows.

    The fit runs on the medians of channel 0 per 4-level bin of channel 1 (robust to the JPEG chroma
    noise of about +-12 levels), bins with enough pixels only.
    """
    c0 = np.concatenate([im[..., 0].ravel() for im in images])
    c1 = np.concatenate([im[..., 1].ravel() for im in images])
    lo, hi = 3 * SATURATION_MARGIN, 255.0 - 3 * SATURATION_MARGIN
    inside = (c0 > lo) & (c0 < hi) & (c1 > lo) & (c1 < hi)
    c0, c1 = c0[inside], c1[inside]
    if c0.size < 1000:
        raise InputError(f"only {c0.size} pixels lie inside both windows; cannot measure the channels' relation")
    bins = np.floor(c1 / 4.0).astype(np.int64)
    xs, ys = [], []
    for b in np.unique(bins):
        sel = bins == b
        if np.count_nonzero(sel) >= 200:
            xs.append(float(np.median(c1[sel])))
            ys.append(float(np.median(c0[sel])))
    # Only bins where channel 0 stays clear of its top: near it the median is pulled down by the cut.
    x, y = np.array(xs), np.array(ys)
    keep = y < hi - 3 * SATURATION_MARGIN
    slope, offset = np.polyfit(x[keep], y[keep], 1)
    return ChannelRelation(float(slope), float(offset), int(c0.size))


def check_windows(relation: ChannelRelation) -> None:
    """Refuse a collection whose channels do not follow the two windows this module reads them with."""
    want = ChannelRelation.expected()
    if abs(relation.slope - want.slope) > SLOPE_TOLERANCE or abs(relation.offset - want.offset) > OFFSET_TOLERANCE_GREY:
        raise InputError(
            f"the images' channel 0 = {relation.slope:.3f} x channel 1 + {relation.offset:.1f} (on {relation.pixels} "
            f"pixels), but the W{LIVER_WINDOW.width_hu:g}/L{LIVER_WINDOW.level_hu:g} and "
            f"W{WIDE_WINDOW.width_hu:g}/L{WIDE_WINDOW.level_hu:g} windows give {want.slope:.3f} x channel 1 + "
            f"{want.offset:.1f}: this is not the lits-tumor-slices export; map its channels to HU before use"
        )


def hu_of(rgb: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Hounsfield units of one slice from its window channels 0 and 1 (see the module docstring)."""
    c0, c1 = rgb[..., 0], rgb[..., 1]
    lo, hi = SATURATION_MARGIN, 255.0 - SATURATION_MARGIN
    in0 = (c0 > lo) & (c0 < hi)
    in1 = (c1 > lo) & (c1 < hi)
    hu0, hu1 = LIVER_WINDOW.hu(c0), WIDE_WINDOW.hu(c1)
    # Precision weights: channel 0 has 255/150 grey levels per HU, channel 1 255/200, the same noise each.
    w0 = (LIVER_WINDOW.width_hu / WIDE_WINDOW.width_hu) ** -2
    both = in0 & in1
    hu = np.full(c0.shape, BELOW_WINDOW_HU, dtype=np.float32)
    hu[in1] = hu1[in1]
    hu[in0 & ~in1] = hu0[in0 & ~in1]
    hu[both] = (w0 * hu0[both] + hu1[both]) / (w0 + 1.0)
    hu[c1 >= hi] = ABOVE_WINDOW_HU
    return hu


@dataclass(frozen=True)
class SliceRow:
    image: Path
    mask: Path
    volume: int
    slice_index: int


def split_of(volume: int) -> str:
    """``"test"``, ``"selection"`` or ``"train"`` for a LiTS volume number of the collection."""
    if volume in TEST_VOLUMES:
        return "test"
    if volume in SELECTION_VOLUMES:
        return "selection"
    return "train"


def rows(folder: Path) -> list[SliceRow]:
    """The collection's slices from its ``slices.csv``, sorted by volume and slice."""
    table = folder / "slices.csv"
    if not table.is_file():
        raise InputError(f"{folder} has no slices.csv: not a lits-tumor-slices collection")
    out = []
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            image, mask = folder / "images" / row["image"], folder / "masks" / row["mask"]
            if not image.is_file() or not mask.is_file():
                raise InputError(f"slices.csv names {row['image']} / {row['mask']}, which are not in {folder}")
            out.append(SliceRow(image, mask, int(row["lits_volume"]), int(row["slice"])))
    if not out:
        raise InputError(f"{table} lists no slices")
    return sorted(out, key=lambda r: (r.volume, r.slice_index))


def _labels(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as img:
        labels = np.asarray(img)
    if labels.ndim != 2 or labels.max() > 2:
        raise InputError(
            f"{path.name}: a mask must be one channel of 0, 1, 2; got shape {labels.shape}, max {labels.max()}"
        )
    return np.ascontiguousarray(labels)


def load_lits_tumor(folder: Path, volumes: set[int] | None = None, check: bool = True) -> list[RealSlice]:
    """The slices of ``lits-tumor-slices`` (optionally only ``volumes``), canonical, in HU.

    ``check`` measures the channel relation on up to 40 liver slices first (:func:`check_windows`).
    Sorted by volume, then slice. Each :class:`RealSlice` has ``liver`` = liver or tumor and ``tumor``.
    """
    table = [r for r in rows(folder) if volumes is None or r.volume in volumes]
    if check:
        sample = table[:: max(1, len(table) // 40)][:40]
        check_windows(fit_channel_relation([_rgb(r.image) for r in sample]))
    by_volume: dict[int, list[SliceRow]] = defaultdict(list)
    for r in table:
        by_volume[r.volume].append(r)
    out: list[RealSlice] = []
    for volume, entries in sorted(by_volume.items()):
        loaded = []
        for r in entries:
            labels = _labels(r.mask)
            hu = hu_of(_rgb(r.image))
            # The spine and table cues look for dense pixels (>= 250 HU), which read 160 HU here: every pixel
            # above the windows is dense for them (bone, contrast, kidney: what that cue counts anyway).
            cue_hu = np.where(hu >= ABOVE_WINDOW_HU, DENSE_CUE_HU, hu)
            own = so.recover(cue_hu, labels > 0) if (labels > 0).any() else None
            loaded.append((r, hu, labels, own))
        verdicts = [own.scores for _, _, _, own in loaded if own is not None]
        # A volume without liver (LiTS 25, a pelvis) has no liver cue: the README's radiological view stands.
        pooled = so.choose(verdicts).transform if verdicts else Reorientation()
        for r, hu, labels, own in loaded:
            canonical = so.apply(pooled, labels)
            out.append(
                RealSlice(
                    LITS_TUMOR,
                    f"lits-{volume}",
                    r.slice_index,
                    r.image.name,
                    np.asarray(so.apply(pooled, hu), dtype=np.float32),
                    canonical > 0,
                    pooled,
                    own if own is not None else so.Orientation(pooled, (), 0.0),
                    None,
                    canonical == 2,
                )
            )
        if verdicts and pooled != Reorientation():
            log.warning(
                "lits-%d: anatomy says the slices are not in the radiological view; turned by %s", volume, pooled
            )
    return out


def consecutive_runs(slices: list[RealSlice], step: int = 2) -> list[list[RealSlice]]:
    """A volume's slices cut into runs of neighbours (``slice_index`` advancing by ``step``, no gap)."""
    runs: list[list[RealSlice]] = []
    for s in sorted(slices, key=lambda s: (s.patient, s.slice_index)):
        last = runs[-1][-1] if runs else None
        if last is not None and last.patient == s.patient and s.slice_index - last.slice_index == step:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs
