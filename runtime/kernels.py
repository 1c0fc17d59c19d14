"""Numba kernels behind typed wrappers.

The ``_..._kernel`` functions are jitted (cached on disk, parallel over slices where that pays); the
public wrappers check dtype, shape and contiguity so that a kernel never sees an array it was not
written for. These are the only preprocessing primitives: the training-set builder and inference both
call them, so there is no train/serve skew.

Resampling follows the pixel-centre convention (OpenCV, PIL, torch ``align_corners=False``): output
pixel ``o`` samples input coordinate ``(o + 0.5) * n_in / n_out - 0.5``. When shrinking, the triangle
(bilinear) filter is widened by the scale factor, as PIL and torch ``antialias=True`` do, so that
down-sampled CT does not alias its noise.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import numpy.typing as npt


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
@nb.njit(parallel=True, cache=True, nogil=True)
def _reorient_kernel(src, dst, transpose, flip_z, flip_y, flip_x):  # type: ignore[no-untyped-def]
    nz, ny, nx = dst.shape
    for zp in nb.prange(nz):
        z = np.int64(zp)  # prange indices are unsigned; keep index arithmetic signed
        sz = nz - 1 - z if flip_z else z
        for y in range(ny):
            yy = ny - 1 - y if flip_y else y
            for x in range(nx):
                xx = nx - 1 - x if flip_x else x
                if transpose:
                    dst[z, y, x] = src[sz, xx, yy]
                else:
                    dst[z, y, x] = src[sz, yy, xx]


REORIENT_DTYPES: tuple[type, ...] = (np.float32, np.int16, np.uint8, np.uint16, np.int32, np.float64)


def reorient(
    array: npt.NDArray[np.generic], transpose: bool, flip_z: bool, flip_y: bool, flip_x: bool
) -> npt.NDArray[np.generic]:
    """Transpose rows/columns (first, if asked), then flip the given axes of a ``(z, y, x)`` array.

    Returns a new C-contiguous array of the same dtype; shape ``(z, x, y)`` when transposed.
    """
    _require(array, "array", 3, REORIENT_DTYPES)
    nz, ny, nx = array.shape
    out_shape = (nz, nx, ny) if transpose else (nz, ny, nx)
    out = np.empty(out_shape, dtype=array.dtype)
    _reorient_kernel(array, out, transpose, flip_z, flip_y, flip_x)
    return out


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


@nb.njit(parallel=True, cache=True, nogil=True)
def _resample_kernel(src, dst, ys, yw, xs, xw):  # type: ignore[no-untyped-def]
    nz, ny_in, _ = src.shape
    _, ny, nx = dst.shape
    ty = yw.shape[1]
    tx = xw.shape[1]
    for z in nb.prange(nz):
        rows = np.empty((ny_in, nx), dtype=np.float32)
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
    _resample_kernel(array, out, ys, yw, xs, xw)
    return out


@nb.njit(parallel=True, cache=True, nogil=True)
def _resample_argmax_kernel(probs, dst, ys, yw, xs, xw):  # type: ignore[no-untyped-def]
    nb_, nc, ny_in, _ = probs.shape
    _, ny, nx = dst.shape
    ty = yw.shape[1]
    tx = xw.shape[1]
    for b in nb.prange(nb_):
        rows = np.empty((nc, ny_in, nx), dtype=np.float32)
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
    _resample_argmax_kernel(probs, out, ys, yw, xs, xw)
    return out


# ----- intensity -----------------------------------------------------------------------------------
@nb.njit(parallel=True, cache=True, nogil=True)
def _window_kernel(src, dst, lo, hi):  # type: ignore[no-untyped-def]
    scale = np.float32(1.0) / np.float32(hi - lo)
    flat_src = src.reshape(-1)
    flat_dst = dst.reshape(-1)
    for n in nb.prange(flat_src.size):
        v = min(max(np.float32(flat_src[n]), np.float32(lo)), np.float32(hi))
        flat_dst[n] = (v - np.float32(lo)) * scale


def window(array: npt.NDArray[np.float32], window_hu: tuple[float, float]) -> npt.NDArray[np.float32]:
    """Clip HU to ``window_hu = (lo, hi)`` and scale to [0, 1]; float32, same shape."""
    _require(array, "array", array.ndim, (np.float32,))
    lo, hi = float(window_hu[0]), float(window_hu[1])
    if not hi > lo:
        raise ValueError(f"window_hu must be (lo, hi) with hi > lo; got {window_hu}")
    out = np.empty_like(array)
    _window_kernel(array, out, lo, hi)
    return out


# ----- connected components ------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True, inline="always")
def _find(parent, a):  # type: ignore[no-untyped-def]
    while parent[a] != a:
        parent[a] = parent[parent[a]]  # path halving
        a = parent[a]
    return a


@nb.njit(cache=True, nogil=True)
def _label_kernel(mask, labels):  # type: ignore[no-untyped-def]
    # Two-pass union-find on the raster order: pass 1 gives provisional labels and records which
    # touch (through the already visited x-1, y-1 and z-1 neighbours), pass 2 writes final labels
    # numbered by first appearance, as scipy.ndimage.label does.
    nz, ny, nx = mask.shape
    parent = np.empty(1024, dtype=np.int32)
    parent[0] = 0
    n = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not mask[z, y, x]:
                    continue
                best = 0
                for d in range(3):
                    if d == 0:
                        if x == 0:
                            continue
                        other = labels[z, y, x - 1]
                    elif d == 1:
                        if y == 0:
                            continue
                        other = labels[z, y - 1, x]
                    else:
                        if z == 0:
                            continue
                        other = labels[z - 1, y, x]
                    if other == 0:
                        continue
                    root = _find(parent, other)
                    if best == 0:
                        best = root
                    elif root != best:
                        if root < best:
                            parent[best] = root
                            best = root
                        else:
                            parent[root] = best
                if best == 0:
                    n += 1
                    if n == parent.size:
                        bigger = np.empty(parent.size * 2, dtype=np.int32)
                        bigger[:n] = parent[:n]
                        parent = bigger
                    parent[n] = n
                    best = n
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
    count = int(_label_kernel(mask, labels))
    return labels, count


@nb.njit(cache=True, nogil=True)
def _component_stats_kernel(components, labels, count, label):  # type: ignore[no-untyped-def]
    sizes = np.zeros(count + 1, dtype=np.int64)
    hits = np.zeros(count + 1, dtype=np.int64)
    flat_c = components.reshape(-1)
    flat_l = labels.reshape(-1)
    for n in range(flat_c.size):
        c = flat_c[n]
        sizes[c] += 1
        if flat_l[n] == label:
            hits[c] += 1
    return sizes, hits


def component_stats(
    components: npt.NDArray[np.int32], count: int, labels: npt.NDArray[np.uint8], label: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per component (index 0 = outside): its size in voxels and how many of its voxels have ``label``."""
    _require(components, "components", 3, (np.int32,))
    _require(labels, "labels", 3, (np.uint8,))
    if components.shape != labels.shape:
        raise ValueError(f"components {components.shape} and labels {labels.shape} must have one shape")
    sizes, hits = _component_stats_kernel(components, labels, count, label)
    return sizes, hits


@nb.njit(parallel=True, cache=True, nogil=True)
def _keep_components_kernel(labels, components, keep, out):  # type: ignore[no-untyped-def]
    flat_l = labels.reshape(-1)
    flat_c = components.reshape(-1)
    flat_o = out.reshape(-1)
    for n in nb.prange(flat_l.size):
        flat_o[n] = flat_l[n] if keep[flat_c[n]] else 0


def keep_components(
    labels: npt.NDArray[np.uint8], components: npt.NDArray[np.int32], keep: npt.NDArray[np.bool_]
) -> npt.NDArray[np.uint8]:
    """``labels`` where ``keep[component]`` is true, 0 elsewhere (a new array)."""
    _require(labels, "labels", 3, (np.uint8,))
    _require(components, "components", 3, (np.int32,))
    _require(keep, "keep", 1, (np.bool_,))
    out = np.empty_like(labels)
    _keep_components_kernel(labels, components, keep, out)
    return out


@nb.njit(parallel=True, cache=True, nogil=True)
def _grow_label_kernel(labels, out, into, grow, r_y, r_x, radius_mm, dy_mm, dx_mm):  # type: ignore[no-untyped-def]
    nz, ny, nx = labels.shape
    r2 = radius_mm * radius_mm
    for k in nb.prange(nz):
        out[k] = labels[k]
        if not (labels[k] == grow).any():  # most slices hold no tumor: nothing to search
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
    _grow_label_kernel(labels, out, np.uint8(into), np.uint8(grow), r_y, r_x, float(radius_mm), dy_mm, dx_mm)
    return out
