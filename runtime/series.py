"""Reading a CT image series from DICOM files into a :class:`~litseg.runtime.volume.Volume`.

What is read: a folder (recursively), a list of files, or in-memory pydicom datasets. Non-DICOM files,
DICOMDIRs, localizers/scouts, dose reports, secondary captures and other non-CT objects are skipped.
The CT image series is chosen by SeriesInstanceUID (several candidates without a choice is an error).
Slices are sorted by ImagePositionPatient projected on the slice normal (never by InstanceNumber or file
name) and their spacing comes from those positions, not from SliceThickness. Anything that would give a
silently wrong volume (gaps, duplicates, mixed orientation or size, gantry tilt) is refused with an
:class:`~litseg.runtime.errors.InputError`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .errors import InputError
from .volume import Volume

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Lowest physical CT value; stored values below it are padding outside the scan field of view
#: (-2048 and -3024 are common vendor choices) and are read as air.
AIR_HU = -1024.0
#: Relative tolerance on slice spacing before a series counts as having gaps or uneven spacing.
SPACING_TOLERANCE = 0.05
#: Tolerance (mm) on in-plane drift between consecutive slice positions (gantry tilt / shear).
SHEAR_TOLERANCE_MM = 0.05

SeriesSource = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Sequence[Dataset]


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """A CT series as read: HU volume (float32) plus the per-slice headers, pixel data removed.

    ``headers[k]`` describes ``volume.array[k]``; the headers carry what writers need to reference the
    source (patient, study, SOP instances).
    """

    volume: Volume
    headers: tuple[Dataset, ...]

    @property
    def series_instance_uid(self) -> str:
        return str(self.headers[0].SeriesInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.headers[0].StudyInstanceUID)

    @property
    def description(self) -> str:
        return str(self.headers[0].get("SeriesDescription", ""))


@dataclass(frozen=True)
class _Candidate:
    dataset: Dataset
    origin: str  # file path or "<dataset n>", for messages


def _iter_files(source: SeriesSource) -> Iterable[_Candidate]:
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.exists():
            raise InputError(f"input not found: {root}; pass a folder of DICOM files or a DICOM file")
        paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        yield from _read_paths(paths)
        return
    items = list(source)
    datasets = [item for item in items if isinstance(item, Dataset)]
    if items and len(datasets) == len(items):
        for n, ds in enumerate(datasets):
            yield _Candidate(ds, f"<dataset {n}>")
        return
    if datasets:
        raise InputError("pass either file paths or pydicom datasets, not a mix of both")
    yield from _read_paths([Path(p) for p in items if not isinstance(p, Dataset)])


def _read_paths(paths: Sequence[Path]) -> Iterable[_Candidate]:
    for path in paths:
        try:
            # defer_size: pixel data is only read for the series we keep.
            ds = pydicom.dcmread(path, defer_size="64 KB")
        except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
            log.debug("skipping %s: not readable as DICOM (%s)", path, exc)
            continue
        yield _Candidate(ds, str(path))


def _skip_reason(ds: Dataset) -> str | None:
    sop_class = str(ds.get("SOPClassUID", getattr(ds.get("file_meta", None), "MediaStorageSOPClassUID", "")))
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return "DICOMDIR"
    if sop_class == ENHANCED_CT_IMAGE_STORAGE:
        return "Enhanced CT (multi-frame) is not supported yet"
    if sop_class != CT_IMAGE_STORAGE:
        return f"not a CT image (SOP Class {sop_class or 'missing'})"
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if "LOCALIZER" in image_type:
        return "localizer/scout"
    if "PixelData" not in ds:
        return "no pixel data"
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SeriesInstanceUID"):
        if keyword not in ds:
            return f"missing {keyword}"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return "multi-frame image"
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return "not a greyscale image"
    return None


def _choose_series(candidates: Iterable[_Candidate], series_uid: str | None) -> list[_Candidate]:
    by_series: dict[str, list[_Candidate]] = defaultdict(list)
    skipped: Counter[str] = Counter()
    for cand in candidates:
        reason = _skip_reason(cand.dataset)
        if reason is None:
            by_series[str(cand.dataset.SeriesInstanceUID)].append(cand)
        else:
            skipped[reason] += 1
            log.debug("skipping %s: %s", cand.origin, reason)
    if skipped:
        log.info("skipped %d object(s): %s", sum(skipped.values()), dict(skipped))
    if series_uid is not None:
        if series_uid not in by_series:
            raise InputError(
                f"series {series_uid!r} is not among the CT image series found; found: {_describe(by_series) or 'none'}"
            )
        return by_series[series_uid]
    if not by_series:
        found = ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "no DICOM files"
        raise InputError(f"no CT image series found in the input (seen: {found}); pass a CT series folder")
    if len(by_series) > 1:
        raise InputError(
            f"the input holds {len(by_series)} CT image series: {_describe(by_series)}; "
            "choose one with --series-uid (API: series_uid=...)"
        )
    return next(iter(by_series.values()))


def _describe(by_series: dict[str, list[_Candidate]]) -> str:
    parts = []
    for uid, cands in by_series.items():
        desc = str(cands[0].dataset.get("SeriesDescription", "")) or "no description"
        parts.append(f"{uid} ({desc!r}, {len(cands)} slices)")
    return "; ".join(parts)


def _check_uniform(cands: list[_Candidate], keyword: str, convert: Callable[[Any], object]) -> None:
    values = Counter(convert(c.dataset.get(keyword)) for c in cands)
    if len(values) > 1:
        raise InputError(
            f"the series mixes {keyword} values {dict(values)}; litseg needs one {keyword} per series "
            "(split the series or pass the matching files only)"
        )


def _orientation(cands: list[_Candidate]) -> npt.NDArray[np.float64]:
    iops = np.array([[float(v) for v in c.dataset.ImageOrientationPatient] for c in cands])
    if np.abs(iops - iops[0]).max() > 1e-4:
        raise InputError(
            "the series mixes slice orientations (ImageOrientationPatient differs between files); "
            "litseg needs one orientation per series"
        )
    iop = iops[0]
    row_dir, col_dir = iop[:3], iop[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(float(row_dir @ col_dir)) > 1e-3
    ):
        raise InputError(f"ImageOrientationPatient {iop.tolist()} is not two orthonormal vectors")
    return np.asarray(iop, dtype=np.float64)


def _sort_and_space(
    cands: list[_Candidate], iop: npt.NDArray[np.float64]
) -> tuple[list[_Candidate], npt.NDArray[np.float64]]:
    """Sort slices along the normal; return them and the slice step vector (LPS mm)."""
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([[float(v) for v in c.dataset.ImagePositionPatient] for c in cands])
    order = np.argsort(positions @ normal, kind="stable")
    cands = [cands[i] for i in order]
    positions = positions[order]
    if len(cands) == 1:
        thickness = float(cands[0].dataset.get("SliceThickness", 0) or 0) or 1.0
        # One slice has no neighbour to measure spacing from: SliceThickness is all there is.
        return cands, normal * thickness
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    if along.min() < 1e-3:
        k = int(np.argmin(along))
        raise InputError(
            f"duplicate slice position {positions[k].round(3).tolist()} (files {cands[k].origin} and "
            f"{cands[k + 1].origin}); the input mixes acquisitions or holds copies: pass one series"
        )
    spacing = float(np.median(along))
    off = np.abs(along - spacing) > SPACING_TOLERANCE * spacing
    if off.any():
        k = int(np.argmax(off))
        raise InputError(
            f"uneven slice spacing: {along[k]:.3f} mm between slice positions "
            f"{positions[k].round(2).tolist()} and {positions[k + 1].round(2).tolist()} where the series "
            f"spacing is {spacing:.3f} mm (a missing slice?); pass a complete series"
        )
    in_plane = steps - np.outer(along, normal)
    if np.linalg.norm(in_plane, axis=1).max() > SHEAR_TOLERANCE_MM:
        raise InputError(
            "slice positions drift in-plane from slice to slice (gantry tilt or a sheared series, "
            f"up to {np.linalg.norm(in_plane, axis=1).max():.2f} mm per slice); litseg does not resample "
            "tilted acquisitions: pass a tilt-corrected reconstruction"
        )
    step = (positions[-1] - positions[0]) / (len(cands) - 1)
    return cands, step


def _hu_slice(ds: Dataset) -> npt.NDArray[np.float32]:
    raw = ds.pixel_array  # pydicom applies PixelRepresentation (signed/unsigned) and BitsStored
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    hu = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    padding = ds.get("PixelPaddingValue")
    if padding is not None:
        # PixelPaddingValue is a stored value, not HU (PS3.3 C.7.5.1.1.2).
        hu[raw == int(padding)] = AIR_HU
    np.maximum(hu, np.float32(AIR_HU), out=hu)
    return hu


def _header_only(ds: Dataset) -> Dataset:
    """A copy of the header without pixel data (the caller's dataset is never modified)."""
    header = Dataset()
    for elem in ds:
        if elem.tag != 0x7FE00010:  # PixelData
            header.add(elem)
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    if "SpecificCharacterSet" in header and not header.SpecificCharacterSet:
        # An empty value (seen in GE files) means the default repertoire; writers reject ''.
        del header.SpecificCharacterSet
    return header


def read_series(source: SeriesSource, series_uid: str | None = None) -> DicomSeries:
    """Read one CT image series.

    Parameters
    ----------
    source
        A folder (searched recursively), a file, a list of files, or a list of pydicom datasets.
    series_uid
        SeriesInstanceUID to pick when the input holds several CT series.

    Returns
    -------
    DicomSeries
        ``volume.array`` is float32 HU, shape ``(slices, rows, columns)``, sorted along the slice
        normal; its affine maps (column, row, slice) indices to LPS mm.

    Raises
    ------
    InputError
        No CT series, several without a choice, or a series that cannot form a regular volume.
    """
    cands = _choose_series(_iter_files(source), series_uid)
    _check_uniform(cands, "Rows", int)
    _check_uniform(cands, "Columns", int)
    _check_uniform(cands, "PixelSpacing", lambda v: tuple(round(float(x), 4) for x in v))
    _check_uniform(cands, "FrameOfReferenceUID", str)
    iop = _orientation(cands)
    cands, step = _sort_and_space(cands, iop)
    first = cands[0].dataset
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_spacing  # along a row: increasing column index
    affine[:3, 1] = iop[3:] * row_spacing  # down a column: increasing row index
    affine[:3, 2] = step
    affine[:3, 3] = [float(v) for v in first.ImagePositionPatient]
    array = np.empty((len(cands), int(first.Rows), int(first.Columns)), dtype=np.float32)
    for k, cand in enumerate(cands):
        try:
            array[k] = _hu_slice(cand.dataset)
        except Exception as exc:  # pydicom raises many types for undecodable pixel data
            raise InputError(
                f"cannot decode the pixels of {cand.origin} (transfer syntax "
                f"{getattr(cand.dataset.get('file_meta'), 'TransferSyntaxUID', 'unknown')}): {exc}; "
                "install the pydicom pixel-data plugin it names, or send uncompressed images"
            ) from exc
    headers = tuple(_header_only(c.dataset) for c in cands)
    volume = Volume(
        array,
        affine,
        str(first.get("FrameOfReferenceUID", "")),
        tuple(str(h.SOPInstanceUID) for h in headers),
    )
    log.info("read series: %d slices of %dx%d, spacing %s mm", *array.shape, np.round(volume.spacing_mm, 3))
    return DicomSeries(volume, headers)
