"""The public Python API: :func:`segment` a CT series, :func:`write_results` to disk.

A PACS tool loads a :class:`~litseg.runtime.model.Model` once and passes it to every call::

    from litseg.runtime import Model, RunConfig, segment, write_results
    model = Model("liver-tumor.onnx", device="auto")
    result = segment("/incoming/series", model=model)
    write_results(result, "/outgoing/series")
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np

from .dicom_images import SeriesIdentity, mask_datasets, write_datasets
from .errors import InputError, LitsegError, OutputError
from .focus import FocusPart
from .model import DEVICES, MAX_TUMOR_MARGIN_MM, NO_TTA, Model, ModelInfo, default_model_path
from .nifti import write_nifti
from .nifti_series import NiftiSeries, write_nifti_labels
from .output_folder import check_output_location, commit_folder
from .overlay import write_overlay
from .pipeline import run_model
from .plausibility import Plausibility, assess
from .postprocess import Measurements, measure, postprocess_labels
from .series import DicomSeries, SeriesSource
from .sources import NIFTI_FORMATS, InputSeries, is_nifti_input, read_input, refuse_dicom_only
from .version import litseg_version
from .volume import Volume
from .write import AlgorithmInfo, build_seg, write_json

log = logging.getLogger(__name__)

__all__ = [
    "OUTPUT_FILES",
    "RunConfig",
    "SegmentationResult",
    "default_formats",
    "default_model_path",
    "release_pixels",
    "segment",
    "write_results",
]

#: Output formats and their file names inside the output folder.
OUTPUT_FILES: dict[str, str] = {
    "seg": "segmentation.dcm",
    "nifti": "labels.nii.gz",
    "json": "report.json",
    "mask-dicom": "mask",  # a folder: one grey-level DICOM image per source slice (the seed's convention)
    "overlay": "overlay.png",  # quick look: CT slices through the liver with the labels blended in
}
DEFAULT_FORMATS: tuple[str, ...] = ("seg", "nifti", "json")

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunConfig:
    """Settings for one segmentation run (the CLI has one flag per field).

    Attributes
    ----------
    model
        ONNX model path; ``None`` uses the bundled default.
    device
        ``auto``, ``gpu`` or ``cpu``.
    batch_size
        Slices per inference call; ``None`` uses the device's default (:attr:`Model.default_batch_size`: 2 on
        the CPU, where larger batches are no faster and each slice more holds about 30 MB of activations).
    largest_component
        Keep only the largest connected liver (clean-up of false positives elsewhere).
    min_tumor_ml
        Tumor components smaller than this (mL, 6-connected) become liver; 0 keeps every one. It trades
        recall of small lesions for precision; ``None`` uses the value calibrated with the model
        (``litseg.postprocess``, 0 without one).
    tumor_margin_mm
        Liver voxels within this distance (mm, in-plane) of a tumor become tumor (after the small-tumor
        filter); ``None`` uses the margin calibrated with the model (``litseg.postprocess``, 0 without
        one), 0 turns it off.
    tta
        Average the test-time shifts calibrated with the model (``litseg.inference``; one inference pass per
        shift); ``False`` runs one unshifted pass (the lowest latency).
    series_uid
        SeriesInstanceUID to pick when the input holds several CT series.
    allow_thin
        Segment series of fewer than 3 slices (refused by default: usually a file picked by mistake).
    focus
        Run a coarse first pass and the full inference only on the slices and in-plane box around the liver
        it finds (:mod:`~litseg.runtime.focus`); ``False`` runs the full pass on every slice.
    """

    model: Path | None = None
    device: str = "auto"
    batch_size: int | None = None
    largest_component: bool = True
    min_tumor_ml: float | None = None
    series_uid: str | None = None
    tumor_margin_mm: float | None = None
    tta: bool = True
    allow_thin: bool = False
    focus: bool = True

    def __post_init__(self) -> None:
        if self.min_tumor_ml is not None and not self.min_tumor_ml >= 0.0:
            raise ValueError(f"min_tumor_ml must be >= 0 (mL); got {self.min_tumor_ml}")
        if self.tumor_margin_mm is not None and not 0.0 <= self.tumor_margin_mm <= MAX_TUMOR_MARGIN_MM:
            raise ValueError(f"tumor_margin_mm must be 0 to {MAX_TUMOR_MARGIN_MM} mm; got {self.tumor_margin_mm}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}; got {self.device!r}")
        if self.batch_size is not None and not 1 <= self.batch_size <= 1024:
            raise ValueError(f"batch_size must be between 1 and 1024; got {self.batch_size}")
        if self.model is not None:
            object.__setattr__(self, "model", Path(self.model))


@dataclass(frozen=True)
class FocusReport:
    """Where the full inference ran: canonical slice ranges with their model-grid boxes, the share of the full
    work, and how many of the full pass' slices took the coarse pass' probabilities instead of a second run."""

    parts: tuple[FocusPart, ...]
    coarse_slices: int
    work_fraction: float
    reused_coarse_slices: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "parts": [{"slices": [p.z0, p.z1], "box_yx": list(p.box_yx)} for p in self.parts],
            "coarse_slices": self.coarse_slices,
            "reused_coarse_slices": self.reused_coarse_slices,
            "work_fraction": round(self.work_fraction, 4),
        }


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """Labels on the source grid plus everything the writers and the report need."""

    labels: Volume
    series: InputSeries
    model: ModelInfo
    provider: str
    measurements: Measurements
    timings_s: dict[str, float] = field(default_factory=dict)
    tumor_margin_mm: float = 0.0
    tta_shifts_px: tuple[tuple[int, int], ...] = NO_TTA
    focus: FocusReport | None = None
    plausibility: Plausibility | None = None
    min_tumor_ml: float = 0.0

    def report(self) -> dict[str, Any]:
        """The JSON report (no patient identifiers: UIDs, geometry, measurements, model, timings)."""
        m = self.measurements
        out: dict[str, Any] = {
            "litseg_version": litseg_version(),
            "input_format": "nifti" if isinstance(self.series, NiftiSeries) else "dicom",
            "series_instance_uid": self.series.series_instance_uid,
            "study_instance_uid": self.series.study_instance_uid,
            "slices": self.labels.shape_zyx[0],
            "shape_zyx": list(self.labels.shape_zyx),
            "spacing_mm": [round(s, 4) for s in self.labels.spacing_mm],
            "model": {
                "name": self.model.name,
                "version": self.model.version,
                "task": self.model.spec.task,
                "classes": list(self.model.spec.class_names),
            },
            "tumor_margin_mm": self.tumor_margin_mm,
            "min_tumor_ml": self.min_tumor_ml,
            "tta_shifts_px": [list(s) for s in self.tta_shifts_px],
            "focus": self.focus.as_dict() if self.focus is not None else None,
            "generated_uids": dict(self.series.generated_uids),
            "input_notes": list(self.series.notes),
            "provider": self.provider,
            # one definition everywhere: the liver includes its tumours (labels 1 and 2, the SEG's "Liver")
            "liver_volume_ml": round(m.liver_volume_ml, 2),
            "parenchyma_volume_ml": round(m.parenchyma_volume_ml, 2),
            "tumor_count": m.tumor_count,
            "tumor_volume_ml": round(m.tumor_volume_ml, 3),
            "tumor_burden_percent": round(m.tumor_burden_percent, 3),
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }
        if self.plausibility is not None:
            out["liver_plausible"] = self.plausibility.liver_plausible
            out["plausibility"] = self.plausibility.report()
        return out


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def default_formats(source: object) -> tuple[str, ...]:
    """The outputs written when none are asked for: SEG + NIfTI + JSON, or for a NIfTI input NIfTI + JSON +
    overlay."""
    return NIFTI_FORMATS if is_nifti_input(source) else DEFAULT_FORMATS


def check_formats(source: object, formats: Sequence[str]) -> None:
    """Refuse unknown formats (``OutputError``), and DICOM-only ones for a NIfTI input (``UsageError``)."""
    unknown = sorted(set(formats) - set(OUTPUT_FILES))
    if unknown or not formats:
        raise OutputError(f"unknown output format(s) {unknown or formats}; choose from {sorted(OUTPUT_FILES)}")
    refuse_dicom_only(source, formats)


def segment(
    source: SeriesSource | DicomSeries | NiftiSeries,
    config: RunConfig | None = None,
    model: Model | None = None,
    progress: ProgressCallback | None = None,
) -> SegmentationResult:
    """Segment the liver (and tumors) in one CT series.

    Parameters
    ----------
    source
        A folder, file(s) or pydicom datasets of one CT series, a NIfTI CT volume (``.nii``/``.nii.gz``), or
        an already read :class:`DicomSeries` or :class:`NiftiSeries`.
    config
        Run settings; defaults to :class:`RunConfig()`.
    model
        A loaded model to reuse across calls; when ``None`` it is loaded from ``config.model``.
    progress
        Called as ``progress(stage, done, total)`` during inference.

    Raises
    ------
    InputError, ModelError, DeviceError
        See :mod:`litseg.runtime.errors`; each carries the CLI exit code.
    """
    config = config or RunConfig()
    timer = _Timer()
    if model is None:
        with timer.stage("load_model"):
            model = Model(config.model, device=config.device)
    with timer.stage("read"):
        series = (
            source
            if isinstance(source, DicomSeries | NiftiSeries)
            else read_input(source, config.series_uid, config.allow_thin)
        )
    shifts = model.info.tta_shifts_px if config.tta else NO_TTA
    margin = model.info.tumor_margin_mm if config.tumor_margin_mm is None else config.tumor_margin_mm
    with timer.stage("model"):  # preprocess, inference and mapping back, overlapped batch by batch
        run = run_model(
            series.volume,
            model,
            config.batch_size or model.default_batch_size,
            shifts,
            config.focus,
            (lambda done, total: progress("inference", done, total)) if progress else None,
        )
    timer.timings.update({f"model_{k}": v for k, v in run.clock.seconds.items()})
    with timer.stage("postprocess"):
        labels = series.volume.with_array(run.labels)
        min_ml = model.info.min_tumor_ml if config.min_tumor_ml is None else config.min_tumor_ml
        min_voxels = math.ceil(min_ml / labels.voxel_volume_ml)  # 0 keeps every component
        labels = postprocess_labels(labels, config.largest_component, min_voxels, margin, out=run.labels)
        measurements = measure(labels)
    with timer.stage("plausibility"):  # from labels, HU and geometry only; warnings, never a refusal
        plausibility = assess(labels, series.volume)
    for warning in plausibility.warnings:
        log.warning("plausibility: %s [%s]", warning.message, warning.code)
    focus = FocusReport(run.focus.parts, len(run.focus.coarse), run.work_fraction, run.reused_slices)
    return SegmentationResult(
        labels,
        series,
        model.info,
        model.provider,
        measurements,
        timer.timings,
        margin,
        shifts,
        focus,
        plausibility,
        min_ml,
    )


def result_seg(result: SegmentationResult) -> hd.seg.Segmentation:
    """The DICOM SEG of ``result`` (flagged ``CHECK:`` with its plausibility warnings; new UIDs each call)."""
    if not isinstance(result.series, DicomSeries):
        raise OutputError("a DICOM SEG needs a DICOM input to reference; this result comes from a NIfTI volume")
    algorithm = AlgorithmInfo(result.model.name, result.model.version)
    codes = result.plausibility.codes if result.plausibility is not None else ()
    return build_seg(result.labels, result.series, result.model.spec.class_names, algorithm, codes)


def release_pixels(result: SegmentationResult) -> SegmentationResult:
    """The same result without the series' HU: a zero-stride placeholder of the same shape and geometry.

    The SEG, NIfTI, JSON and grey-mask writers read the labels and the headers only, so a caller that
    writes no overlay can drop the HU before writing and give back the largest array of a run (432 slices:
    216 MB) while the writers need memory of their own.
    """
    volume = result.series.volume
    placeholder = np.broadcast_to(np.zeros((), dtype=volume.array.dtype), volume.shape_zyx)
    series = dataclasses.replace(result.series, volume=volume.with_array(placeholder))
    return dataclasses.replace(result, series=series)


def write_results(
    result: SegmentationResult,
    out_dir: str | Path,
    formats: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the requested formats into ``out_dir`` atomically; returns the path of each file.

    ``None`` writes :func:`default_formats` of the input. A NIfTI input's label map is written on the input
    file's own grid and affine; SEG and mask DICOM are refused for it (no source instances to reference).
    ``overwrite=True`` replaces a folder of litseg's own results (it carries a ``.litseg`` marker naming the
    files litseg wrote); a folder holding any other file is refused.

    Raises
    ------
    UsageError
        ``out_dir`` equals, contains or lies inside the folder of a source file; SEG or mask DICOM asked of a
        NIfTI input.
    OutputError
        Unknown format, ``out_dir`` not writable, holding litseg's earlier results without ``overwrite``,
        or holding anything litseg did not write (never replaced, even with ``overwrite``).
    InputError
        The source headers cannot be turned into a valid DICOM output.
    """
    formats = default_formats(result.series) if formats is None else tuple(formats)
    check_formats(result.series, formats)
    out_dir = Path(out_dir)
    sources = sorted({str(Path(f).parent) for f in result.series.source_files if not f.startswith("<")})
    check_output_location(out_dir, sources, overwrite)
    report = result.report()
    timer = _Timer()

    def nifti(tmp: Path) -> None:
        with timer.stage("write_nifti"):
            if isinstance(result.series, NiftiSeries):  # back onto the input file's own grid and affine
                write_nifti_labels(result.labels, result.series, tmp / OUTPUT_FILES["nifti"])
            else:
                write_nifti(result.labels, tmp / OUTPUT_FILES["nifti"])

    def write_all(tmp: Path) -> None:
        algorithm = AlgorithmInfo(result.model.name, result.model.version)
        # The NIfTI's gzip runs in zlib, outside the GIL: on a second thread it costs no time beside the SEG,
        # which is Python (highdicom) throughout.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="litseg-nifti") as pool:
            compressing = pool.submit(nifti, tmp) if "nifti" in formats else None
            if "seg" in formats:  # check_formats refused it for NIfTI; result_seg refuses it too
                with timer.stage("write_seg"):
                    seg = result_seg(result)
                    seg.save_as(tmp / OUTPUT_FILES["seg"])
            if compressing is not None:
                compressing.result()
        if "mask-dicom" in formats:
            assert isinstance(result.series, DicomSeries)  # check_formats refused it for NIfTI
            with timer.stage("write_mask_dicom"):
                folder = tmp / OUTPUT_FILES["mask-dicom"]
                folder.mkdir()
                source = result.series.headers[0]
                identity = SeriesIdentity.beside(
                    source, int(source.get("SeriesNumber", 0) or 0) + 2000, f"litseg mask {algorithm.name}"
                )
                task = result.model.spec.task
                write_datasets(mask_datasets(result.labels, task, identity, result.labels.source_sop_uids), folder)
        if "overlay" in formats:
            with timer.stage("write_overlay"):
                warned = [w.message for w in result.plausibility.warnings] if result.plausibility else []
                write_overlay(result.series.volume, result.labels, tmp / OUTPUT_FILES["overlay"], warned)
        if "json" in formats:
            report["timings_s"].update({k: round(v, 4) for k, v in timer.timings.items()})
            report["outputs"] = [OUTPUT_FILES[f] for f in formats]
            write_json(report, tmp / OUTPUT_FILES["json"])

    try:
        commit_folder(out_dir, write_all, overwrite=overwrite, marked=True)
    except LitsegError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write results to {out_dir}: {exc}") from exc
    except Exception as exc:  # highdicom / pydicom reject source headers they cannot turn into valid DICOM
        raise InputError(
            f"cannot build the DICOM outputs from this series' headers: {type(exc).__name__}: {exc}; "
            "the source files hold values DICOM does not allow (nothing was written)"
        ) from exc
    result.timings_s.update(timer.timings)
    return {f: out_dir / OUTPUT_FILES[f] for f in formats}
