"""Reading a CT image series from DICOM files into a :class:`~litseg.runtime.volume.Volume`.

What is read: a folder (recursively), one file (then the whole series it belongs to, from its folder),
a list of files, or in-memory pydicom datasets. Non-CT objects (DICOMDIR, localizers, dose reports, SEG,
SR, MR, ...) are skipped (:mod:`~litseg.runtime.series_files`). The CT image series is chosen by
SeriesInstanceUID; de-identified files whose SeriesInstanceUID was blanked form one series per frame of
reference, orientation and image size. Slices are sorted by ImagePositionPatient projected on the slice
normal (never by InstanceNumber or file name) and their spacing comes from those positions, not from
SliceThickness. Anything that would give a silently wrong volume is refused with an
:class:`~litseg.runtime.errors.InputError` naming the file: gaps, duplicates, mixed orientation or size,
gantry tilt, a slice without pixel data or with a truncated header, pixels that cannot be decoded, and
(unless asked for) series of fewer than :data:`MIN_SLICES` slices.

De-identified headers never stop a run: the writers need Study, Series and Frame of Reference UIDs and
the Type 2 patient and study attributes, so missing UIDs are generated once per series (deterministically,
from the slices' SOP Instance UIDs, so a re-run gives the same ones) and listed in
:attr:`DicomSeries.generated_uids`, and missing Type 2 attributes are written empty.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from . import pixel_decoders
from .errors import InputError
from .hu import AIR_HU
from .series_files import (
    CT_IMAGE_STORAGE,
    PIXEL_DATA_TAG,
    Candidate,
    SeriesSource,
    iter_candidates,
    list_files,
    read_file,
)
from .series_pixels import decode_volume
from .volume import Volume

log = logging.getLogger(__name__)

__all__ = ["AIR_HU", "CT_IMAGE_STORAGE", "MIN_SLICES", "DicomSeries", "SeriesSource", "read_series"]

#: Relative tolerance on slice spacing before a series counts as having gaps or uneven spacing.
SPACING_TOLERANCE = 0.05
#: Tolerance (mm) on in-plane drift between consecutive slice positions (gantry tilt / shear).
SHEAR_TOLERANCE_MM = 0.05
#: Fewer slices than this are refused unless ``allow_thin``: one or two slices are usually a file picked by
#: mistake, and give volumes (mL) that depend on SliceThickness rather than on measured positions.
MIN_SLICES = 3
#: Patient and General Study attributes of Type 2 (present, possibly empty) that the SEG copies from its
#: source (PS3.3 C.7.1.1, C.7.2.1); anonymisers often drop them.
TYPE2_SOURCE_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
GENERATED_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """A CT series as read: HU volume (int16 where exact, else float32) plus the per-slice headers, pixel data
    removed.

    ``headers[k]`` describes ``volume.array[k]``; the headers carry what writers need to reference the
    source (patient, study, SOP instances), completed where the files lacked it.

    Attributes
    ----------
    generated_uids
        UIDs litseg had to generate because every file lacked them (keyword -> UID), for the report.
    notes
        Things the reader decided that a user should know (e.g. a single file stood for its series).
    source_files
        Where each slice came from (file paths, or ``<dataset n>``), in slice order.
    """

    volume: Volume
    headers: tuple[Dataset, ...]
    generated_uids: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    source_files: tuple[str, ...] = ()

    @property
    def series_instance_uid(self) -> str:
        return str(self.headers[0].SeriesInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.headers[0].StudyInstanceUID)

    @property
    def description(self) -> str:
        return str(self.headers[0].get("SeriesDescription", ""))


def _series_key(cand: Candidate) -> str:
    """The series a slice belongs to: its SeriesInstanceUID, or for blanked ones a description of the
    frame of reference, size and orientation that hold such slices together."""
    if cand.series_uid:
        return cand.series_uid
    ds = cand.dataset
    iop = "\\".join(f"{float(v):.3f}" for v in ds.get("ImageOrientationPatient", []) or [])
    frame = str(ds.get("FrameOfReferenceUID", "") or "").strip() or "none"
    return f"<no SeriesInstanceUID: frame of reference {frame}, {ds.get('Rows')}x{ds.get('Columns')}, {iop or '?'}>"


def _describe(by_series: Mapping[str, list[Candidate]]) -> str:
    parts = []
    for key, cands in by_series.items():
        desc = str(cands[0].dataset.get("SeriesDescription", "")) or "no description"
        parts.append(f"{key} ({desc!r}, {len(cands)} slices)")
    return "; ".join(parts)


def _refuse_problem(problems: list[Candidate], where: str) -> None:
    first = problems[0]
    more = f" (and {len(problems) - 1} more such file(s))" if len(problems) > 1 else ""
    raise InputError(
        f"{first.origin} {first.problem}{more}; it belongs to {where}: litseg refuses rather than segment an "
        "incomplete series; re-export the series from the archive, or remove that file"
    )


def _choose_series(candidates: Iterable[Candidate], series_uid: str | None) -> list[Candidate]:
    by_series: dict[str, list[Candidate]] = defaultdict(list)
    problems: dict[str, list[Candidate]] = defaultdict(list)
    orphans: list[Candidate] = []  # unusable CT images whose series cannot be told
    skipped: Counter[str] = Counter()
    for cand in candidates:
        if cand.skip is not None:
            skipped[cand.skip] += 1
            log.debug("skipping %s: %s", cand.origin, cand.skip)
        elif cand.problem is not None:
            (problems[cand.series_uid] if cand.series_uid else orphans).append(cand)
        else:
            by_series[_series_key(cand)].append(cand)
    if skipped:
        log.info("skipped %d object(s): %s", sum(skipped.values()), dict(skipped))
    if orphans:
        _refuse_problem(orphans, "the input (its series cannot be told)")
    if series_uid is not None:
        if series_uid not in by_series:
            if series_uid in problems:
                _refuse_problem(problems[series_uid], f"series {series_uid}")
            raise InputError(
                f"series {series_uid!r} is not among the CT image series found; found: {_describe(by_series) or 'none'}"
            )
        key = series_uid
    elif len(by_series) == 1:
        key = next(iter(by_series))
    elif not by_series:
        if problems:
            uid, cands = next(iter(problems.items()))
            _refuse_problem(cands, f"series {uid}")
        found = ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "no DICOM files"
        raise InputError(f"no CT image series found in the input (seen: {found}); pass a CT series folder")
    else:
        raise InputError(
            f"the input holds {len(by_series)} CT image series: {_describe(by_series)}; "
            "choose one with --series-uid (API: series_uid=...)"
        )
    if problems.get(key):
        _refuse_problem(problems[key], f"series {key}")
    return by_series[key]


def _check_uniform(cands: list[Candidate], keyword: str, convert: Callable[[Any], object]) -> None:
    values = Counter(convert(c.dataset.get(keyword)) for c in cands)
    if len(values) > 1:
        raise InputError(
            f"the series mixes {keyword} values {dict(values)}; litseg needs one {keyword} per series "
            "(split the series or pass the matching files only)"
        )


def _orientation(cands: list[Candidate]) -> npt.NDArray[np.float64]:
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
    cands: list[Candidate], iop: npt.NDArray[np.float64]
) -> tuple[list[Candidate], npt.NDArray[np.float64]]:
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
            f"{positions[k].round(2).tolist()} ({cands[k].origin}) and {positions[k + 1].round(2).tolist()} "
            f"({cands[k + 1].origin}) where the series spacing is {spacing:.3f} mm (a missing slice?); pass a "
            "complete series"
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


def _header_only(ds: Dataset) -> Dataset:
    """A copy of the header without pixel data (the caller's dataset is never modified)."""
    header = Dataset()
    for tag in sorted(ds.keys()):  # by tag: iterating elements would load the deferred pixel data
        if tag == PIXEL_DATA_TAG:
            continue
        elem = ds.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement) and (elem.value is not None or not elem.length):
            # Not yet parsed: an immutable tuple both datasets may hold, each converting it on first use
            # (parsing every element of every slice here cost milliseconds a slice, for nothing).
            header[tag] = elem
        else:  # parsed (own copy: completing the header must not touch the source) or deferred (read now)
            header.add(copy.copy(ds[tag]))
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    if "SpecificCharacterSet" in header and not header.SpecificCharacterSet:
        # An empty value (seen in GE files) means the default repertoire; writers reject ''.
        del header.SpecificCharacterSet
    return header


def _complete_headers(cands: list[Candidate]) -> tuple[tuple[Dataset, ...], dict[str, str]]:
    """Pixel-free header copies with what the writers need: SOP UIDs from the file meta, missing Study,
    Series and Frame of Reference UIDs generated once for the series, missing Type 2 attributes empty."""
    headers = [_header_only(c.dataset) for c in cands]
    for n, (header, cand) in enumerate(zip(headers, cands, strict=True)):
        header.SOPClassUID = cand.sop_class_uid or CT_IMAGE_STORAGE
        header.SOPInstanceUID = cand.sop_instance_uid or generate_uid(
            entropy_srcs=["litseg-sop", str(n), *(str(v) for v in header.ImagePositionPatient)]
        )
    # Entropy from every slice's SOP Instance UID: the same files always get the same generated UIDs.
    sop_uids = sorted(str(h.SOPInstanceUID) for h in headers)
    generated: dict[str, str] = {}
    for keyword in GENERATED_UID_KEYWORDS:
        present = {str(h.get(keyword, "") or "").strip() for h in headers} - {""}
        value = present.pop() if len(present) == 1 else ""
        if not value:
            value = generate_uid(entropy_srcs=["litseg", keyword, *sop_uids])
            generated[keyword] = value
        for header in headers:
            setattr(header, keyword, value)
    for header in headers:
        for keyword in TYPE2_SOURCE_ATTRIBUTES:
            if keyword not in header:
                setattr(header, keyword, "")
    if generated:
        log.warning("the series lacks %s; generated for the outputs (listed in the report)", ", ".join(generated))
    return tuple(headers), generated


def _candidates_for(source: SeriesSource, series_uid: str | None) -> tuple[Iterable[Candidate], str | None, str]:
    """The candidates to read and the series to choose; a single file stands for its whole series."""
    if not isinstance(source, str | Path) or not Path(source).is_file():
        return iter_candidates(source), series_uid, ""
    path = Path(source)
    cand = read_file(path)
    if cand is None or cand.skip is not None:
        what = "not a DICOM file" if cand is None else cand.skip
        raise InputError(f"the input file {path} is {what}; pass a CT series folder or one of its slices")
    if cand.problem is not None:
        _refuse_problem([cand], "the input")
    key = _series_key(cand)
    if series_uid is not None and series_uid != key:
        raise InputError(f"the input file {path} belongs to series {key}, not to the --series-uid {series_uid}")
    folder = path.parent
    note = (
        f"a single file was given: its whole series was read from its folder ({len(list_files(folder))} files searched)"
    )
    return iter_candidates(folder), key, note


def read_series(source: SeriesSource, series_uid: str | None = None, allow_thin: bool = False) -> DicomSeries:
    """Read one CT image series.

    Parameters
    ----------
    source
        A folder (searched recursively), a file (its whole series is read from the file's folder), a list
        of files, or a list of pydicom datasets (never modified).
    series_uid
        SeriesInstanceUID to pick when the input holds several CT series.
    allow_thin
        Accept series of fewer than :data:`MIN_SLICES` slices (a single slice's spacing then comes from
        SliceThickness).

    Returns
    -------
    DicomSeries
        ``volume.array`` is HU (int16 when the rescale is integral, as nearly always; else float32), shape
        ``(slices, rows, columns)``, sorted along the slice
        normal; its affine maps (column, row, slice) indices to LPS mm.

    Raises
    ------
    InputError
        No CT series, several without a choice, an unusable file in the series (named), or a series that
        cannot form a regular volume.
    """
    pixel_decoders.register()
    candidates, series_uid, note = _candidates_for(source, series_uid)
    cands = _choose_series(candidates, series_uid)
    if len(cands) < MIN_SLICES and not allow_thin:
        raise InputError(
            f"the series has {len(cands)} slice(s) ({cands[0].origin}); litseg needs at least {MIN_SLICES} to "
            "measure slice spacing and volumes: pass the whole series, or --allow-thin (API: allow_thin=True) "
            "to segment so few slices anyway"
        )
    _check_uniform(cands, "Rows", int)
    _check_uniform(cands, "Columns", int)
    _check_uniform(cands, "PixelSpacing", lambda v: tuple(round(float(x), 4) for x in v))
    _check_uniform(cands, "FrameOfReferenceUID", lambda v: str(v or "").strip())
    iop = _orientation(cands)
    cands, step = _sort_and_space(cands, iop)
    first = cands[0].dataset
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_spacing  # along a row: increasing column index
    affine[:3, 1] = iop[3:] * row_spacing  # down a column: increasing row index
    affine[:3, 2] = step
    affine[:3, 3] = [float(v) for v in first.ImagePositionPatient]
    headers, generated = _complete_headers(cands)  # before decoding: that releases the files' pixel data
    array = decode_volume(cands, int(first.Rows), int(first.Columns))
    volume = Volume(
        array,
        affine,
        str(headers[0].FrameOfReferenceUID),
        tuple(str(h.SOPInstanceUID) for h in headers),
    )
    log.info("read series: %d slices of %dx%d, spacing %s mm", *array.shape, np.round(volume.spacing_mm, 3))
    notes = (note,) if note else ()
    return DicomSeries(volume, headers, generated, notes, tuple(c.origin for c in cands))
