"""What an input is: a DICOM series or a NIfTI volume, read by its own reader into the same
:class:`~litseg.runtime.volume.Volume`; only the outputs that reference DICOM instances tell them apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import UsageError
from .nifti_series import NiftiSeries, is_nifti_path, nifti_name, read_nifti_series
from .series import DicomSeries, SeriesSource, read_series

#: A NIfTI input has no DICOM instances to reference: its outputs are the label map on its own grid, the
#: report and the overlay.
NIFTI_FORMATS: tuple[str, ...] = ("nifti", "json", "overlay")
#: Outputs that reference the source DICOM instances, refused for a NIfTI input.
DICOM_ONLY_FORMATS: tuple[str, ...] = ("seg", "mask-dicom")

InputSeries = DicomSeries | NiftiSeries


def is_nifti_input(source: object) -> bool:
    """Whether ``source`` is a NIfTI volume (a ``.nii``/``.nii.gz`` file, or one already read)."""
    return isinstance(source, NiftiSeries) or is_nifti_path(source)


def refuse_dicom_only(source: object, formats: Sequence[str]) -> None:
    """Refuse SEG and mask DICOM for a NIfTI input, before any work.

    Raises
    ------
    UsageError
        ``formats`` holds a DICOM-only format and ``source`` is NIfTI.
    """
    refused = [f for f in formats if f in DICOM_ONLY_FORMATS]
    if refused and is_nifti_input(source):
        raise UsageError(
            f"format(s) {','.join(refused)} need a DICOM input (they reference its instances) and the input is "
            f"NIfTI; choose among {','.join(NIFTI_FORMATS)}"
        )


def output_name(series: InputSeries) -> str:
    """The default name of a series' output folder: its SeriesInstanceUID, or a NIfTI file's name."""
    if isinstance(series, NiftiSeries):
        return nifti_name(series.source_file)
    return series.series_instance_uid


def read_input(source: SeriesSource, series_uid: str | None = None, allow_thin: bool = False) -> InputSeries:
    """Read a DICOM series (folder, files, datasets) or a NIfTI volume (a ``.nii``/``.nii.gz`` file)."""
    if is_nifti_path(source):
        assert isinstance(source, str | Path)  # is_nifti_path says so
        return read_nifti_series(source, allow_thin)
    return read_series(source, series_uid, allow_thin)
