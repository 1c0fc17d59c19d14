"""Finding and classifying the DICOM objects of an input: what is a usable CT slice, what is skipped, what is
broken.

Real archives hold more than a clean CT series: DICOMDIRs, localizers, dose reports, SEG and SR objects,
files written without the Part 10 preamble and file meta, de-identified files whose SOP Class and SOP
Instance UIDs were blanked in the dataset but survive in the file meta, and files cut short in transfer.
This module reads each file once (pixel data deferred), takes the UIDs from the file meta where the
dataset's are empty, and sorts every object into one of three kinds:

- a CT slice (:class:`Candidate` with ``problem`` None),
- something that is not a CT image and is skipped with a reason (``skip``),
- a CT image that cannot be used (``problem``: no pixel data, a required attribute missing, a truncated
  file); the reader refuses a series holding such a file, naming it, rather than segmenting the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import InputError

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Attributes a CT slice needs to be placed in a volume (PS3.3 C.7.6.2 Image Plane, C.7.6.3 Image Pixel).
REQUIRED_FOR_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
PIXEL_DATA_TAG = 0x7FE00010
#: Elements larger than this are read when needed, not with the header (pixel data: by the decoding threads).
HEADER_BYTES = 64 * 1024

SeriesSource = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Sequence[Dataset]


@dataclass(frozen=True)
class Candidate:
    """One DICOM object of the input.

    Attributes
    ----------
    dataset
        The dataset as read (pixel data deferred for files); never modified.
    origin
        File path, or ``<dataset n>`` for in-memory input: for messages.
    sop_class_uid, sop_instance_uid
        From the dataset, else from the file meta (anonymisers blank the dataset's copies); "" if neither.
    skip
        Why the object is not a CT slice (it is left out), or None.
    problem
        Why a CT image cannot be used (the series holding it is refused), or None.
    """

    dataset: Dataset
    origin: str
    sop_class_uid: str
    sop_instance_uid: str
    skip: str | None = None
    problem: str | None = None

    @property
    def in_memory(self) -> bool:
        """The caller's own dataset (``<dataset n>``), not one litseg read from a file."""
        return self.origin.startswith("<")

    @property
    def series_uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", "") or "").strip()


def _uid(ds: Dataset, keyword: str, meta_keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if value:
        return value
    meta = getattr(ds, "file_meta", None)
    return str(getattr(meta, meta_keyword, "") or "").strip() if meta is not None else ""


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return name if name and name != uid else uid


def classify(ds: Dataset, origin: str) -> Candidate:
    """Sort one dataset into CT slice, skipped object or unusable CT image (see the module docstring)."""
    sop_class = _uid(ds, "SOPClassUID", "MediaStorageSOPClassUID")
    sop_instance = _uid(ds, "SOPInstanceUID", "MediaStorageSOPInstanceUID")

    def make(skip: str | None = None, problem: str | None = None) -> Candidate:
        return Candidate(ds, origin, sop_class, sop_instance, skip, problem)

    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return make(skip="DICOMDIR")
    if sop_class == ENHANCED_CT_IMAGE_STORAGE:
        return make(skip="Enhanced CT (multi-frame) is not supported yet")
    if not sop_class and "PixelData" in ds and str(ds.get("Modality", "")).upper() == "CT":
        sop_class = CT_IMAGE_STORAGE  # a bare dataset (no meta, no SOP class) that says it is CT
    if sop_class != CT_IMAGE_STORAGE:
        return make(skip=f"not a CT image ({_sop_class_name(sop_class) or 'no SOP Class'})")
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if "LOCALIZER" in image_type:
        return make(skip="localizer/scout")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return make(skip="multi-frame image")
    if "PixelData" not in ds:
        return make(problem="has no pixel data (a truncated file, or a header-only copy)")
    missing = [k for k in REQUIRED_FOR_GEOMETRY if not ds.get(k)]
    if missing:
        return make(problem=f"lacks {', '.join(missing)} (a truncated or incomplete file)")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return make(problem=f"is not a greyscale image (SamplesPerPixel {ds.SamplesPerPixel})")
    return make()


def _force_read(path: Path) -> Dataset | None:
    """A file without the Part 10 preamble and meta: accepted only when it carries image pixel data."""
    try:
        ds = pydicom.dcmread(path, defer_size=HEADER_BYTES, force=True)
        if "PixelData" not in ds or not ds.get("Rows") or not ds.get("Columns"):
            return None
    except Exception as exc:  # force=True on arbitrary bytes can fail in many ways; it is simply not DICOM
        log.debug("skipping %s: not DICOM (%s)", path, exc)
        return None
    # pydicom knows the encoding it read; pixel decoding needs it as a transfer syntax.
    implicit, little = getattr(ds, "original_encoding", (True, True))
    meta = ds.file_meta if isinstance(getattr(ds, "file_meta", None), FileMetaDataset) else FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        if implicit:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta = meta
    return ds


def _has_dicm_prefix(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_file(path: Path) -> Candidate | None:
    """Read one file (pixel data deferred); None when it is not DICOM at all."""
    try:
        ds = pydicom.dcmread(path, defer_size=HEADER_BYTES)
    except pydicom.errors.InvalidDicomError:
        forced = _force_read(path)
        return classify(forced, str(path)) if forced is not None else None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        if _has_dicm_prefix(path):  # it is DICOM, but broken: never silently leave a slice out
            return Candidate(Dataset(), str(path), "", "", problem=f"cannot be read as DICOM ({exc})")
        log.debug("skipping %s: not readable as DICOM (%s)", path, exc)
        return None
    return classify(ds, str(path))


def list_files(root: Path) -> list[Path]:
    """Every file under ``root`` (recursively, hidden ones included: archives use extension-less names)."""
    if not root.exists():
        raise InputError(f"input not found: {root}; pass a folder of DICOM files or a DICOM file")
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputError(f"input {root} is neither a file nor a folder; pass a folder of DICOM files")
    try:
        return sorted(p for p in root.rglob("*") if p.is_file())
    except OSError as exc:
        raise InputError(f"cannot list the input folder {root}: {exc}; check its permissions") from exc


def iter_candidates(source: SeriesSource) -> Iterator[Candidate]:
    """Every DICOM object of a folder, file, list of files or list of in-memory datasets."""
    if isinstance(source, str | os.PathLike):
        yield from _from_paths(list_files(Path(source)))
        return
    items = list(source)
    datasets = [item for item in items if isinstance(item, Dataset)]
    if items and len(datasets) == len(items):
        for n, ds in enumerate(datasets):
            yield classify(ds, f"<dataset {n}>")
        return
    if datasets:
        raise InputError("pass either file paths or pydicom datasets, not a mix of both")
    paths = [Path(p) for p in items if not isinstance(p, Dataset)]
    for path in paths:
        if not path.is_file():
            raise InputError(f"input file not found: {path}; pass existing DICOM files")
    yield from _from_paths(paths)


def prefetch(paths: Iterable[str | os.PathLike[str]], length: int = 0) -> None:
    """Ask the kernel to read the first ``length`` bytes (0: all) of every file into the page cache now.

    Advice only (``posix_fadvise(WILLNEED)``; nothing where the platform lacks it, unreadable files left to
    the reader's own error): the kernel reads the files in parallel while litseg parses them one by one, so a
    series that is not in the page cache (evicted, just mounted, on a network share) is read at the disk's
    parallel speed instead of one synchronous read after another. Cheap when the files are cached already
    (milliseconds for a whole series).
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in paths:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # never wait on a special file
            try:
                advise(fd, 0, length, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)


def _from_paths(paths: Iterable[Path]) -> Iterator[Candidate]:
    paths = list(paths)
    # The headers are read one file after another: a thread asks for them ahead of the reading.
    ahead = threading.Thread(target=prefetch, args=(paths, HEADER_BYTES), name="litseg-prefetch")
    ahead.start()
    try:
        for path in paths:
            cand = read_file(path)
            if cand is not None:
                yield cand
    finally:
        ahead.join()
