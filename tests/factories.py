"""Test data built in code: synthetic CT series (real DICOM files through pydicom) and tiny real ONNX models.

The phantom is defined in world coordinates (LPS mm), so a series of any orientation samples the same
anatomy and the truth is known in the patient, not in an array.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pydicom
from onnx import TensorProto, helper
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from litseg.runtime.model import NAME_METADATA_KEY, VERSION_METADATA_KEY
from litseg.runtime.spec import SPEC_METADATA_KEY, PreprocessSpec

# ----- the world phantom --------------------------------------------------------------------------
BODY_TISSUE_HU = -60.0  # the phantom body: fat and soft tissue averaged
LIVER_HU = 100.0
TUMOR_HU = 170.0  # hyperdense, so liver-body partial volume never looks like tumor
#: Liver on the patient's right (LPS x < 0), anterior (y < 0), upper (z > 0): asymmetric on every axis.
LIVER_CENTER_LPS = np.array([-60.0, -25.0, 8.0])
LIVER_RADII_MM = np.array([45.0, 40.0, 30.0])
TUMOR_CENTER_LPS = np.array([-75.0, -35.0, 12.0])
TUMOR_RADIUS_MM = 12.0


def phantom_hu(points_lps: np.ndarray) -> np.ndarray:
    """HU at LPS points ``(..., 3)``: body ellipse, a liver ellipsoid on the right, a tumor inside."""
    p = np.asarray(points_lps, dtype=np.float64)
    hu = np.full(p.shape[:-1], -1000.0)
    body = (p[..., 0] / 150.0) ** 2 + (p[..., 1] / 110.0) ** 2 <= 1.0
    hu[body] = BODY_TISSUE_HU
    liver = (((p - LIVER_CENTER_LPS) / LIVER_RADII_MM) ** 2).sum(-1) <= 1.0
    hu[liver] = LIVER_HU
    tumor = np.linalg.norm(p - TUMOR_CENTER_LPS, axis=-1) <= TUMOR_RADIUS_MM
    hu[tumor] = TUMOR_HU
    return hu


def phantom_labels(points_lps: np.ndarray) -> np.ndarray:
    p = np.asarray(points_lps, dtype=np.float64)
    labels = np.zeros(p.shape[:-1], dtype=np.uint8)
    labels[(((p - LIVER_CENTER_LPS) / LIVER_RADII_MM) ** 2).sum(-1) <= 1.0] = 1
    labels[np.linalg.norm(p - TUMOR_CENTER_LPS, axis=-1) <= TUMOR_RADIUS_MM] = 2
    return labels


@dataclass(frozen=True)
class SeriesGeometry:
    rows: int = 64
    columns: int = 64
    slices: int = 12
    pixel_spacing_mm: tuple[float, float] = (4.0, 4.0)  # (row spacing, column spacing)
    slice_spacing_mm: float = 5.0
    row_direction: tuple[float, float, float] = (1.0, 0.0, 0.0)  # IOP[0:3]: along a row
    column_direction: tuple[float, float, float] = (0.0, 1.0, 0.0)  # IOP[3:6]: down a column
    center_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def affine_lps(self) -> np.ndarray:
        row = np.array(self.row_direction, dtype=float)
        col = np.array(self.column_direction, dtype=float)
        normal = np.cross(row, col)
        affine = np.eye(4)
        affine[:3, 0] = row * self.pixel_spacing_mm[1]
        affine[:3, 1] = col * self.pixel_spacing_mm[0]
        affine[:3, 2] = normal * self.slice_spacing_mm
        half = np.array([self.columns - 1, self.rows - 1, self.slices - 1]) / 2.0
        affine[:3, 3] = np.array(self.center_lps) - affine[:3, :3] @ half
        return affine

    def world_grid(self) -> np.ndarray:
        """LPS coordinates of every voxel centre, shape (slices, rows, columns, 3)."""
        k, j, i = np.meshgrid(np.arange(self.slices), np.arange(self.rows), np.arange(self.columns), indexing="ij")
        ijk = np.stack([i, j, k], axis=-1).astype(float)
        a = self.affine_lps()
        return ijk @ a[:3, :3].T + a[:3, 3]


@dataclass(frozen=True)
class SeriesOptions:
    slope: float = 1.0
    intercept: float = -1024.0
    signed: bool = False
    padding_value: int | None = None
    series_uid: str | None = None
    description: str = "Abdomen portal venous"
    frame_uid: str | None = None
    study_uid: str | None = None


def make_series(
    geometry: SeriesGeometry = SeriesGeometry(),
    options: SeriesOptions = SeriesOptions(),
    hu: np.ndarray | None = None,
) -> list[Dataset]:
    """A CT series as pydicom datasets (one per slice, in slice order), pixels sampled from the phantom."""
    if hu is None:
        hu = phantom_hu(geometry.world_grid())
    stored = np.round((hu - options.intercept) / options.slope)
    dtype = np.int16 if options.signed else np.uint16
    info = np.iinfo(dtype)
    stored = np.clip(stored, info.min, info.max).astype(dtype)
    if options.padding_value is not None:
        # outside the scan field: the corners beyond the circle inscribed in the image
        j, i = np.mgrid[: geometry.rows, : geometry.columns]
        r = ((j - (geometry.rows - 1) / 2) / (geometry.rows / 2)) ** 2 + (
            (i - (geometry.columns - 1) / 2) / (geometry.columns / 2)
        ) ** 2
        stored[:, r > 1.0] = options.padding_value
    series_uid = options.series_uid or generate_uid()
    study_uid = options.study_uid or generate_uid()
    frame_uid = options.frame_uid or generate_uid()
    a = geometry.affine_lps()
    datasets = []
    for k in range(geometry.slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Phantom^Liver"
        ds.PatientID = "PHANTOM-001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "ACC001"
        ds.ReferringPhysicianName = ""
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 3
        ds.SeriesDescription = options.description
        ds.Modality = "CT"
        ds.Manufacturer = "litseg-tests"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = geometry.slices - k  # deliberately not the spatial order
        ds.ImagePositionPatient = [f"{v:.6f}" for v in a[:3, :3] @ [0, 0, k] + a[:3, 3]]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*geometry.row_direction, *geometry.column_direction)]
        ds.PixelSpacing = [f"{v:.6f}" for v in geometry.pixel_spacing_mm]
        ds.SliceThickness = f"{geometry.slice_spacing_mm * 1.25:.3f}"  # thickness != spacing on purpose
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = geometry.rows
        ds.Columns = geometry.columns
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if options.signed else 0
        ds.RescaleSlope = f"{options.slope:g}"
        ds.RescaleIntercept = f"{options.intercept:g}"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        if options.padding_value is not None:
            ds.PixelPaddingValue = options.padding_value
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        datasets.append(ds)
    return datasets


def write_series(datasets: Sequence[Dataset], folder: Path, shuffle_seed: int | None = 0) -> list[Path]:
    """Write datasets as files with names unrelated to slice order; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.arange(len(datasets))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    paths = []
    for n, idx in enumerate(order):
        path = folder / f"IM{n:04d}"
        pydicom.dcmwrite(path, datasets[idx], enforce_file_format=True)
        paths.append(path)
    return paths


# ----- tiny real ONNX models ----------------------------------------------------------------------
def evict_from_page_cache(paths: Iterable[Path]) -> None:
    """Drop the files' pages from the page cache (fsynced first: only clean pages can go), as after a reboot.
    No effect on a file system that keeps its pages in memory (tmpfs)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _hu_to_unit(hu: float, spec: PreprocessSpec) -> float:
    lo, hi = spec.window_hu
    return (hu - lo) / (hi - lo)


def make_intensity_model(
    path: Path,
    spec: PreprocessSpec | None = None,
    *,
    metadata: bool = True,
    name: str = "test-intensity",
    version: str = "0.0.1",
) -> Path:
    """A real ONNX model that labels pixels by intensity: liver near LIVER_HU, tumor near TUMOR_HU.

    Logits: background 0; class c: 4 - ((x - mu_c) / 0.03)^2 with mu_c the normalised class HU;
    softmax head, as the trained U-Net has. Dynamic batch and spatial axes.
    """
    spec = spec or PreprocessSpec()
    nodes = [helper.make_node("Mul", ["x", "zero"], ["bg"])]
    names = ["bg"]
    inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    class_hu = {"liver": LIVER_HU, "tumor": TUMOR_HU}
    for name_c in spec.class_names[1:]:
        mu = _hu_to_unit(class_hu[name_c], spec)
        inits += [
            helper.make_tensor(f"mu_{name_c}", TensorProto.FLOAT, [], [mu]),
            helper.make_tensor(f"inv_{name_c}", TensorProto.FLOAT, [], [1 / 0.03]),
            helper.make_tensor(f"four_{name_c}", TensorProto.FLOAT, [], [4.0]),
        ]
        nodes += [
            helper.make_node("Sub", ["x", f"mu_{name_c}"], [f"d_{name_c}"]),
            helper.make_node("Mul", [f"d_{name_c}", f"inv_{name_c}"], [f"s_{name_c}"]),
            helper.make_node("Mul", [f"s_{name_c}", f"s_{name_c}"], [f"q_{name_c}"]),
            helper.make_node("Sub", [f"four_{name_c}", f"q_{name_c}"], [f"l_{name_c}"]),
        ]
        names.append(f"l_{name_c}")
    nodes += [
        helper.make_node("Concat", names, ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "intensity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", "w"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", spec.num_classes, "h", "w"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(
            model, {SPEC_METADATA_KEY: spec.to_json(), NAME_METADATA_KEY: name, VERSION_METADATA_KEY: version}
        )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def with_metadata(path: Path, key: str, value: str) -> Path:
    """Add one ``key: value`` entry to an ONNX model's metadata in place (e.g. calibrated settings); returns
    the path."""
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path
