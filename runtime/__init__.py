"""litseg runtime: CT DICOM series or NIfTI volume in, geometry-true liver/tumor segmentation out (no torch).

The public API::

    segment(source, config=None, model=None, progress=None) -> SegmentationResult
    write_results(result, out_dir, formats=("seg", "nifti", "json")) -> dict[str, Path]
    release_pixels(result) -> SegmentationResult  (without the HU: less memory while writing, no overlay)
    Segmenter(config=None, model=None)(source) -> SegmentationResult; .seg_dataset(result) -> SEG dataset
        (thread-safe, in memory: for embedding in a service; docs/embedding.md)

A DICOM node on top of this API is ``litseg.runtime.node`` (``litseg-serve``), the archive batch on Ray is
``litseg.runtime.batch`` (``litseg-batch``); the runtime never imports either.
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import RunConfig, SegmentationResult, default_model_path, release_pixels, segment, write_results
    from .errors import DeviceError, InputError, LitsegError, ModelError, OutputError
    from .model import Model, ModelInfo
    from .nifti_series import NiftiSeries, read_nifti_series
    from .plausibility import Plausibility, PlausibilityWarning, assess
    from .segmenter import Segmenter
    from .series import DicomSeries, read_series
    from .spec import PreprocessSpec
    from .volume import Volume

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Where each public name lives. They are imported on first use (PEP 562), so that importing a light module
#: of the package (``litseg.runtime.launch``, ``errors``) does not load numba, onnxruntime and highdicom:
#: litseg-run's launcher answers Ctrl-C during those seconds with one line.
_PUBLIC = {
    "RunConfig": "api",
    "SegmentationResult": "api",
    "default_model_path": "api",
    "release_pixels": "api",
    "segment": "api",
    "write_results": "api",
    "DeviceError": "errors",
    "InputError": "errors",
    "LitsegError": "errors",
    "ModelError": "errors",
    "OutputError": "errors",
    "Model": "model",
    "ModelInfo": "model",
    "NiftiSeries": "nifti_series",
    "read_nifti_series": "nifti_series",
    "Plausibility": "plausibility",
    "PlausibilityWarning": "plausibility",
    "assess": "plausibility",
    "Segmenter": "segmenter",
    "DicomSeries": "series",
    "read_series": "series",
    "PreprocessSpec": "spec",
    "Volume": "volume",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "DeviceError",
    "DicomSeries",
    "InputError",
    "LitsegError",
    "Model",
    "ModelError",
    "ModelInfo",
    "NiftiSeries",
    "OutputError",
    "Plausibility",
    "PlausibilityWarning",
    "PreprocessSpec",
    "RunConfig",
    "SegmentationResult",
    "Segmenter",
    "Volume",
    "assess",
    "default_model_path",
    "read_nifti_series",
    "read_series",
    "release_pixels",
    "segment",
    "write_results",
]
