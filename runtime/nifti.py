"""NIfTI at the boundary: the only place where RAS meets our LPS volumes (through ``lps_to_ras``)."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

from .errors import InputError
from .volume import Volume, lps_to_ras

#: Bytes handed to zlib per call when writing ``.nii.gz``.
GZIP_CHUNK = 16 << 20


def write_nifti(volume: Volume, path: str | os.PathLike[str]) -> None:
    """Write a volume as NIfTI-1: data (x, y, z) = (column, row, slice), RAS affine, sform/qform scanner.

    The (z, y, x) C-ordered array transposed is the (x, y, z) Fortran-ordered array NIfTI stores: a view,
    written as it is, with no second copy of the volume. A ``.gz`` path is compressed at level 1 (nibabel's
    default) in 16 MB calls to zlib, which runs outside the GIL: nibabel hands its file one slice at a time,
    and straight into gzip each of those 432 small calls waited for the GIL beside the SEG being built on
    the other thread (several times as long as alone; docs/performance.md).
    """
    write_nifti_array(np.asarray(volume.array).transpose(2, 1, 0), lps_to_ras(volume.affine_lps), path)


def write_nifti_array(
    array_xyz: npt.NDArray[np.generic],
    affine_ras: npt.NDArray[np.float64],
    path: str | os.PathLike[str],
    form_codes: tuple[int, int] = (1, 1),
) -> None:
    """Write data in NIfTI's own axis order with its RAS affine in millimetres, as the qform and the sform with
    ``form_codes`` (qform code, sform code; 1 = scanner, 0 = that form absent); ``.gz`` paths compressed as
    :func:`write_nifti` describes."""
    qcode, scode = form_codes
    image = nib.Nifti1Image(array_xyz, affine_ras)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine_ras if scode else None, code=scode)
    image.set_qform(affine_ras if qcode else None, code=qcode)
    if not str(path).endswith(".gz"):
        nib.save(image, str(path))
        return
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as compressed,
        io.BufferedWriter(compressed, buffer_size=GZIP_CHUNK) as buffered,
    ):
        image.to_file_map({"image": nib.FileHolder(fileobj=buffered)})


def read_nifti(path: str | os.PathLike[str]) -> Volume:
    """Read a 3-D NIfTI file into a volume (array (z, y, x), LPS affine); data keep their stored dtype."""
    path = Path(path)
    try:
        image = nib.load(str(path))
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path} is a {type(image).__name__}, not NIfTI")
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(f"cannot read NIfTI file {path}: {exc}") from exc
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path} holds a {data.ndim}-D image (shape {data.shape}); litseg needs a 3-D volume")
    affine_lps = lps_to_ras(np.asarray(image.affine, dtype=np.float64))
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), affine_lps)
