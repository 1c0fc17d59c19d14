"""Numba kernels behind typed wrappers.

The ``_..._kernel`` functions are jitted lazily (each compiles on its first call, for the dtypes a run
uses) and release the GIL; the public wrappers check dtype, shape and contiguity so that a kernel never
sees an array it was not written for, and split the slices over a few threads (:func:`over_slices`).
There is no numba ``parallel=True`` here on purpose: parallel kernels take several seconds each to
compile on a fresh install, and numba's ``workqueue`` threading layer aborts the process when two
threads enter parallel regions at once; plain threads over GIL-free kernels are as fast on a few cores,
compile in a fraction of the time and are safe from any number of caller threads. For the same reason the
kernels allocate nothing and call no numpy function (numba types and compiles each such overload before the
kernel itself: a large share of the first run's compilation); the wrappers pass scratch arrays,
one set per thread. These are the only preprocessing primitives: the training-set builder and inference
both call them, so there is no train/serve skew.

Compiled code is cached on disk where numba can write (next to the package, else the user cache
folder, or ``NUMBA_CACHE_DIR``); on a read-only install with no writable home the kernels still work,
compiled in memory per process (:func:`jit`).

Resampling follows the pixel-centre convention (OpenCV, PIL, torch ``align_corners=False``): output
pixel ``o`` samples input coordinate ``(o + 0.5) * n_in / n_out - 0.5``. When shrinking, the triangle
(bilinear) filter is widened by the scale factor, as PIL and torch ``antialias=True`` do, so that
down-sampled CT does not alias its noise.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from .components import (
    Components,
    find_components,
    grow_label,
    relabel_components,
)
from .fused import preprocess_slices
from .resample import (
    REORIENT_DTYPES,
    reorient,
    resample_argmax,
    resample_slices,
    resample_weights,
    window,
)
from .rescale import STORED_DTYPES, rescale_to_hu
from .threads import MIN_PARALLEL_VOXELS, jit, over_slices, require, worker_threads

log = logging.getLogger(__name__)

__all__ = [
    "MIN_PARALLEL_VOXELS",
    "REORIENT_DTYPES",
    "STORED_DTYPES",
    "Components",
    "find_components",
    "grow_label",
    "jit",
    "over_slices",
    "preprocess_slices",
    "relabel_components",
    "reorient",
    "require",
    "resample_argmax",
    "resample_slices",
    "resample_weights",
    "rescale_to_hu",
    "warm_in_background",
    "warmup",
    "window",
    "worker_threads",
]


def warmup() -> float:
    """Compile (or load from the cache) every kernel a segmentation run uses; returns the seconds taken.

    ``litseg-run --warmup`` calls it when a container image is built, so that the first real run does
    not pay for compilation.
    """
    start = time.perf_counter()
    for stored in (np.uint16, np.int16):  # what CT decoders return
        rescale_to_hu(np.zeros((2, 2), stored), np.zeros((2, 2), np.int16), 1, -1024, -1024, None)
    for dtype in (np.int16, np.float32):
        hu = np.zeros((1, 4, 4), dtype)
        hu.flags.writeable = False  # as a run passes it: a Volume's array (numba compiles per writability)
        preprocess_slices(hu, (False, False, False, False), (2, 2), (0.0, 1.0), -1024.0)
    _warm_after_inference()
    return time.perf_counter() - start


def _warm_after_inference() -> None:
    resample_argmax(np.zeros((1, 2, 4, 4), np.float32), (2, 2))
    box = np.zeros((2, 3, 3), np.uint8)[:, 1:, 1:]  # post-processing works on views (a bounding box)
    relabel_components(box, find_components(box, (1, 255), 1), np.full(1, 255, np.uint8))
    grow_label(box, 2, 1, 1.0, (1.0, 1.0), in_place=True)


def warm_in_background() -> threading.Thread:
    """Compile (or load) the kernels that map labels back and post-process them on a background thread.

    A run calls it once its preprocessing kernel is ready (numba compiles under one lock: started earlier, it
    would hold up the preprocessing): on a fresh install, or in a read-only container that compiles in every
    process, these kernels (seconds of compilation) then compile while onnxruntime runs the model, outside
    the GIL, instead of after it. Where they are compiled already it costs a few
    milliseconds; a kernel called while it compiles waits for numba's compiler lock, then runs.
    """

    def run() -> None:
        try:
            _warm_after_inference()
        except Exception as exc:  # never fatal: the stage that needs a kernel compiles it itself
            log.debug("background compilation failed: %s", exc)

    # Not a daemon: the interpreter waits for it before it tears down numba and llvmlite. A run that needs
    # none of these kernels (no liver found) can end while they compile; a daemon thread then kept calling
    # into LLVM (outside the GIL) while the exiting interpreter freed its objects: 4 of 18 such cold runs
    # crashed (segfault or an LLVM assertion) once the exit had become fast. The wait is the compilation's
    # rest, on a fresh install only, and fills the cache for the next run.
    thread = threading.Thread(target=run, name="litseg-warm", daemon=False)
    thread.start()
    return thread
