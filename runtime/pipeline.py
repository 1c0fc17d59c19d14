"""The model stage as a pipeline of slice batches: preprocess, infer, map back, overlapped.

Each stage stays a pure function over arrays (``kernels.preprocess_slices``, ``Model.predict_volume``,
``kernels.resample_argmax``); this module is the one place that composes them with concurrency, as
nnU-Net's predictor keeps its export workers apart from the network code: while onnxruntime runs batch
*i* on the calling thread, one worker prepares batch *i + 1* and another maps batch *i - 1* back onto the
native grid. At most one batch waits on either side, so memory stays bounded whatever the series length.
The focus (:mod:`~litseg.runtime.focus`) decides which slices and which in-plane box the full pass sees.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import kernels
from .focus import (
    MIN_SLICES_FOR_FOCUS,
    Box,
    Focus,
    body_box,
    everything,
    find_focus,
    shows_foreground,
    work_fraction,
)
from .geometry import Reorientation, canonical_reorientation
from .hu import AIR_HU, TISSUE_HU
from .model import NO_TTA, Model
from .preprocess import kernel_input
from .volume import Volume

#: Slices per pipeline step (at least one inference batch): enough that the preprocessing and mapping-back
#: kernels' per-call costs stay small beside their work, few enough that a step's probabilities are small.
CHUNK_SLICES = 8

ProgressFn = Callable[[int, int], None]


@dataclass
class StageClock:
    """Seconds spent per stage (summed over batches and threads) and the focus used."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass(frozen=True)
class ModelRun:
    """What the model stage returns: uint8 labels on the native grid, the focus, the share of the full model
    work its blocks kept, how many of their slices took the coarse pass' probabilities, and the stage clock."""

    labels: npt.NDArray[np.uint8]
    focus: Focus
    clock: StageClock
    work_fraction: float = 1.0
    reused_slices: int = 0


def native_region(box: tuple[int, int], n_model: int, n_native: int) -> tuple[int, int]:
    """Native rows (or columns) whose resampling taps can reach model-grid rows ``[lo, hi)``."""
    lo, hi = box
    scale = n_model / n_native  # model pixels per native pixel
    support = max(scale, 1.0)
    first = math.floor((lo - support) / scale - 0.5) - 1
    last = math.ceil((hi + support) / scale - 0.5) + 1
    return max(0, first), min(n_native, last + 1)


class _Stages:
    """The three stage functions of one run, bound to its volume, model and focus."""

    def __init__(self, volume: Volume, model: Model, reorientation: Reorientation, clock: StageClock) -> None:
        self.native = kernel_input(volume)
        self.model = model
        self.spec = model.spec
        self.reorientation = reorientation
        self.clock = clock
        self.canonical_shape = reorientation.canonical_shape(volume.shape_zyx)
        self.reused = 0  # full-pass slices whose coarse-pass probabilities were taken as they are

    def prepare(self, z0: int, z1: int) -> npt.NDArray[np.float32]:
        start = time.perf_counter()
        image = kernels.preprocess_slices(
            self.native, self.reorientation.flags, self.spec.target_shape_yx, self.spec.window_hu, AIR_HU, (z0, z1)
        )
        self.clock.add("preprocess", time.perf_counter() - start)
        return image

    def prepare_slices(self, slices: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return np.concatenate([self.prepare(int(z), int(z) + 1) for z in slices])

    def body(self, slices: npt.NDArray[np.int64]) -> Box | None:
        """The body's box on the model grid over the given canonical slices (:func:`~.focus.body_box`)."""
        nz = self.native.shape[0]
        seen = np.zeros((1, *self.native.shape[1:]), dtype=np.uint8)
        for z in slices:
            seen[0] |= self.native[nz - 1 - int(z) if self.reorientation.flip_z else int(z)] > TISSUE_HU
        return body_box(self.reorientation.apply_array(seen)[0] > 0, self.spec.target_shape_yx)

    def infer(
        self,
        image: npt.NDArray[np.float32],
        box: tuple[int, int, int, int],
        shifts: tuple[tuple[int, int], ...],
        batch_size: int,
    ) -> npt.NDArray[np.float32]:
        """Probabilities on the whole model grid; outside ``box`` they are background."""
        y0, y1, x0, x1 = box
        start = time.perf_counter()
        crop = np.ascontiguousarray(image[:, y0:y1, x0:x1])
        probs = self.model.predict_volume(crop, batch_size=batch_size, shifts=shifts)
        self.clock.add("inference", time.perf_counter() - start)
        ny, nx = self.spec.target_shape_yx
        if (y1 - y0, x1 - x0) == (ny, nx):
            return probs
        full = np.zeros((image.shape[0], probs.shape[1], ny, nx), dtype=np.float32)
        full[:, 0] = 1.0
        full[:, :, y0:y1, x0:x1] = probs
        return full

    def infer_block(
        self,
        image: npt.NDArray[np.float32],
        first: int,
        box: tuple[int, int, int, int],
        shifts: tuple[tuple[int, int], ...],
        batch_size: int,
        known: dict[int, npt.NDArray[np.float32]],
    ) -> npt.NDArray[np.float32]:
        """:meth:`infer` of canonical slices ``first, first + 1, ...``, taking (and dropping) those in ``known``
        as they are."""
        reused = [k for k in range(len(image)) if first + k in known]
        if not reused:
            return self.infer(image, box, shifts, batch_size)
        rest = [k for k in range(len(image)) if first + k not in known]
        probs = np.empty((len(image), len(self.spec.class_names), *self.spec.target_shape_yx), dtype=np.float32)
        if rest:
            probs[rest] = self.infer(np.ascontiguousarray(image[rest]), box, shifts, batch_size)
        for k in reused:
            probs[k] = known.pop(first + k)
        self.reused += len(reused)
        return probs

    def restore(
        self, probs: npt.NDArray[np.float32], out: npt.NDArray[np.uint8], box: tuple[int, int, int, int]
    ) -> None:
        start = time.perf_counter()
        _, ny_c, nx_c = self.canonical_shape
        ny, nx = self.spec.target_shape_yx
        region = (*native_region(box[:2], ny, ny_c), *native_region(box[2:], nx, nx_c))
        kernels.resample_argmax(probs, (ny_c, nx_c), out=out, region_yx=region)
        self.clock.add("restore", time.perf_counter() - start)


def run_model(
    volume: Volume,
    model: Model,
    batch_size: int = 8,
    shifts: tuple[tuple[int, int], ...] = NO_TTA,
    use_focus: bool = True,
    progress: ProgressFn | None = None,
) -> ModelRun:
    """Labels (argmax of the model's probabilities) on the native grid of ``volume``.

    Parameters
    ----------
    volume
        HU volume (int16 or float32 preferred), any axial orientation.
    model
        The loaded model; its spec gives the grid and the window.
    batch_size
        Slices per inference call (the pipeline steps over max(:data:`CHUNK_SLICES`, batch_size) slices).
    shifts
        Test-time shifts of the full pass (the coarse pass is one unshifted pass).
    use_focus
        Run the coarse pass and limit the full pass to its focus; ``False`` runs everything.
    progress
        ``progress(done, total)`` over the full pass' slices.
    """
    clock = StageClock()
    reorientation = canonical_reorientation(volume.affine_lps)
    stages = _Stages(volume, model, reorientation, clock)
    nz = volume.shape_zyx[0]
    grid = model.spec.target_shape_yx
    full_box = (0, grid[0], 0, grid[1])
    start = time.perf_counter()
    # The coarse pass' probabilities of slices where it saw liver, kept for the full pass to take as they are
    # when it runs one unshifted pass too: those slices need no second inference (a quarter of the full
    # pass' slices on a 2.5 mm series, where every 4th slice is a coarse one).
    known: dict[int, npt.NDArray[np.float32]] = {}

    def coarse_labels(picks: npt.NDArray[np.int64], box: Box) -> npt.NDArray[np.uint8]:
        images = stages.prepare_slices(picks)
        kernels.warm_in_background()  # the later stages' kernels compile while the coarse pass runs
        probs = stages.infer(images, box, NO_TTA, batch_size)
        labels: npt.NDArray[np.uint8] = np.argmax(probs, axis=1).astype(np.uint8)
        if shifts == NO_TTA:
            for k in np.flatnonzero(shows_foreground(labels)):  # the slices the focus will keep as seen
                known[int(picks[k])] = probs[k].copy()
        return labels

    # The whole grid, always, where the graph takes nothing else, and on a GPU: there every new input shape
    # costs a cuDNN algorithm search (TensorRT: an engine build), far more than a box saves, so every call
    # is (batch_size, 1, 256, 256) and nothing is planned twice. The focus keeps its slices.
    whole_grid = not model.any_size or model.provider != "CPUExecutionProvider"
    coarse_pass = use_focus and nz >= MIN_SLICES_FOR_FOCUS
    if use_focus:
        focus = find_focus(nz, volume.spacing_mm[2], grid, coarse_labels, None if whole_grid else stages.body)
    else:
        focus = everything(nz, grid)
    if whole_grid:
        focus = focus.with_box(full_box)
    clock.add("focus", time.perf_counter() - start)
    labels = np.zeros(stages.canonical_shape, dtype=np.uint8)
    batches = focus.blocks(max(CHUNK_SLICES, batch_size))  # pipeline steps, run in calls of batch_size
    done = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="litseg-pipeline") as pool:
        ahead: Future[npt.NDArray[np.float32]] | None = None
        if batches:
            ahead = pool.submit(stages.prepare, *batches[0][:2])
        behind: Future[None] | None = None
        for n, (a, b, box) in enumerate(batches):
            assert ahead is not None  # submitted for every batch before its turn
            image = ahead.result()
            if n == 0 and not coarse_pass:  # no coarse pass: the later kernels compile beside the full pass
                kernels.warm_in_background()  # (after the preprocessing kernel: one compiler lock for both)
            ahead = pool.submit(stages.prepare, *batches[n + 1][:2]) if n + 1 < len(batches) else None
            probs = stages.infer_block(image, a, box, shifts, batch_size, known)
            if behind is not None:
                behind.result()
            behind = pool.submit(stages.restore, probs, labels[a:b], box)
            done += b - a
            if progress is not None:
                progress(done, focus.slices)
        if behind is not None:
            behind.result()
    native_labels = np.asarray(reorientation.inverse().apply_array(labels), dtype=np.uint8)
    return ModelRun(native_labels, focus, clock, work_fraction(batches, nz, grid), stages.reused)
