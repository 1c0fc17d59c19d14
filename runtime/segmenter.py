"""Embedding litseg in a service: a :class:`Segmenter` holds one loaded model and segments series in memory.

Thread safety, by construction: a ``Segmenter`` has no mutable state after ``__init__``. Its model is an
onnxruntime ``InferenceSession``, whose ``run`` may be called from several threads at once; every call
builds its own arrays, result and SEG dataset. So one ``Segmenter`` can serve a thread pool, a web
handler or a DICOM node's workers; the only shared cost is the model's memory. Nothing is printed and
nothing is written to disk: results are returned as objects (labels with geometry, the report as a
dict, the SEG as a pydicom dataset), and the caller decides where they go.

Example::

    from litseg.runtime.segmenter import Segmenter

    segmenter = Segmenter()                    # the bundled model, GPU when usable
    result = segmenter(datasets_or_paths)      # -> SegmentationResult
    seg = segmenter.seg_dataset(result)        # -> highdicom Segmentation (a pydicom Dataset)
    report = result.report()                   # -> dict, no patient identifiers
"""

from __future__ import annotations

import dataclasses

import highdicom as hd

from . import kernels
from .api import ProgressCallback, RunConfig, SegmentationResult, default_model_path, result_seg, segment
from .model import Model
from .series import DicomSeries, SeriesSource


class Segmenter:
    """One loaded model, callable on CT series; safe to share between threads.

    Parameters
    ----------
    config
        Run settings (model path, device, batch size, post-processing); ``None`` uses the defaults
        (the bundled model). ``config.series_uid`` is ignored: pass it per call.
    model
        An already loaded :class:`Model` to wrap instead of loading ``config.model``.

    Raises
    ------
    ModelError, DeviceError
        The model cannot be loaded on the requested device.
    """

    def __init__(self, config: RunConfig | None = None, model: Model | None = None) -> None:
        self._config = config or RunConfig()
        self._model = model or Model(self._config.model or default_model_path(), device=self._config.device)

    @property
    def config(self) -> RunConfig:
        return self._config

    @property
    def model(self) -> Model:
        return self._model

    def prepare(self) -> float:
        """Compile (or load from numba's cache) every kernel a run uses; returns the seconds taken.

        A service calls it once at start, e.g. on a thread while it waits for work (the DICOM node does), so
        that its first series does not wait for a fresh install's compilation (seconds). Safe
        beside running segmentations: a kernel they need meanwhile waits for numba's compiler lock.
        """
        return kernels.warmup()

    def __call__(
        self,
        source: SeriesSource | DicomSeries,
        series_uid: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> SegmentationResult:
        """Segment one CT series: paths, a folder, in-memory pydicom datasets or a read :class:`DicomSeries`.

        Parameters
        ----------
        source
            What :func:`litseg.runtime.segment` accepts.
        series_uid
            SeriesInstanceUID to pick when ``source`` holds several CT series.
        progress
            Called as ``progress(stage, done, total)`` from the calling thread.

        Returns
        -------
        SegmentationResult
            ``labels`` (uint8 Volume on the source grid), ``series``, ``measurements``, ``report()``.

        Raises
        ------
        InputError
            The series cannot be read as one regular CT volume.
        """
        config = dataclasses.replace(self._config, series_uid=series_uid)
        return segment(source, config, model=self._model, progress=progress)

    def seg_dataset(self, result: SegmentationResult) -> hd.seg.Segmentation:
        """The DICOM SEG of ``result``, in memory (referencing every source instance; new UIDs each call)."""
        return result_seg(result)
