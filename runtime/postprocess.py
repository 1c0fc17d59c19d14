"""Label clean-up and the measurements that go into the report.

A run calls :func:`postprocess_labels`, which does every step inside the labels' bounding box, in place.
:func:`clean_labels`, :func:`drop_small_tumors` and :func:`grow_tumors` are the same steps one at a time on a
whole volume: the API for a caller that wants one step, and the reference the box-wise version is tested
against (tests/runtime/test_model_postprocess.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import kernels
from .volume import Volume

LIVER = 1
TUMOR = 2


def _keep_only(labels: npt.NDArray[np.uint8], largest_component: bool) -> None:
    """:func:`clean_labels` in place (``labels`` may be a view)."""
    organ = kernels.find_components(labels, (LIVER, 255), LIVER)
    if organ.count == 0:
        return
    keep = organ.hits > 0
    keep[0] = False
    if largest_component and keep.any():
        best = int(np.argmax(np.where(keep, organ.sizes, -1)))
        keep[:] = False
        keep[best] = True
    if keep[1:].all():
        return
    kernels.relabel_components(labels, organ, np.where(keep, np.uint8(255), np.uint8(0)))


def clean_labels(labels: npt.NDArray[np.uint8], largest_component: bool = True) -> npt.NDArray[np.uint8]:
    """Keep tumor only inside the liver and, optionally, only the largest liver component.

    The organ is liver plus tumor (a tumor is part of the liver). Organ components without any liver
    voxel (tumor floating outside the liver) are removed; with ``largest_component`` only the largest
    organ component is kept (6-connectivity). Returns a new uint8 array.
    """
    out = np.array(labels, dtype=np.uint8, order="C")
    _keep_only(out, largest_component)
    return out


def _drop_small(labels: npt.NDArray[np.uint8], min_voxels: int) -> None:
    """:func:`drop_small_tumors` in place (``labels`` may be a view)."""
    if min_voxels <= 0:
        return
    tumors = kernels.find_components(labels, (TUMOR, TUMOR), TUMOR)
    small = tumors.sizes < min_voxels
    small[0] = False
    if small.any():
        kernels.relabel_components(labels, tumors, np.where(small, np.uint8(LIVER), np.uint8(255)))


def drop_small_tumors(labels: npt.NDArray[np.uint8], min_voxels: int) -> npt.NDArray[np.uint8]:
    """Relabel tumor components (6-connected) of fewer than ``min_voxels`` voxels as liver.

    A false positive filter: small isolated tumor predictions are mostly noise for a 2-D model at
    256 x 256. They stay part of the organ. ``min_voxels <= 0`` returns the labels unchanged.
    """
    if min_voxels <= 0:
        return np.ascontiguousarray(labels, dtype=np.uint8)
    out = np.array(labels, dtype=np.uint8, order="C")
    _drop_small(out, min_voxels)
    return out


def grow_tumors(labels: Volume, margin_mm: float) -> Volume:
    """Relabel liver voxels within ``margin_mm`` of a tumor voxel, in-plane, as tumor.

    A boundary calibration for models that draw lesions systematically smaller than their reference
    (a 2-D network at 256 x 256 calls a lesion's enhancing rim and its partial-volume border liver). The
    margin is chosen on validation data and travels in the model metadata (``litseg.postprocess``);
    growth never leaves the organ. ``margin_mm <= 0`` returns the labels unchanged.
    """
    if margin_mm <= 0:
        return labels
    array = np.ascontiguousarray(labels.array, dtype=np.uint8)
    return labels.with_array(kernels.grow_label(array, TUMOR, LIVER, margin_mm, _spacing_yx(labels)))


def _spacing_yx(labels: Volume) -> tuple[float, float]:
    spacing_x, spacing_y, _ = labels.spacing_mm
    return spacing_y, spacing_x


@dataclass(frozen=True)
class Measurements:
    """Volumes in millilitres, computed on the native grid.

    The liver is the whole organ, tumours included (label 1 or 2), as in the SEG's "Liver" segment and the
    plausibility checks; the parenchyma is the liver without its tumours (label 1).
    """

    parenchyma_volume_ml: float
    tumor_count: int
    tumor_volume_ml: float

    @property
    def liver_volume_ml(self) -> float:
        """The whole liver: parenchyma plus tumours."""
        return self.parenchyma_volume_ml + self.tumor_volume_ml

    @property
    def tumor_burden_percent(self) -> float:
        """Tumor volume as a percentage of the whole liver."""
        total = self.liver_volume_ml
        return 100.0 * self.tumor_volume_ml / total if total > 0 else 0.0


def foreground_box(array: npt.NDArray[np.uint8]) -> tuple[slice, slice, slice] | None:
    """The smallest box (z, y, x slices) holding every nonzero voxel; None when there is none."""
    slices = np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1))
    if slices.size == 0:
        return None
    block = array[slices[0] : slices[-1] + 1]
    rows = np.flatnonzero(block.any(axis=(0, 2)))
    cols = np.flatnonzero(block.any(axis=(0, 1)))
    return (
        slice(int(slices[0]), int(slices[-1]) + 1),
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(cols[0]), int(cols[-1]) + 1),
    )


def postprocess_labels(
    labels: Volume,
    largest_component: bool,
    min_tumor_voxels: int,
    tumor_margin_mm: float,
    out: npt.NDArray[np.uint8] | None = None,
) -> Volume:
    """Clean-up, small-tumor filter and tumor margin, computed inside the labels' bounding box only.

    None of the three steps can label a voxel outside the organ the model found, so working on the box
    (a few percent of an abdominal CT) gives the same labels as the whole volume, in a fraction of the time.
    ``out``, the writable uint8 array that ``labels`` views (a caller that gives its labels up), is changed
    in place: the steps need two slices of component labels and one slice of copy, nothing volume-sized.
    Without it the result is a new array.
    """
    array = np.asarray(labels.array, dtype=np.uint8)
    if out is None:
        out = np.array(array, order="C")
    elif (out.dtype, out.shape, out.strides, out.ctypes.data) != (
        array.dtype,
        array.shape,
        array.strides,
        array.ctypes.data,
    ) or not out.flags.writeable:
        raise ValueError("out must be the writable uint8 array that labels views")
    box = foreground_box(out)
    if box is None:
        return labels.with_array(out)
    inner = out[box]  # a view: every step below changes it in place
    _keep_only(inner, largest_component)
    _drop_small(inner, min_tumor_voxels)
    if tumor_margin_mm > 0:
        kernels.grow_label(inner, TUMOR, LIVER, tumor_margin_mm, _spacing_yx(labels), in_place=True)
    return labels.with_array(out)


def measure(labels: Volume) -> Measurements:
    """Parenchyma volume (liver without tumour), number of tumors (6-connected) and tumor volume.

    Counted inside the labels' bounding box, with two slices of component labels (not a volume of int32).
    """
    array = np.asarray(labels.array)
    voxel_ml = labels.voxel_volume_ml
    box = foreground_box(np.asarray(array, dtype=np.uint8))
    if box is None:
        return Measurements(0.0, 0, 0.0)
    inner = array[box]
    tumor_count = kernels.find_components(np.asarray(inner, dtype=np.uint8), (TUMOR, TUMOR), TUMOR).count
    return Measurements(
        parenchyma_volume_ml=float(np.count_nonzero(inner == LIVER) * voxel_ml),
        tumor_count=tumor_count,
        tumor_volume_ml=float(np.count_nonzero(inner == TUMOR) * voxel_ml),
    )
