"""The one core type: an immutable volume whose pixels and geometry travel together.

Index convention: ``array[k, j, i]`` (slice, row, column). The 4x4 ``affine_lps`` maps the voxel index
``(i, j, k, 1)`` to patient coordinates in millimetres in DICOM's LPS system (x to the patient's left,
y to posterior, z to superior). Spacing, origin and direction are derived from the affine, never
stored twice. RAS exists only at the NIfTI boundary, through :func:`lps_to_ras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: Converts an LPS affine to RAS (and back: the matrix is its own inverse).
LPS_TO_RAS: npt.NDArray[np.float64] = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return the RAS affine (NIfTI convention) for an LPS affine; the same matrix maps RAS to LPS."""
    return LPS_TO_RAS @ affine_lps


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image on a known patient geometry.

    Parameters
    ----------
    array
        Pixels, shape ``(z, y, x)`` = (slices, rows, columns). Made read-only on creation.
    affine_lps
        4x4 float64 matrix from voxel index ``(i, j, k, 1)`` (column, row, slice) to LPS millimetres.
    frame_of_reference_uid
        DICOM FrameOfReferenceUID the coordinates refer to ("" when unknown, e.g. from NIfTI).
    source_sop_uids
        SOP Instance UID of the source image for each slice, in slice order (empty when not from DICOM).
    """

    array: npt.NDArray[np.generic]
    affine_lps: npt.NDArray[np.float64]
    frame_of_reference_uid: str = ""
    source_sop_uids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3-D (z, y, x); got shape {self.array.shape}")
        affine = np.array(self.affine_lps, dtype=np.float64)
        if affine.shape != (4, 4) or not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError(f"Volume.affine_lps must be a 4x4 affine with last row 0 0 0 1; got {affine!r}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise ValueError(f"Volume.affine_lps is singular: {affine[:3, :3]!r}")
        if self.source_sop_uids and len(self.source_sop_uids) != self.array.shape[0]:
            raise ValueError(
                f"Volume.source_sop_uids has {len(self.source_sop_uids)} UIDs for "
                f"{self.array.shape[0]} slices; give one per slice or none"
            )
        affine.setflags(write=False)
        object.__setattr__(self, "affine_lps", affine)
        if self.array.flags.writeable:
            view = self.array.view()
            view.setflags(write=False)
            object.__setattr__(self, "array", view)

    # ----- derived geometry -------------------------------------------------------------------------
    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along (x, y, z) index axes = (column, row, slice), in millimetres."""
        norms = np.linalg.norm(self.affine_lps[:3, :3], axis=0)
        return float(norms[0]), float(norms[1]), float(norms[2])

    @property
    def origin_lps(self) -> npt.NDArray[np.float64]:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return np.array(self.affine_lps[:3, 3])

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """3x3 matrix whose columns are the unit LPS directions of the i, j, k index axes."""
        return np.array(self.affine_lps[:3, :3] / np.linalg.norm(self.affine_lps[:3, :3], axis=0))

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine_lps[:3, :3])) / 1000.0)

    def index_to_lps(self, ijk: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map voxel indices ``(..., 3)`` given as (i, j, k) = (column, row, slice) to LPS mm."""
        pts = np.asarray(ijk, dtype=np.float64)
        return np.asarray(pts @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3])

    def lps_to_index(self, xyz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map LPS points ``(..., 3)`` in mm to continuous voxel indices (i, j, k)."""
        pts = np.asarray(xyz, dtype=np.float64)
        inv = np.linalg.inv(self.affine_lps)
        return np.asarray(pts @ inv[:3, :3].T + inv[:3, 3])

    # ----- new volumes ------------------------------------------------------------------------------
    def with_array(self, array: npt.NDArray[np.generic]) -> Volume:
        """The same geometry with other pixels of the same shape (e.g. a label map)."""
        if array.shape != self.array.shape:
            raise ValueError(f"with_array needs shape {self.array.shape}; got {array.shape}")
        return Volume(array, self.affine_lps, self.frame_of_reference_uid, self.source_sop_uids)
