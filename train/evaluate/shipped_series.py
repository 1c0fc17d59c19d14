"""Real slices as the DICOM CT series a scanner would send: the geometry and the files of shipped-path scoring.

The real-slice collections (:mod:`..data.real_slices`, :mod:`..data.lits_tumor`) keep no scanner geometry,
so each series gets a plausible one, chosen here once and recorded in every report:

- **Orientation**: axial, canonical (ImageOrientationPatient ``1 0 0 / 0 1 0``: columns run to the patient's
  left, rows to posterior, as a head-first supine scan's slices do): the loaders already turned each slice
  into that view by anatomy, so the image's left is the patient's right, as on a DICOM slice.
- **Pixel spacing**: one field of view of :data:`FIELD_OF_VIEW_MM` (384 mm, a usual abdominal
  reconstruction; LiTS' median pixel is about 0.76 mm at 512 px): 0.75 mm for the 512-px IRCAD and lits-tumor
  slices, 1.5 mm for the 256-px MSD slices (their whole field was resized to 256). The model sees the same
  256-px picture whatever the spacing (the runtime resizes the whole field); the spacing sets the mm and mL
  of post-processing (tumour margin, smallest tumour) and of the metrics.
- **Slice spacing**: a lone MSD or IRCAD slice is :data:`SINGLE_SLICE_MM` (2.5 mm) thick. A lits-tumor
  volume was exported every second slice, so its slices ``S, S + 2, ...`` lie ``2 t`` apart, ``t`` the
  volume's own slice spacing, which the collection does not record. It is estimated from the liver: the
  reference liver spans ``n`` original slices, an adult liver about :data:`LIVER_HEIGHT_MM` (160 mm) head to
  foot, so ``t = 160 / n`` snapped to the nearest usual reconstruction increment (:data:`RECONSTRUCTION_MM`);
  a volume without liver takes :data:`NO_LIVER_SLICE_MM`. On the collection this gives 0.625-1.5 mm for 14
  volumes (liver over 114-250 slices) and 2.5-5 mm for LiTS 0, 22, 48 and 50 (28-70 slices). Slice S lies
  at ``z = S * t`` mm (slice index rising to the head, as in most LiTS volumes): a 2-D model and the 3-D
  post-processing give the same labels either way round.
- **Pixels**: HU rounded to integers and stored as a scanner stores them, unsigned with RescaleIntercept
  -1024 (HU below -1024 are air: clipped there).

A series is one slice (MSD, IRCAD), or for lits-tumor one run of neighbouring exported slices (``S, S + 2,
...`` without a gap: :func:`~litseg.train.data.lits_tumor.consecutive_runs`), or (``mode="volume"``) all of a
volume's exported slices stacked ``2 t`` apart with the gaps closed, as a first look once did.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from litseg.runtime.dicom_images import SeriesIdentity, ct_datasets
from litseg.runtime.volume import Volume

from ..data.lits_tumor import LITS_TUMOR, consecutive_runs
from ..data.real_slices import RealSlice

#: The reconstructed field of view every collection is given (mm across the whole slice).
FIELD_OF_VIEW_MM = 384.0
#: Slice thickness of a lone slice (MSD, IRCAD): a usual abdominal reconstruction.
SINGLE_SLICE_MM = 2.5
#: Head-to-foot extent of an adult liver, from which a lits-tumor volume's slice spacing is estimated.
LIVER_HEIGHT_MM = 160.0
#: Slice spacings scanners reconstruct; the estimate is snapped to the nearest (by ratio).
RECONSTRUCTION_MM = (0.625, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
#: Slice spacing of a volume without liver (nothing to estimate it from).
NO_LIVER_SLICE_MM = 1.0
#: lits-tumor holds every second slice of each volume.
EXPORT_STEP = 2
#: Stored value = HU - this (RescaleIntercept = -1024), as most scanners store CT.
STORED_OFFSET_HU = -1024
SERIES_MODES = ("runs", "volume")


@dataclass(frozen=True, eq=False)
class ShippedSeries:
    """One series to segment: its slices in z order and the LPS affine of their stack.

    Attributes
    ----------
    key
        Unique name, e.g. ``lits-10:300-340`` (patient, first and last slice index).
    slices
        The slices, z rising.
    affine_lps
        4x4 affine of the stack ``(k, row, column)``: spacing and origin chosen by this module.
    """

    key: str
    slices: tuple[RealSlice, ...]
    affine_lps: npt.NDArray[np.float64]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """``(column, row, slice)`` spacing in mm."""
        norms = np.linalg.norm(self.affine_lps[:3, :3], axis=0)
        return float(norms[0]), float(norms[1]), float(norms[2])

    def hu_volume(self) -> Volume:
        """The slices' HU stacked on the series' geometry (float32)."""
        return Volume(np.stack([s.hu for s in self.slices]).astype(np.float32), self.affine_lps)


def pixel_spacing_mm(columns: int) -> float:
    """In-plane spacing (mm) of a slice ``columns`` wide: the field of view over the width."""
    return FIELD_OF_VIEW_MM / columns


def snap_reconstruction_mm(value_mm: float) -> float:
    """The usual reconstruction increment nearest to ``value_mm`` (by ratio)."""
    return min(RECONSTRUCTION_MM, key=lambda r: abs(math.log(r / value_mm)))


def lits_slice_spacing_mm(volume_slices: Sequence[RealSlice]) -> float:
    """The estimated original slice spacing ``t`` (mm) of one lits-tumor volume, from its liver's extent."""
    with_liver = [s.slice_index for s in volume_slices if s.liver.any()]
    if not with_liver:
        return NO_LIVER_SLICE_MM
    span = max(with_liver) - min(with_liver) + EXPORT_STEP  # the exported slices sample every second one
    return snap_reconstruction_mm(LIVER_HEIGHT_MM / span)


def _affine(shape_yx: tuple[int, int], spacing_z_mm: float, z0_mm: float) -> npt.NDArray[np.float64]:
    """Canonical axial affine, the field centred on the table axis (x = y = 0)."""
    rows, columns = shape_yx
    pixel = pixel_spacing_mm(columns)
    affine = np.diag([pixel, pixel, spacing_z_mm, 1.0])
    affine[:3, 3] = [-(columns - 1) * pixel / 2, -(rows - 1) * pixel / 2, z0_mm]
    return affine


def plan_series(
    slices: Sequence[RealSlice], mode: str = "runs", lits_slice_mm: float | None = None
) -> list[ShippedSeries]:
    """The series to segment for a set of slices of one collection.

    Parameters
    ----------
    slices
        Loaded real slices (any sources).
    mode
        ``"runs"``: a lits-tumor volume as its runs of neighbouring slices; ``"volume"``: all its slices in
        one series, gaps closed. Other collections: one series per slice either way.
    lits_slice_mm
        The original slice spacing ``t`` of every lits-tumor volume; ``None`` estimates it per volume.
    """
    if mode not in SERIES_MODES:
        raise ValueError(f"mode must be one of {SERIES_MODES}; got {mode!r}")
    if lits_slice_mm is not None and not lits_slice_mm > 0:
        raise ValueError(f"lits_slice_mm must be > 0 mm; got {lits_slice_mm}")
    by_volume: dict[str, list[RealSlice]] = defaultdict(list)
    out: list[ShippedSeries] = []
    for s in slices:
        if s.source == LITS_TUMOR:
            by_volume[s.patient].append(s)
        else:
            key = f"{s.patient}:{s.name}"
            out.append(ShippedSeries(key, (s,), _affine(s.hu.shape, SINGLE_SLICE_MM, 0.0)))
    for patient, members in by_volume.items():
        t = lits_slice_mm if lits_slice_mm is not None else lits_slice_spacing_mm(members)
        step = EXPORT_STEP * t
        groups = consecutive_runs(members, EXPORT_STEP) if mode == "runs" else [sorted(members, key=_index)]
        for group in groups:
            first = group[0]
            # runs keep their true positions (S * t); a stacked volume closes its gaps (k * 2t)
            z0 = first.slice_index * t if mode == "runs" else 0.0
            key = f"{patient}:{first.slice_index}-{group[-1].slice_index}"
            out.append(ShippedSeries(key, tuple(group), _affine(first.hu.shape, step, z0)))
    return out


def _index(s: RealSlice) -> int:
    return s.slice_index


def series_datasets(series: ShippedSeries) -> list[Dataset]:
    """CT Image Storage datasets of the series (one per slice), pixels stored as a scanner stores them.

    The identity is derived from the key (no patient data: the collections carry none), so re-runs write
    the same UIDs.
    """
    datasets = ct_datasets(series.hu_volume(), SeriesIdentity.derived(f"LITSEG-EVAL-{series.key}"))
    for ds in datasets:
        hu = np.frombuffer(ds.PixelData, dtype=np.int16).astype(np.int32)
        stored = np.clip(hu - STORED_OFFSET_HU, 0, np.iinfo(np.uint16).max).astype(np.uint16)
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = str(STORED_OFFSET_HU)
        ds.RescaleSlope = "1"
        ds.PixelData = stored.tobytes()
    return datasets
