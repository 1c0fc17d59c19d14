"""Reading a CT volume from a NIfTI file (LiTS, Decathlon, TotalSegmentator layout) into the same
:class:`~litseg.runtime.volume.Volume` the DICOM reader gives, and writing labels back on its own grid.

The file's affine is carried exactly: its voxel axes may come in any order and sign. The axis that runs
closest to the patient's head-foot axis becomes the slice axis (``k``) and the other two keep their order
(``i``, ``j``); that is a permutation of the affine's columns, so no coordinate changes. The labels are
written back through the inverse permutation with the file's own affine: the same grid, the same affine.

Refused with an :class:`~litseg.runtime.errors.InputError` naming the reason, as the DICOM reader refuses:
a 4-D (or 2-D) image, non-scalar or non-finite data, no stored orientation (qform and sform codes 0), a
qform and sform that place the voxels more than a tenth of a voxel apart, spatial units other than
millimetres, a sheared grid (slices drifting in-plane: the NIfTI form of a gantry tilt), in-plane axes that
are not perpendicular, fewer than :data:`~litseg.runtime.series.MIN_SLICES` slices, and a volume whose values
do not look like CT in HU (nothing near air: an MR, a PET, a label map, or CT stored without its
``scl_slope``/``scl_inter``). A volume rotated off the axial plane is read as a DICOM series of the same
orientation is (up to 30 degrees, with a warning beyond 10: :mod:`~litseg.runtime.geometry`).
HU are the stored values times ``scl_slope`` plus ``scl_inter`` (int16 when exact, else float32).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from .errors import InputError
from .nifti import write_nifti_array
from .series import MIN_SLICES, SHEAR_TOLERANCE_MM
from .volume import Volume, lps_to_ras

log = logging.getLogger(__name__)

__all__ = ["NiftiSeries", "is_nifti_path", "nifti_name", "read_nifti_series", "write_nifti_labels"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: A CT volume holds air (about -1000 HU) outside the body or in the lungs and bowel; without any voxel below
#: this the values are not HU (MR, PET, a label map, or CT stored without its rescale).
MAX_AIR_HU = -500.0
#: qform and sform may place a voxel at most this many (smallest) voxel sizes apart: rounding, not geometry.
FORM_TOLERANCE_VOXELS = 0.1
#: In-plane axes of a DICOM series must be orthonormal to this (ImageOrientationPatient); the same here.
ORTHOGONALITY_TOLERANCE = 1e-3
_UNITS_OK = ("mm", "unknown")


@dataclass(frozen=True, eq=False)
class NiftiSeries:
    """A CT volume read from one NIfTI file: what the pipeline and the writers need from it.

    Attributes
    ----------
    volume
        HU, ``(slices, rows, columns)`` with the LPS affine (the file's axes permuted, see the module).
    source_file
        The file path (for messages and output-location checks; never written into outputs).
    file_axes
        ``file_axes[m]`` is the file's data axis that became volume axis ``m`` (0 = i, 1 = j, 2 = k).
    affine_ras
        The file's affine as nibabel read it (RAS mm): the labels are written with it.
    form_codes
        The file's qform and sform codes, given to the labels too (a form the file lacks stays absent).
    """

    volume: Volume
    source_file: str
    file_axes: tuple[int, int, int]
    affine_ras: npt.NDArray[np.float64]
    form_codes: tuple[int, int] = (1, 1)
    notes: tuple[str, ...] = ()
    generated_uids: Mapping[str, str] = field(default_factory=dict)

    # The DICOM identity a report carries: a NIfTI file has none.
    @property
    def series_instance_uid(self) -> str:
        return ""

    @property
    def study_instance_uid(self) -> str:
        return ""

    @property
    def source_files(self) -> tuple[str, ...]:
        return (self.source_file,)


def is_nifti_path(source: object) -> bool:
    """Whether ``source`` names a NIfTI file (``.nii`` or ``.nii.gz``, any case) that exists."""
    if not isinstance(source, str | os.PathLike):
        return False
    path = Path(source)
    return path.name.lower().endswith(NIFTI_SUFFIXES) and path.is_file()


def nifti_name(path: str | os.PathLike[str]) -> str:
    """The file name without ``.nii`` / ``.nii.gz`` (``volume-0.nii.gz`` -> ``volume-0``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _load(path: Path) -> Any:
    try:
        image = nib.load(str(path))
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(f"cannot read NIfTI file {path}: {exc}; pass an intact .nii or .nii.gz file") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path} is a {type(image).__name__}, not NIfTI; pass a .nii or .nii.gz CT volume")
    return image


def _form_gap(
    qform: npt.NDArray[np.float64], sform: npt.NDArray[np.float64], shape: tuple[int, ...]
) -> tuple[float, float]:
    """How far apart (mm) the two forms put the volume's corner voxels, and how far they may (a tenth of the
    smallest voxel: float32 storage and a quaternion's rounding stay far below; a flip or a shift does not)."""
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    gap = float(np.linalg.norm((corners @ (qform - sform).T)[:, :3], axis=1).max())
    spacing = float(np.linalg.norm(sform[:3, :3], axis=0).min())
    return gap, FORM_TOLERANCE_VOXELS * spacing


def _affine(image: Any, path: Path) -> npt.NDArray[np.float64]:
    """The file's RAS affine, refused where the file gives no orientation, two of them or no millimetres."""
    header = image.header
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 and scode == 0:
        raise InputError(
            f"{path} stores no orientation (qform_code and sform_code are 0), so left and right cannot be told; "
            "re-export it with its affine (e.g. nibabel, SimpleITK or dcm2niix)"
        )
    if qcode > 0 and scode > 0:
        gap, tolerance = _form_gap(header.get_qform(), header.get_sform(), image.shape[:3])
        if gap > tolerance:
            raise InputError(
                f"{path} holds a qform and an sform that place its voxels up to {gap:.3g} mm apart (tools differ "
                "on which one to believe, so the geometry is ambiguous); re-export it with one affine"
            )
    units = header.get_xyzt_units()[0]
    if units not in _UNITS_OK:
        raise InputError(f"{path} gives its coordinates in {units}; litseg needs millimetres: re-export it in mm")
    return np.asarray(image.affine, dtype=np.float64)


def _hu(image: Any, path: Path) -> npt.NDArray[np.int16 | np.float32]:
    """HU from the stored values and ``scl_slope``/``scl_inter``: int16 where exact, else float32."""
    raw = np.asanyarray(image.dataobj.get_unscaled()) if nib.is_proxy(image.dataobj) else np.asarray(image.dataobj)
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if raw.ndim != 3:
        raise InputError(
            f"{path} holds a {raw.ndim}-D image (shape {tuple(raw.shape)}); litseg segments one 3-D CT volume: "
            "split a 4-D series into its volumes and pass one"
        )
    if raw.dtype.kind not in "iuf":
        raise InputError(
            f"{path} stores {raw.dtype} voxels; a CT volume stores one number per voxel (integers or floats)"
        )
    # nibabel moves scl_slope/scl_inter from the header into the proxy on loading (1 and 0 where the file
    # asks for no scaling); the header then reads NaN.
    slope = float(getattr(image.dataobj, "slope", 1.0))
    inter = float(getattr(image.dataobj, "inter", 0.0))
    if raw.dtype == np.int16 and slope == 1.0 and inter == 0.0:  # HU stored as they are (LiTS): no copy here
        return np.asarray(raw)
    if raw.dtype.kind in "iu" and slope == 1.0 and inter == round(inter):
        wide = raw.astype(np.int32) + int(inter)
        lo, hi = int(wide.min()), int(wide.max())
        if lo >= -32768 and hi <= 32767:
            return wide.astype(np.int16)
    hu = raw.astype(np.float32)
    if slope != 1.0 or inter != 0.0:
        hu *= np.float32(slope)
        hu += np.float32(inter)
    bad = int(np.count_nonzero(~np.isfinite(hu)))
    if bad:
        raise InputError(f"{path} holds {bad} voxel(s) that are NaN or infinite; a CT volume has a number in every one")
    return hu


def _check_ct(hu: npt.NDArray[np.int16 | np.float32], path: Path) -> None:
    lo, hi = float(hu.min()), float(hu.max())
    if lo > MAX_AIR_HU:
        raise InputError(
            f"{path} does not look like CT in HU: its values run from {lo:g} to {hi:g}, with no voxel below "
            f"{MAX_AIR_HU:g} HU (air lies near -1000 HU); an MR, PET or label map cannot be segmented, and a CT "
            "stored without its rescale needs scl_slope/scl_inter set (e.g. scl_inter = -1024)"
        )


def _axes(affine_lps: npt.NDArray[np.float64]) -> tuple[int, int, int]:
    """File axes as (i, j, k): k the one closest to head-foot, i and j the other two in file order."""
    directions = affine_lps[:3, :3] / np.linalg.norm(affine_lps[:3, :3], axis=0)
    k = int(np.argmax(np.abs(directions[2])))
    i, j = (n for n in range(3) if n != k)
    return i, j, k


def _check_singular(affine: npt.NDArray[np.float64], path: Path) -> None:
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{path} has a singular affine {np.round(affine[:3, :3], 4).tolist()}; it maps no volume")


def _check_grid(affine_lps: npt.NDArray[np.float64], path: Path) -> None:
    """The checks the DICOM reader makes on a series, on the (i, j, k) affine: perpendicular in-plane axes, no
    in-plane drift from slice to slice."""
    columns = affine_lps[:3, :3]
    unit = columns / np.linalg.norm(columns, axis=0)
    cosine = float(unit[:, 0] @ unit[:, 1])
    if abs(cosine) > ORTHOGONALITY_TOLERANCE:
        raise InputError(
            f"{path} has in-plane axes that are not perpendicular (cosine {cosine:.4f}); litseg needs a "
            "rectilinear grid: resample it onto one"
        )
    normal = np.cross(unit[:, 0], unit[:, 1])
    step = columns[:, 2]
    drift = float(np.linalg.norm(step - (step @ normal) * normal))
    if drift > SHEAR_TOLERANCE_MM:
        raise InputError(
            f"{path} has slices that drift in-plane by {drift:.2f} mm per slice (a sheared grid, as from a "
            "gantry tilt); litseg does not resample tilted acquisitions: pass a tilt-corrected volume"
        )


def read_nifti_series(path: str | os.PathLike[str], allow_thin: bool = False) -> NiftiSeries:
    """Read a 3-D CT volume in HU from a NIfTI file.

    Parameters
    ----------
    path
        A ``.nii`` or ``.nii.gz`` file.
    allow_thin
        Accept fewer than :data:`~litseg.runtime.series.MIN_SLICES` slices.

    Returns
    -------
    NiftiSeries
        ``volume.array`` is HU (int16 when exact, else float32), shape ``(slices, rows, columns)``, the
        slice axis being the file axis closest to head-foot; the affine maps (i, j, k) to LPS mm.

    Raises
    ------
    InputError
        Unreadable file, or a volume refused for a reason the module docstring lists (named in the message).
    """
    path = Path(path)
    image = _load(path)
    affine_ras = _affine(image, path)
    file_lps = lps_to_ras(affine_ras)  # the same matrix maps RAS to LPS
    _check_singular(file_lps, path)
    axes = _axes(file_lps)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = file_lps[:3, list(axes)]
    affine_lps[:3, 3] = file_lps[:3, 3]
    _check_grid(affine_lps, path)  # before the voxels are read: the header alone can refuse the file
    hu = _hu(image, path)
    if hu.shape[axes[2]] < MIN_SLICES and not allow_thin:
        raise InputError(
            f"{path} has {hu.shape[axes[2]]} slice(s); litseg needs at least {MIN_SLICES} to measure volumes: pass "
            "the whole volume, or --allow-thin (API: allow_thin=True) to segment so few slices anyway"
        )
    _check_ct(hu, path)
    # (i, j, k) data in file order -> (k, j, i) array, one copy in C order
    array = np.ascontiguousarray(hu.transpose(axes[2], axes[1], axes[0]))
    notes = () if axes == (0, 1, 2) else (f"the file's voxel axes {axes} were read as (column, row, slice)",)
    log.info("read NIfTI volume: %d slices of %dx%d", *array.shape)
    codes = (int(image.header["qform_code"]), int(image.header["sform_code"]))
    return NiftiSeries(Volume(array, affine_lps), str(path), axes, affine_ras, codes, notes)


def write_nifti_labels(labels: Volume, series: NiftiSeries, path: str | os.PathLike[str]) -> None:
    """Write ``labels`` (on ``series.volume``'s grid) as NIfTI with the input file's axis order and affine."""
    if labels.shape_zyx != series.volume.shape_zyx or not np.array_equal(labels.affine_lps, series.volume.affine_lps):
        raise ValueError("labels must be on the NIfTI input's own grid to be written back onto it")
    order = np.argsort(series.file_axes)  # file axis n holds volume axis order[n]
    ijk = np.asarray(labels.array).transpose(2, 1, 0)
    data = ijk.transpose(*(int(m) for m in order))
    affine_lps = np.eye(4)
    affine_lps[:3, list(series.file_axes)] = labels.affine_lps[:3, :3]
    affine_lps[:3, 3] = labels.affine_lps[:3, 3]
    assert np.array_equal(lps_to_ras(affine_lps), series.affine_ras), "axis permutation must be exact"
    write_nifti_array(data, series.affine_ras, path, series.form_codes)
