"""Numba kernels behind typed wrappers.

The ``_..._kernel`` functions are jitted lazily (each compiles on its first call, for the dtypes a run
uses) and release the GIL; the public wrappers check dtype, shape and contiguity so that a kernel never
sees an array it was not written for, and split the slices over a few threads (:func:`over_slices`).
There is no numba ``parallel=True`` here on purpose: parallel kernels take several seconds each to
compile on a fresh install, and numba's ``workqueue`` threading layer aborts the process when two
threads enter parallel regions at once; plain threads over GIL-free kernels are as fast on a few cores,
compile in a fraction of the time and are safe from any number of caller threads. These are the only
preprocessing primitives: the training-set builder and inference both call them, so there is no
train/serve skew.

Compiled code is cached on disk where numba can write (next to the package, else the user cache
folder, or ``NUMBA_CACHE_DIR``); on a read-only install with no writable home the kernels still work,
compiled in memory per process (:func:`jit`).

Resampling follows the pixel-centre convention (OpenCV, PIL, torch ``align_corners=False``): output
pixel ``o`` samples input coordinate ``(o + 0.5) * n_in / n_out - 0.5``. When shrinking, the triangle
(bilinear) filter is widened by the scale factor, as PIL and torch ``antialias=True`` do, so that
down-sampled CT does not alias its noise.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
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


def _require(array: npt.NDArray[np.generic], name: str, ndim: int, dtypes: tuple[type, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(array).__name__}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {array.shape}")
    if array.dtype.type not in dtypes:
        allowed = ", ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({allowed}); got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")


# ----- reorientation -------------------------------------------------------------------------------
REORIENT_DTYPES: tuple[type, ...] = (np.float32, np.int16, np.uint8, np.uint16, np.int32, np.float64)


def reorient(
    array: npt.NDArray[np.generic], transpose: bool, flip_z: bool, flip_y: bool, flip_x: bool
) -> npt.NDArray[np.generic]:
    """Transpose rows/columns (first, if asked), then flip the given axes of a ``(z, y, x)`` array.

    Returns a new C-contiguous array of the same dtype; shape ``(z, x, y)`` when transposed. (A strided
    numpy copy: memory-bound, no kernel to compile.)
    """
    _require(array, "array", 3, REORIENT_DTYPES)
    view = array.transpose(0, 2, 1) if transpose else array
    view = view[:: -1 if flip_z else 1, :: -1 if flip_y else 1, :: -1 if flip_x else 1]
    return np.ascontiguousarray(view)


# ----- resampling ----------------------------------------------------------------------------------
def resample_weights(n_in: int, n_out: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Sparse 1-D resampling weights: output ``o`` = sum over ``t`` of ``w[o, t] * in[start[o] + t]``.

    Triangle filter, widened by the scale when shrinking (anti-aliasing), renormalised at the borders
    (equivalent to edge clamping when enlarging). Matches PIL's BILINEAR resize.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resample sizes must be >= 1; got n_in={n_in}, n_out={n_out}")
    scale = n_in / n_out
    support = max(scale, 1.0)
    width = math.ceil(support) * 2 + 1
    starts = np.zeros(n_out, dtype=np.int64)
    weights = np.zeros((n_out, width), dtype=np.float64)
    for o in range(n_out):
        centre = (o + 0.5) * scale  # in input pixel units, pixel p spans [p, p + 1)
        lo = max(math.floor(centre - support), 0)
        hi = min(math.ceil(centre + support), n_in)
        taps = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((taps + 0.5 - centre) / support))
        total = w.sum()
        w = w / total if total > 0 else w
        starts[o] = lo
        weights[o, : len(w)] = w
    return starts, weights.astype(np.float32)


@jit
def _resample_kernel(src, dst, ys, yw, xs, xw, z0, z1):  # type: ignore[no-untyped-def]
    _, ny_in, _ = src.shape
    _, ny, nx = dst.shape
    ty = yw.shape[1]
    tx = xw.shape[1]
    rows = np.empty((ny_in, nx), dtype=np.float32)
    for z in range(z0, z1):
        for y in range(ny_in):  # along x first
            for o in range(nx):
                acc = np.float32(0.0)
                s = xs[o]
                for t in range(tx):
                    w = xw[o, t]
                    if w != 0.0:
                        acc += w * np.float32(src[z, y, s + t])
                rows[y, o] = acc
        for o in range(ny):  # then along y
            s = ys[o]
            for x in range(nx):
                acc = np.float32(0.0)
                for t in range(ty):
                    w = yw[o, t]
                    if w != 0.0:
                        acc += w * rows[s + t, x]
                dst[z, o, x] = acc


def resample_slices(array: npt.NDArray[np.generic], shape_yx: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Resample every slice of a ``(z, y, x)`` array to ``shape_yx`` (anti-aliased bilinear), float32."""
    _require(array, "array", 3, (np.float32, np.int16, np.uint8))
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    ys, yw = resample_weights(array.shape[1], ny)
    xs, xw = resample_weights(array.shape[2], nx)
    out = np.empty((array.shape[0], ny, nx), dtype=np.float32)
    over_slices(
        lambda z0, z1: _resample_kernel(array, out, ys, yw, xs, xw, z0, z1), array.shape[0], array[0].size + ny * nx
    )
    return out


@jit
def _resample_argmax_kernel(probs, dst, ys, yw, xs, xw, b0, b1):  # type: ignore[no-untyped-def]
    _, nc, ny_in, _ = probs.shape
    _, ny, nx = dst.shape
    ty = yw.shape[1]
    tx = xw.shape[1]
    rows = np.empty((nc, ny_in, nx), dtype=np.float32)
    for b in range(b0, b1):
        for c in range(nc):
            for y in range(ny_in):
                for o in range(nx):
                    acc = np.float32(0.0)
                    s = xs[o]
                    for t in range(tx):
                        w = xw[o, t]
                        if w != 0.0:
                            acc += w * probs[b, c, y, s + t]
                    rows[c, y, o] = acc
        for o in range(ny):
            s = ys[o]
            for x in range(nx):
                best = np.float32(-np.inf)
                label = 0
                for c in range(nc):
                    acc = np.float32(0.0)
                    for t in range(ty):
                        w = yw[o, t]
                        if w != 0.0:
                            acc += w * rows[c, s + t, x]
                    if acc > best:  # strict: ties go to the lower class index, as np.argmax
                        best = acc
                        label = c
                dst[b, o, x] = label


def resample_argmax(probs: npt.NDArray[np.float32], shape_yx: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Resample class probabilities ``(n, c, h, w)`` to ``shape_yx`` and take the argmax per pixel.

    Interpolating probabilities (not labels) gives smooth, unbiased boundaries on the native grid.
    Returns uint8 labels ``(n, *shape_yx)``.
    """
    _require(probs, "probs", 4, (np.float32,))
    if probs.shape[1] > 255:
        raise ValueError(f"at most 255 classes fit uint8 labels; got {probs.shape[1]}")
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    ys, yw = resample_weights(probs.shape[2], ny)
    xs, xw = resample_weights(probs.shape[3], nx)
    out = np.empty((probs.shape[0], ny, nx), dtype=np.uint8)
    over_slices(
        lambda b0, b1: _resample_argmax_kernel(probs, out, ys, yw, xs, xw, b0, b1),
        probs.shape[0],
        probs[0].size + ny * nx * probs.shape[1],
    )
    return out


# ----- intensity -----------------------------------------------------------------------------------
def window(array: npt.NDArray[np.float32], window_hu: tuple[float, float]) -> npt.NDArray[np.float32]:
    """Clip HU to ``window_hu = (lo, hi)`` and scale to [0, 1]; float32, same shape."""
    _require(array, "array", array.ndim, (np.float32,))
    lo, hi = float(window_hu[0]), float(window_hu[1])
    if not hi > lo:
        raise ValueError(f"window_hu must be (lo, hi) with hi > lo; got {window_hu}")
    out = np.clip(array, np.float32(lo), np.float32(hi))
    out -= np.float32(lo)
    out *= np.float32(1.0) / np.float32(hi - lo)
    return out


# ----- connected components ------------------------------------------------------------------------
# Inlined into its caller, whose cache holds it (no cache of its own: it must not need a writable folder).
@nb.njit(nogil=True)
def _find(parent, a):  # type: ignore[no-untyped-def]
    while parent[a] != a:
        parent[a] = parent[parent[a]]  # path halving
        a = parent[a]
    return a


@nb.njit(nogil=True)
def _union(parent, best, other):  # type: ignore[no-untyped-def]
    """Merge the set of provisional label ``other`` into ``best`` (0: none yet); returns the new root."""
    root = _find(parent, other)
    if best == 0 or root == best:
        return root
    if root < best:
        parent[best] = root
        return root
    parent[root] = best
    return best


@jit
def _label_kernel(mask, labels, parent):  # type: ignore[no-untyped-def]
    # Two-pass union-find on the raster order: pass 1 gives provisional labels and records which
    # touch (through the already visited x-1, y-1 and z-1 neighbours), pass 2 writes final labels
    # numbered by first appearance, as scipy.ndimage.label does. ``parent`` has room for one
    # provisional label per mask voxel (the most there can be).
    nz, ny, nx = mask.shape
    parent[0] = 0
    n = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not mask[z, y, x]:
                    continue
                best = np.int32(0)
                if x > 0 and labels[z, y, x - 1] != 0:
                    best = _union(parent, best, labels[z, y, x - 1])
                if y > 0 and labels[z, y - 1, x] != 0:
                    best = _union(parent, best, labels[z, y - 1, x])
                if z > 0 and labels[z - 1, y, x] != 0:
                    best = _union(parent, best, labels[z - 1, y, x])
                if best == 0:
                    n += 1
                    parent[n] = n
                    best = np.int32(n)
                labels[z, y, x] = best
    final = np.zeros(n + 1, dtype=np.int32)
    count = 0
    for a in range(1, n + 1):
        root = _find(parent, a)
        if root == a:
            count += 1
            final[a] = count
        else:
            final[a] = final[root]  # root < a, already numbered
    flat = labels.reshape(-1)
    for i in range(flat.size):
        flat[i] = final[flat[i]]
    return count


def label_components(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int32], int]:
    """Label the 6-connected components of a boolean ``(z, y, x)`` mask (as ``scipy.ndimage.label``).

    Returns ``(labels, count)``: int32 labels 1..count in scan order, 0 outside the mask.
    """
    _require(mask, "mask", 3, (np.bool_,))
    labels = np.zeros(mask.shape, dtype=np.int32)
    parent = np.empty(int(np.count_nonzero(mask)) + 1, dtype=np.int32)
    count = int(_label_kernel(mask, labels, parent))
    return labels, count


def component_stats(
    components: npt.NDArray[np.int32], count: int, labels: npt.NDArray[np.uint8], label: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per component (index 0 = outside): its size in voxels and how many of its voxels have ``label``."""
    _require(components, "components", 3, (np.int32,))
    _require(labels, "labels", 3, (np.uint8,))
    if components.shape != labels.shape:
        raise ValueError(f"components {components.shape} and labels {labels.shape} must have one shape")
    flat = components.reshape(-1)
    sizes = np.bincount(flat, minlength=count + 1).astype(np.int64)
    hits = np.bincount(flat[labels.reshape(-1) == label], minlength=count + 1).astype(np.int64)
    return sizes, hits


def keep_components(
    labels: npt.NDArray[np.uint8], components: npt.NDArray[np.int32], keep: npt.NDArray[np.bool_]
) -> npt.NDArray[np.uint8]:
    """``labels`` where ``keep[component]`` is true, 0 elsewhere (a new array)."""
    _require(labels, "labels", 3, (np.uint8,))
    _require(components, "components", 3, (np.int32,))
    _require(keep, "keep", 1, (np.bool_,))
    if keep.size <= int(components.max(initial=0)):
        raise ValueError(f"keep has {keep.size} entries; components go up to {int(components.max())}")
    return np.where(keep[components], labels, np.uint8(0))


@jit
def _grow_label_kernel(labels, out, into, grow, r_y, r_x, radius_mm, dy_mm, dx_mm, z0, z1):  # type: ignore[no-untyped-def]
    _, ny, nx = labels.shape
    r2 = radius_mm * radius_mm
    for k in range(z0, z1):
        has_grow = False
        for j in range(ny):
            for i in range(nx):
                out[k, j, i] = labels[k, j, i]
                if labels[k, j, i] == grow:
                    has_grow = True
        if not has_grow:  # most slices hold no tumor: nothing to search
            continue
        for j in range(ny):
            for i in range(nx):
                if labels[k, j, i] != into:
                    continue
                near = False
                for dj in range(-r_y, r_y + 1):
                    jj = j + dj
                    if jj < 0 or jj >= ny:
                        continue
                    for di in range(-r_x, r_x + 1):
                        ii = i + di
                        if 0 <= ii < nx and labels[k, jj, ii] == grow and (dj * dy_mm) ** 2 + (di * dx_mm) ** 2 <= r2:
                            near = True
                            break
                    if near:
                        break
                if near:
                    out[k, j, i] = grow


def grow_label(
    labels: npt.NDArray[np.uint8], grow: int, into: int, radius_mm: float, spacing_yx_mm: tuple[float, float]
) -> npt.NDArray[np.uint8]:
    """Relabel ``into`` voxels within ``radius_mm`` (in-plane, centre to centre) of a ``grow`` voxel of the
    same slice as ``grow``; other voxels are unchanged (a new array). Growth reads the input labels only
    (one step, not iterated)."""
    _require(labels, "labels", 3, (np.uint8,))
    dy_mm, dx_mm = (float(v) for v in spacing_yx_mm)
    if not (dy_mm > 0 and dx_mm > 0 and radius_mm >= 0):
        raise ValueError(f"spacing_yx_mm must be > 0 and radius_mm >= 0; got {spacing_yx_mm}, {radius_mm}")
    out = np.empty_like(labels)
    r_y, r_x = int(radius_mm / dy_mm), int(radius_mm / dx_mm)
    args = (np.uint8(into), np.uint8(grow), r_y, r_x, float(radius_mm), dy_mm, dx_mm)
    over_slices(lambda z0, z1: _grow_label_kernel(labels, out, *args, z0, z1), labels.shape[0], labels[0].size)
    return out


def warmup() -> float:
    """Compile (or load from the cache) every kernel a segmentation run uses; returns the seconds taken.

    ``litseg-run --warmup`` calls it when a container image is built, so that the first real run does
    not pay for compilation.
    """
    start = time.perf_counter()
    resample_slices(np.zeros((1, 4, 4), np.float32), (2, 2))
    resample_argmax(np.zeros((1, 2, 4, 4), np.float32), (2, 2))
    label_components(np.zeros((1, 2, 2), np.bool_))
    grow_label(np.zeros((1, 2, 2), np.uint8), 2, 1, 1.0, (1.0, 1.0))
    return time.perf_counter() - start
