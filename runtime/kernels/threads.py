"""Kernel infrastructure: numba compilation with a cache where one can be written, threads over slices in one
place, and the argument checks every public wrapper runs before a kernel sees an array."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

#: Below this many output voxels per call a kernel runs on the calling thread only.
MIN_PARALLEL_VOXELS = 1 << 18


def jit(fn: Callable[..., Any]) -> Any:
    """``numba.njit(nogil=True)`` with an on-disk cache when one can be written, else without one.

    numba raises "cannot cache function ... no locator available" at decoration time when neither the
    package folder, the user cache folder nor ``NUMBA_CACHE_DIR`` is writable (a read-only container
    with no home); litseg must still run there, compiling in memory.
    """
    try:
        return nb.njit(cache=True, nogil=True)(fn)
    except RuntimeError as exc:
        log.debug("numba cache unavailable for %s (%s); compiling in memory", fn.__name__, exc)
        return nb.njit(cache=False, nogil=True)(fn)


def worker_threads() -> int:
    """Threads for the kernels: ``LITSEG_THREADS`` if set, else the CPUs this process may use."""
    env = os.environ.get("LITSEG_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def over_slices(run: Callable[[int, int], object], n: int, voxels_per_item: int) -> None:
    """Call ``run(start, stop)`` on contiguous chunks of ``range(n)``, one chunk per worker thread.

    The kernels release the GIL, so the chunks run in parallel; small jobs stay on the calling thread.
    Each call owns its threads: nothing is shared between callers, so any number of threads may call.
    """
    threads = min(worker_threads(), n, max(1, (n * voxels_per_item) // MIN_PARALLEL_VOXELS))
    if threads <= 1:
        run(0, n)
        return
    bounds = np.linspace(0, n, threads + 1).round().astype(int)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="litseg-kernel") as pool:
        futures = [pool.submit(run, int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
        for future in futures:
            future.result()  # re-raises a kernel's error in the caller


def require(array: npt.NDArray[np.generic], name: str, ndim: int, dtypes: tuple[type, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(array).__name__}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {array.shape}")
    if array.dtype.type not in dtypes:
        allowed = ", ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({allowed}); got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
