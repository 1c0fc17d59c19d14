"""The bad-input matrix: what real archives and real users send, and what ``litseg-run`` must answer.

Each case builds its input in a folder (real DICOM files written with pydicom, or converted by dcmtk) and
names the expected exit code and a phrase of the one error line (None for cases that must succeed).
``docs/bad-input.md`` lists the same cases; a test keeps the two in step.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    XRayRadiationDoseSRStorage,
    generate_uid,
)

from litseg.runtime.errors import EXIT_BAD_INPUT, EXIT_DEVICE, EXIT_MODEL, EXIT_OUTPUT, EXIT_USAGE
from tests.factories import SeriesGeometry, SeriesOptions, make_series, write_series

GEO = SeriesGeometry(rows=32, columns=32, slices=5, pixel_spacing_mm=(8.0, 8.0), slice_spacing_mm=8.0)


@dataclass(frozen=True)
class Case:
    """``build(folder) -> extra CLI arguments``; ``code`` the exit code; ``phrase`` in the error line."""

    build: Callable[[Path], list[str]]
    code: int
    phrase: str | None = None


def _series(folder: Path, geo: SeriesGeometry = GEO, options: SeriesOptions | None = None) -> list[Dataset]:
    datasets = make_series(geo, options or SeriesOptions())
    write_series(datasets, folder)
    return datasets


def _write(folder: Path, datasets: list[Dataset], prefix: str = "IM") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, ds in enumerate(datasets):
        pydicom.dcmwrite(folder / f"{prefix}{n:04d}", ds, enforce_file_format=True)


def _edited(edit: Callable[[list[Dataset]], object], geo: SeriesGeometry = GEO) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        datasets = make_series(geo)
        edit(datasets)
        _write(folder, datasets)
        return []

    return build


def _as_class(sop_class: str, modality: str) -> Callable[[list[Dataset]], None]:
    def edit(datasets: list[Dataset]) -> None:
        for ds in datasets:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
            ds.Modality = modality

    return edit


def _non_ct_object(sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, ds.file_meta.MediaStorageSOPInstanceUID, modality
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    return ds


# ----- builders -------------------------------------------------------------------------------------
def empty_folder(folder: Path) -> list[str]:
    folder.mkdir()
    return []


def text_files(folder: Path) -> list[str]:
    folder.mkdir()
    for n in range(3):
        (folder / f"notes{n}.txt").write_text("patient notes, not DICOM\n" * 20)
    return []


def zero_byte_files(folder: Path) -> list[str]:
    folder.mkdir()
    for n in range(3):
        (folder / f"IM{n}").write_bytes(b"")
    return []


def missing_input(folder: Path) -> list[str]:
    return []  # the folder is never created


def two_series(folder: Path) -> list[str]:
    _series(folder / "a")
    _series(folder / "b", options=SeriesOptions(description="Second series"))
    return []


def unknown_series_uid(folder: Path) -> list[str]:
    _series(folder)
    return ["--series-uid", "1.2.3.4"]


def gap(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    _write(folder, datasets[:2] + datasets[3:])
    return []


def duplicate_position(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    datasets[3].ImagePositionPatient = datasets[2].ImagePositionPatient
    _write(folder, datasets)
    return []


def mixed_sizes(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    small = SeriesGeometry(rows=16, columns=16, slices=5, pixel_spacing_mm=(8.0, 8.0), slice_spacing_mm=8.0)
    other = make_series(small, SeriesOptions(series_uid=datasets[0].SeriesInstanceUID))
    _write(folder, [*datasets[:4], other[4]])
    return []


def gantry_tilt(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for k, ds in enumerate(datasets):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 2.0 * k, z]  # positions drift in y: a tilted gantry
    _write(folder, datasets)
    return []


def sagittal(folder: Path) -> list[str]:
    _series(folder, SeriesGeometry(rows=32, columns=32, slices=5, row_direction=(0, 1, 0), column_direction=(0, 0, -1)))
    return []


def no_pixel_data(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    del datasets[2].PixelData
    _write(folder, datasets)
    return []


def truncated_header(folder: Path) -> list[str]:
    _series(folder)
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:900])  # cut inside the header, before the image plane
    return []


def truncated_pixels(folder: Path) -> list[str]:
    _series(folder)
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-200])
    return []


def corrupt_jpeg(folder: Path) -> list[str]:
    _series(folder / "raw")
    (folder / "jpeg").mkdir()
    for path in sorted((folder / "raw").iterdir()):
        subprocess.run(["dcmcjpeg", str(path), str(folder / "jpeg" / path.name)], check=True, capture_output=True)
    shutil.rmtree(folder / "raw")
    victim = sorted((folder / "jpeg").iterdir())[2]
    ds = pydicom.dcmread(victim)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])  # the file parses; its JPEG stream stops halfway
    ds.save_as(victim, enforce_file_format=True)
    return []


def two_slices(folder: Path) -> list[str]:
    _series(folder, SeriesGeometry(rows=32, columns=32, slices=2, pixel_spacing_mm=(8.0, 8.0), slice_spacing_mm=8.0))
    return []


def two_slices_allowed(folder: Path) -> list[str]:
    two_slices(folder)
    return ["--allow-thin"]


def one_slice(folder: Path) -> list[str]:
    _series(folder, SeriesGeometry(rows=32, columns=32, slices=1))
    return []


def mixed_orientation(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    datasets[1].ImageOrientationPatient = [0.9848, 0.1736, 0, -0.1736, 0.9848, 0]
    _write(folder, datasets)
    return []


def mixed_spacing(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    datasets[1].PixelSpacing = [7.0, 7.0]
    _write(folder, datasets)
    return []


def mixed_frame_of_reference(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    datasets[1].FrameOfReferenceUID = generate_uid()
    _write(folder, datasets)
    return []


def non_orthonormal_orientation(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for ds in datasets:
        ds.ImageOrientationPatient = [1, 0, 0, 0.5, 0.5, 0]
    _write(folder, datasets)
    return []


def rgb_ct(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for ds in datasets:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = bytes(32 * 32 * 3)
    _write(folder, datasets)
    return []


def localizer_only(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for ds in datasets:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    _write(folder, datasets)
    return []


def dicomdir_only(folder: Path) -> list[str]:
    ds = _non_ct_object("1.2.840.10008.1.3.10", "")
    ds.DirectoryRecordSequence = []
    _write(folder, [ds], prefix="DICOMDIR")
    return []


def single_mr_file(folder: Path) -> list[str]:
    build = _edited(_as_class(MRImageStorage, "MR"))
    build(folder)
    return ["@file"]


def single_text_file(folder: Path) -> list[str]:
    folder.mkdir()
    (folder / "report.txt").write_text("not DICOM")
    return ["@file"]


# ----- cases that must succeed --------------------------------------------------------------------
def deidentified_blank_uids(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for ds in datasets:  # the file meta keeps SOP Class and SOP Instance UID, as real anonymisers leave it
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID"):
            setattr(ds, keyword, "")
    _write(folder, datasets)
    return []


def deidentified_dropped(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for ds in datasets:
        for keyword in ("PatientName", "PatientID", "StudyDate", "StudyTime", "FrameOfReferenceUID", "StudyID"):
            del ds[keyword]
    _write(folder, datasets)
    return []


def no_part10_meta(folder: Path) -> list[str]:
    folder.mkdir()
    for n, ds in enumerate(make_series(GEO)):
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(folder / f"raw{n}", ds, implicit_vr=True, little_endian=True)
    return []


def single_file_of_series(folder: Path) -> list[str]:
    _series(folder)
    return ["@file"]


def extras_beside_ct(folder: Path) -> list[str]:
    _series(folder / "ct")
    loc = make_series(SeriesGeometry(rows=32, columns=32, slices=1), SeriesOptions(description="Topogram"))
    loc[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    _write(folder / "scout", loc)
    _write(folder / "dose", [_non_ct_object(XRayRadiationDoseSRStorage, "SR")])
    _write(folder / "seg", [_non_ct_object(SegmentationStorage, "SEG")])
    _write(folder / "sc", [_non_ct_object(SecondaryCaptureImageStorage, "OT")])
    _write(folder / "enh", [_non_ct_object(EnhancedCTImageStorage, "CT")])
    dicomdir = _non_ct_object("1.2.840.10008.1.3.10", "")
    dicomdir.DirectoryRecordSequence = []
    pydicom.dcmwrite(folder / "DICOMDIR", dicomdir, enforce_file_format=True)
    (folder / "README.TXT").write_text("export notes")
    return []


def nested_no_extensions(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for n, ds in enumerate(datasets):
        sub = folder / f"DIR{n % 2}" / f"SUB{n % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(sub / f"{n:08X}", ds, enforce_file_format=True)
    return []


def feet_first(folder: Path) -> list[str]:
    _series(folder, SeriesGeometry(rows=32, columns=32, slices=5, row_direction=(-1, 0, 0), column_direction=(0, 1, 0)))
    return []


def rotated_180(folder: Path) -> list[str]:
    _series(
        folder, SeriesGeometry(rows=32, columns=32, slices=5, row_direction=(-1, 0, 0), column_direction=(0, -1, 0))
    )
    return []


def monochrome1(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for ds in datasets:
        ds.PhotometricInterpretation = "MONOCHROME1"  # display inverted; the HU are the same
    _write(folder, datasets)
    return []


def per_slice_rescale(folder: Path) -> list[str]:
    geo = GEO
    datasets = make_series(geo, SeriesOptions(slope=1.0, intercept=-1024.0))
    for k, ds in enumerate(datasets):
        if k % 2:  # same HU, another stored representation on every other slice
            stored = np.frombuffer(ds.PixelData, np.uint16).astype(np.int32) - 1024
            ds.PixelRepresentation, ds.RescaleIntercept = 1, "0"
            ds.PixelData = stored.astype(np.int16).tobytes()
    _write(folder, datasets)
    return []


def padding_values(folder: Path) -> list[str]:
    _series(folder, options=SeriesOptions(signed=True, intercept=0.0, padding_value=-3024))
    return []


def blank_series_uid_everywhere(folder: Path) -> list[str]:
    datasets = make_series(GEO)
    for ds in datasets:
        ds.SeriesInstanceUID = ""
    _write(folder, datasets)
    return []


def _flags(*flags: str) -> Callable[[Path], list[str]]:
    """A plain series plus these arguments (``@model:KIND`` and ``@out:KIND`` are resolved by the test)."""

    def build(folder: Path) -> list[str]:
        _series(folder)
        return list(flags)

    return build


CASES: dict[str, Case] = {
    # input that is not a CT series
    "empty-folder": Case(empty_folder, EXIT_BAD_INPUT, "no CT image series"),
    "text-files": Case(text_files, EXIT_BAD_INPUT, "no DICOM files"),
    "zero-byte-files": Case(zero_byte_files, EXIT_BAD_INPUT, "no DICOM files"),
    "missing-input": Case(missing_input, EXIT_BAD_INPUT, "input not found"),
    "mr-series": Case(_edited(_as_class(MRImageStorage, "MR")), EXIT_BAD_INPUT, "MR Image Storage"),
    "seg-object-only": Case(
        lambda f: _write(f, [_non_ct_object(SegmentationStorage, "SEG")]) or [], EXIT_BAD_INPUT, "Segmentation Storage"
    ),
    "enhanced-ct-only": Case(
        lambda f: _write(f, [_non_ct_object(EnhancedCTImageStorage, "CT")]) or [], EXIT_BAD_INPUT, "Enhanced CT"
    ),
    "localizer-only": Case(localizer_only, EXIT_BAD_INPUT, "localizer"),
    "dicomdir-only": Case(dicomdir_only, EXIT_BAD_INPUT, "DICOMDIR"),
    "single-mr-file": Case(single_mr_file, EXIT_BAD_INPUT, "is not a CT image"),
    "single-text-file": Case(single_text_file, EXIT_BAD_INPUT, "not a DICOM file"),
    # several series, or slices that do not make one volume
    "two-series-no-choice": Case(two_series, EXIT_BAD_INPUT, "--series-uid"),
    "unknown-series-uid": Case(unknown_series_uid, EXIT_BAD_INPUT, "is not among"),
    "gap": Case(gap, EXIT_BAD_INPUT, "uneven slice spacing"),
    "duplicate-position": Case(duplicate_position, EXIT_BAD_INPUT, "duplicate slice position"),
    "mixed-sizes": Case(mixed_sizes, EXIT_BAD_INPUT, "mixes Rows"),
    "mixed-orientation": Case(mixed_orientation, EXIT_BAD_INPUT, "mixes slice orientations"),
    "mixed-pixel-spacing": Case(mixed_spacing, EXIT_BAD_INPUT, "mixes PixelSpacing"),
    "mixed-frame-of-reference": Case(mixed_frame_of_reference, EXIT_BAD_INPUT, "mixes FrameOfReferenceUID"),
    "non-orthonormal-orientation": Case(non_orthonormal_orientation, EXIT_BAD_INPUT, "orthonormal"),
    "gantry-tilt": Case(gantry_tilt, EXIT_BAD_INPUT, "gantry tilt"),
    "sagittal": Case(sagittal, EXIT_BAD_INPUT, "not axial"),
    "rgb-ct": Case(rgb_ct, EXIT_BAD_INPUT, "not a greyscale image"),
    "two-slices": Case(two_slices, EXIT_BAD_INPUT, "--allow-thin"),
    "one-slice": Case(one_slice, EXIT_BAD_INPUT, "--allow-thin"),
    # files that cannot be used: refused, naming the file
    "slice-without-pixel-data": Case(no_pixel_data, EXIT_BAD_INPUT, "has no pixel data"),
    "truncated-header": Case(truncated_header, EXIT_BAD_INPUT, "truncated"),
    "truncated-pixel-data": Case(truncated_pixels, EXIT_BAD_INPUT, "cannot decode the pixels"),
    "corrupt-jpeg": Case(corrupt_jpeg, EXIT_BAD_INPUT, "cannot decode the pixels"),
    # outputs that could touch the input or cannot be written
    "out-equals-input": Case(_flags("@out:same"), EXIT_USAGE, "is the input folder"),
    "out-inside-input": Case(_flags("@out:inside"), EXIT_USAGE, "lies inside the input folder"),
    "out-contains-input": Case(_flags("@out:around"), EXIT_USAGE, "contains the input folder"),
    "out-equals-input-overwrite": Case(_flags("@out:same-overwrite"), EXIT_USAGE, "is the input folder"),
    "out-not-empty": Case(_flags("@out:busy"), EXIT_OUTPUT, "already holds files that litseg did not write (keep.txt)"),
    "out-foreign-overwrite": Case(
        _flags("@out:busy", "--overwrite"), EXIT_OUTPUT, "already holds files that litseg did not write (keep.txt)"
    ),
    "out-earlier-results": Case(_flags("@out:earlier"), EXIT_OUTPUT, "holds litseg results; pass --overwrite"),
    "out-earlier-results-plus-file": Case(
        _flags("@out:earlier-plus", "--overwrite"), EXIT_OUTPUT, "litseg did not write (notes.txt)"
    ),
    "out-is-a-file": Case(_flags("@out:file"), EXIT_OUTPUT, "is not a folder"),
    "out-under-a-file": Case(_flags("@out:under-file"), EXIT_OUTPUT, "cannot create"),
    # model and device
    "model-missing": Case(_flags("@model:missing"), EXIT_MODEL, "model file not found"),
    "model-without-metadata": Case(_flags("@model:no-metadata"), EXIT_MODEL, "lacks the litseg metadata"),
    "model-input-size-mismatch": Case(_flags("@model:fixed-128"), EXIT_MODEL, "preprocessing spec needs"),
    "model-class-count-mismatch": Case(_flags("@model:two-classes"), EXIT_MODEL, "classes"),
    "model-not-onnx": Case(_flags("@model:junk"), EXIT_MODEL, "cannot load model"),
    "model-fails-at-inference": Case(_flags("@model:run-fails"), EXIT_MODEL, "failed during inference"),
    "gpu-without-gpu": Case(_flags("--device", "gpu"), EXIT_DEVICE, "no usable CUDA GPU"),
    "broken-onnxruntime": Case(_flags("@ort:broken"), EXIT_MODEL, "onnxruntime is installed but broken"),
    # flags
    "unknown-format": Case(_flags("--formats", "seg,png"), EXIT_USAGE, "--formats"),
    "negative-min-tumor-ml": Case(_flags("--min-tumor-ml", "-1"), EXIT_USAGE, "min_tumor_ml"),
    # what real archives hold and must work
    "deidentified-blank-uids": Case(deidentified_blank_uids, 0),
    "deidentified-dropped-attributes": Case(deidentified_dropped, 0),
    "blank-series-uid-everywhere": Case(blank_series_uid_everywhere, 0),
    "no-part10-meta": Case(no_part10_meta, 0),
    "single-file-of-series": Case(single_file_of_series, 0),
    "localizer-dose-seg-dicomdir-beside-ct": Case(extras_beside_ct, 0),
    "nested-folders-no-extensions": Case(nested_no_extensions, 0),
    "feet-first": Case(feet_first, 0),
    "rotated-180": Case(rotated_180, 0),
    "monochrome1": Case(monochrome1, 0),
    "per-slice-rescale": Case(per_slice_rescale, 0),
    "padding-values": Case(padding_values, 0),
    "two-slices-allow-thin": Case(two_slices_allowed, 0),
}
