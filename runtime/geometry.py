"""Orientation: turning any axial volume into the canonical orientation the model sees, and back.

A :class:`Reorientation` is a transpose of rows and columns (applied first) followed by flips of the
slice, row and column axes. Applying it to a :class:`~litseg.runtime.volume.Volume` changes the array
and the affine together, so every voxel keeps its world position; the inverse undoes it exactly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import kernels
from .errors import InputError
from .volume import Volume

log = logging.getLogger(__name__)

#: Beyond this angle between the slice normal and the patient's z axis, a series is not axial.
MAX_AXIAL_TILT_DEG = 30.0
#: Obliquity worth a warning (the model sees a rotated abdomen).
WARN_OBLIQUE_DEG = 10.0


@dataclass(frozen=True)
class Reorientation:
    """Transpose rows/columns (if ``transpose``), then flip axes; ``flip_*`` name the output axes."""

    transpose: bool = False
    flip_z: bool = False
    flip_y: bool = False
    flip_x: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_z or self.flip_y or self.flip_x)

    @property
    def flags(self) -> tuple[bool, bool, bool, bool]:
        """``(transpose, flip_z, flip_y, flip_x)``, as the kernels take them."""
        return (self.transpose, self.flip_z, self.flip_y, self.flip_x)

    def canonical_shape(self, shape_zyx: tuple[int, int, int]) -> tuple[int, int, int]:
        """The shape of a ``shape_zyx`` array once reoriented."""
        nz, ny, nx = shape_zyx
        return (nz, nx, ny) if self.transpose else (nz, ny, nx)

    def inverse(self) -> Reorientation:
        """The reorientation that undoes this one (flips move to the other axis when transposed)."""
        if not self.transpose:
            return self
        return Reorientation(True, self.flip_z, flip_y=self.flip_x, flip_x=self.flip_y)

    def apply_array(self, array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """Reorient a ``(z, y, x)`` array into a new C-contiguous one (a strided numpy copy)."""
        return kernels.reorient(np.ascontiguousarray(array), self.transpose, self.flip_z, self.flip_y, self.flip_x)

    def apply_affine(
        self, affine_lps: npt.NDArray[np.float64], shape_zyx: tuple[int, int, int]
    ) -> npt.NDArray[np.float64]:
        """The affine of the reoriented array, given the affine and shape of the input array."""
        affine = np.array(affine_lps, dtype=np.float64)
        nz, ny, nx = shape_zyx
        if self.transpose:
            affine[:, [0, 1]] = affine[:, [1, 0]]
            ny, nx = nx, ny
        for flip, column, n in ((self.flip_x, 0, nx), (self.flip_y, 1, ny), (self.flip_z, 2, nz)):
            if flip:
                affine[:3, 3] += affine[:3, column] * (n - 1)
                affine[:3, column] *= -1.0
        return affine

    def apply(self, volume: Volume) -> Volume:
        """Reorient a volume: new array and affine, same world; slice UIDs follow their slices."""
        uids = tuple(reversed(volume.source_sop_uids)) if self.flip_z else volume.source_sop_uids
        return Volume(
            self.apply_array(volume.array),
            self.apply_affine(volume.affine_lps, volume.shape_zyx),
            volume.frame_of_reference_uid,
            uids,
        )


def canonical_reorientation(affine_lps: npt.NDArray[np.float64]) -> Reorientation:
    """The reorientation that makes columns run to +L, rows to +P and slices to +S.

    Raises
    ------
    InputError
        When the slices are not axial (sagittal, coronal or tilted beyond ``MAX_AXIAL_TILT_DEG``).
    """
    direction = affine_lps[:3, :3] / np.linalg.norm(affine_lps[:3, :3], axis=0)
    col_dir, row_dir, slice_dir = direction[:, 0], direction[:, 1], direction[:, 2]
    tilt = math.degrees(math.acos(min(1.0, abs(float(slice_dir[2])))))
    if tilt > MAX_AXIAL_TILT_DEG:
        raise InputError(
            f"the series is not axial: its slice normal {np.round(slice_dir, 3).tolist()} (LPS) is "
            f"{tilt:.0f} degrees from the patient's head-foot axis (limit {MAX_AXIAL_TILT_DEG:.0f}); "
            "litseg segments axial CT slices, so pass the axial reconstruction of this study"
        )
    if tilt > WARN_OBLIQUE_DEG:
        log.warning("oblique axial series: slices are %.0f degrees off the axial plane", tilt)
    transpose = abs(col_dir[1]) > abs(col_dir[0])
    if transpose:
        col_dir, row_dir = row_dir, col_dir
    return Reorientation(
        transpose=bool(transpose),
        flip_z=bool(slice_dir[2] < 0),
        flip_y=bool(row_dir[1] < 0),
        flip_x=bool(col_dir[0] < 0),
    )


def resampled_affine(
    affine_lps: npt.NDArray[np.float64], shape_yx: tuple[int, int], target_yx: tuple[int, int]
) -> npt.NDArray[np.float64]:
    """The affine of a volume whose slices were resampled in-plane from ``shape_yx`` to ``target_yx``.

    Pixel-centre convention: new pixel ``o`` sits at old index ``(o + 0.5) * n_in / n_out - 0.5``.
    """
    affine = np.array(affine_lps, dtype=np.float64)
    for column, n_in, n_out in ((0, shape_yx[1], target_yx[1]), (1, shape_yx[0], target_yx[0])):
        scale = n_in / n_out
        affine[:3, 3] += affine[:3, column] * (0.5 * scale - 0.5)
        affine[:3, column] *= scale
    return affine
