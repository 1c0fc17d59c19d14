"""Writing image series as DICOM: CT series (NIfTI -> DICOM) and grey-level mask series.

The mask convention is the seed's: task ``liver`` stores liver as 255; task ``liver-tumor`` stores
liver 63 and tumor 127 (background 0). Masks are Secondary Capture images that keep the CT's Frame of
Reference and plane geometry (position, orientation, spacing) and reference their CT slice, so that
viewers overlay them and our reader never mistakes them for the CT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from .volume import Volume

#: Grey level of each class index in mask series, per task.
GREY_LEVELS: dict[str, dict[int, int]] = {"liver": {1: 255}, "liver-tumor": {1: 63, 2: 127}}


@dataclass(frozen=True)
class SeriesIdentity:
    """Who and what a written series belongs to (patient, study, series, frame of reference)."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    frame_uid: str
    series_number: int = 1
    description: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""

    @classmethod
    def derived(cls, key: str, series_number: int = 1, description: str = "") -> SeriesIdentity:
        """Deterministic identity from a text key (re-runs give the same UIDs)."""
        return cls(
            patient_id=key[:64],
            patient_name=f"{key}^"[:64],
            study_uid=generate_uid(entropy_srcs=[key, "study"]),
            series_uid=generate_uid(entropy_srcs=[key, "series", str(series_number)]),
            frame_uid=generate_uid(entropy_srcs=[key, "frame"]),
            series_number=series_number,
            description=description,
            study_date="20000101",  # fixed, so re-runs write identical files
            study_time="000000",
            study_id="1",
        )

    @classmethod
    def beside(cls, source: Dataset, series_number: int, description: str) -> SeriesIdentity:
        """A new series in the study and frame of reference of ``source``."""
        return cls(
            patient_id=str(source.get("PatientID", "")),
            patient_name=str(source.get("PatientName", "")),
            study_uid=str(source.StudyInstanceUID),
            series_uid=generate_uid(),
            frame_uid=str(source.get("FrameOfReferenceUID", "")) or generate_uid(),
            series_number=series_number,
            description=description,
            study_date=str(source.get("StudyDate", "")),
            study_time=str(source.get("StudyTime", "")),
            study_id=str(source.get("StudyID", "")),
        )


def _base(identity: SeriesIdentity, sop_class: str, sop_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = identity.study_uid
    ds.StudyDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.StudyID = identity.study_id
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = identity.series_uid
    ds.SeriesNumber = identity.series_number
    ds.SeriesDescription = identity.description[:64]
    ds.FrameOfReferenceUID = identity.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "litseg"
    return ds


def patient_orientation(direction: npt.NDArray[np.float64]) -> list[str]:
    """PatientOrientation (0020,0020) of a slice: the patient directions of its rows and columns (PS3.3
    C.7.6.1.1.1), e.g. ``["L", "P"]`` for the standard axial display; up to three letters each, by weight."""
    codes = []
    for axis in (direction[:, 0], direction[:, 1]):
        letters = [("L" if v > 0 else "R", "P" if v > 0 else "A", "H" if v > 0 else "F")[i] for i, v in enumerate(axis)]
        order = np.argsort(-np.abs(axis), kind="stable")
        codes.append("".join(letters[i] for i in order if abs(axis[i]) > 1e-3) or "L")
    return codes


def _plane(ds: Dataset, volume: Volume, k: int) -> None:
    """Image Plane module for slice ``k`` of ``volume``."""
    a = volume.affine_lps
    col_spacing, row_spacing, _ = volume.spacing_mm
    direction = volume.direction
    ds.ImagePositionPatient = [f"{v:.6f}" for v in a[:3, :3] @ [0.0, 0.0, float(k)] + a[:3, 3]]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [f"{row_spacing:.6f}", f"{col_spacing:.6f}"]
    ds.SliceThickness = f"{volume.spacing_mm[2]:.6f}"
    ds.InstanceNumber = k + 1


def _pixels(ds: Dataset, array: npt.NDArray[np.generic], bits: int, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(v) for v in array.shape)
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(array).tobytes()


def ct_datasets(hu: Volume, identity: SeriesIdentity) -> list[Dataset]:
    """CT Image Storage datasets, one per slice, stored value = HU (int16, slope 1, intercept 0)."""
    array = np.asarray(hu.array)
    if array.dtype != np.int16:
        if array.min() < -32768 or array.max() > 32767:
            raise ValueError(f"HU values {array.min()}..{array.max()} do not fit int16")
        array = np.round(array).astype(np.int16)
    out = []
    for k in range(array.shape[0]):
        ds = _base(identity, CTImageStorage, generate_uid(entropy_srcs=[identity.series_uid, str(k)]))
        ds.Modality = "CT"
        ds.PatientPosition = "HFS"  # Type 2C for CT; the phantoms and LiTS are head-first supine
        ds.BodyPartExamined = "ABDOMEN"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        _plane(ds, hu, k)
        ds.KVP = ""
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "50"
        ds.WindowWidth = "400"
        _pixels(ds, array[k], 16, signed=True)
        out.append(ds)
    return out


def mask_datasets(
    labels: Volume, task: str, identity: SeriesIdentity, source_sop_uids: Sequence[str] = ()
) -> list[Dataset]:
    """Grey-level mask datasets (Secondary Capture, 8-bit) in the seed's convention for ``task``."""
    if task not in GREY_LEVELS:
        raise ValueError(f"task must be one of {sorted(GREY_LEVELS)}; got {task!r}")
    lut = np.zeros(256, dtype=np.uint8)
    for label, grey in GREY_LEVELS[task].items():
        lut[label] = grey
    if task == "liver":
        lut[2] = GREY_LEVELS["liver"][1]  # tumor is part of the liver
    array = lut[np.asarray(labels.array, dtype=np.uint8)]
    out = []
    for k in range(array.shape[0]):
        ds = _base(identity, SecondaryCaptureImageStorage, generate_uid(entropy_srcs=[identity.series_uid, str(k)]))
        ds.Modality = "OT"
        ds.Laterality = ""  # Type 2C (General Series): the liver is not a paired structure
        ds.PatientOrientation = patient_orientation(labels.direction)  # Type 2C without Image Plane in SC
        ds.ConversionType = "WSD"
        ds.ImageType = ["DERIVED", "SECONDARY", "MASK"]
        _plane(ds, labels, k)
        ds.ContentLabel = "LITSEG_MASK"
        if source_sop_uids:
            ref = Dataset()
            ref.ReferencedSOPClassUID = CTImageStorage
            ref.ReferencedSOPInstanceUID = source_sop_uids[k]
            ds.ReferencedImageSequence = [ref]
        _pixels(ds, array[k], 8, signed=False)
        out.append(ds)
    return out


def write_datasets(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    """Write datasets as ``IM000001.dcm``... (DICOM Part 10 files) into an existing folder."""
    paths = []
    for n, ds in enumerate(datasets, start=1):
        path = folder / f"IM{n:06d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
