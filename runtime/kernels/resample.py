"""Reorientation, anti-aliased bilinear resampling (PIL's filter, pixel-centre convention), the HU window,
and the fused preprocessing kernel that does all of them in one pass over the native slices."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .threads import jit, over_slices, require

# ----- reorientation -------------------------------------------------------------------------------
REORIENT_DTYPES: tuple[type, ...] = (np.float32, np.int16, np.uint8, np.uint16, np.int32, np.float64)


def reorient(
    array: npt.NDArray[np.generic], transpose: bool, flip_z: bool, flip_y: bool, flip_x: bool
) -> npt.NDArray[np.generic]:
    """Transpose rows/columns (first, if asked), then flip the given axes of a ``(z, y, x)`` array.

    Returns a new C-contiguous array of the same dtype; shape ``(z, x, y)`` when transposed. (A strided
    numpy copy: memory-bound, no kernel to compile.)
    """
    require(array, "array", 3, REORIENT_DTYPES)
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
    require(array, "array", 3, (np.float32, np.int16, np.uint8))
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    ys, yw = resample_weights(array.shape[1], ny)
    xs, xw = resample_weights(array.shape[2], nx)
    out = np.empty((array.shape[0], ny, nx), dtype=np.float32)
    over_slices(
        lambda z0, z1: _resample_kernel(array, out, ys, yw, xs, xw, z0, z1), array.shape[0], array[0].size + ny * nx
    )
    return out


@jit
def _resample_argmax_kernel(probs, dst, ys, yw, xs, xw, b0, b1, oy0, oy1, ox0, ox1):  # type: ignore[no-untyped-def]
    _, nc, ny_in, _ = probs.shape
    ty = yw.shape[1]
    tx = xw.shape[1]
    rows = np.empty((nc, ny_in, ox1 - ox0), dtype=np.float32)
    for b in range(b0, b1):
        for c in range(nc):
            for y in range(ny_in):
                for o in range(ox0, ox1):
                    acc = np.float32(0.0)
                    s = xs[o]
                    for t in range(tx):
                        w = xw[o, t]
                        if w != 0.0:
                            acc += w * probs[b, c, y, s + t]
                    rows[c, y, o - ox0] = acc
        for o in range(oy0, oy1):
            s = ys[o]
            for x in range(ox0, ox1):
                best = np.float32(-np.inf)
                label = 0
                for c in range(nc):
                    acc = np.float32(0.0)
                    for t in range(ty):
                        w = yw[o, t]
                        if w != 0.0:
                            acc += w * rows[c, s + t, x - ox0]
                    if acc > best:  # strict: ties go to the lower class index, as np.argmax
                        best = acc
                        label = c
                dst[b, o, x] = label


def resample_argmax(
    probs: npt.NDArray[np.float32],
    shape_yx: tuple[int, int],
    out: npt.NDArray[np.uint8] | None = None,
    region_yx: tuple[int, int, int, int] | None = None,
) -> npt.NDArray[np.uint8]:
    """Resample class probabilities ``(n, c, h, w)`` to ``shape_yx`` and take the argmax per pixel.

    Interpolating probabilities (not labels) gives smooth, unbiased boundaries on the native grid.
    Returns uint8 labels ``(n, *shape_yx)``, written into ``out`` if given. ``region_yx = (y0, y1, x0, x1)``
    limits the work to those output rows and columns (the rest of ``out`` is left as it is): where the
    probabilities outside a region are all background, nothing else can change.
    """
    require(probs, "probs", 4, (np.float32,))
    if probs.shape[1] > 255:
        raise ValueError(f"at most 255 classes fit uint8 labels; got {probs.shape[1]}")
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    if out is None:
        out = np.zeros((probs.shape[0], ny, nx), dtype=np.uint8)
    require(out, "out", 3, (np.uint8,))
    if out.shape != (probs.shape[0], ny, nx):
        raise ValueError(f"out must have shape {(probs.shape[0], ny, nx)}; got {out.shape}")
    y0, y1, x0, x1 = region_yx if region_yx is not None else (0, ny, 0, nx)
    if not (0 <= y0 <= y1 <= ny and 0 <= x0 <= x1 <= nx):
        raise ValueError(f"region_yx {region_yx} must lie within {shape_yx}")
    if y1 == y0 or x1 == x0:
        return out
    ys, yw = resample_weights(probs.shape[2], ny)
    xs, xw = resample_weights(probs.shape[3], nx)
    target = out
    over_slices(
        lambda b0, b1: _resample_argmax_kernel(probs, target, ys, yw, xs, xw, b0, b1, y0, y1, x0, x1),
        probs.shape[0],
        probs[0].size + (y1 - y0) * (x1 - x0) * probs.shape[1],
    )
    return out


# ----- intensity -----------------------------------------------------------------------------------
def window(array: npt.NDArray[np.float32], window_hu: tuple[float, float]) -> npt.NDArray[np.float32]:
    """Clip HU to ``window_hu = (lo, hi)`` and scale to [0, 1]; float32, same shape."""
    require(array, "array", array.ndim, (np.float32,))
    lo, hi = float(window_hu[0]), float(window_hu[1])
    if not hi > lo:
        raise ValueError(f"window_hu must be (lo, hi) with hi > lo; got {window_hu}")
    out = np.clip(array, np.float32(lo), np.float32(hi))
    out -= np.float32(lo)
    out *= np.float32(1.0) / np.float32(hi - lo)
    return out


# ----- fused preprocessing -------------------------------------------------------------------------
@jit
def _preprocess_kernel(src, dst, flips, ys, yw, xs, xw, levels, base, z0, z1):  # type: ignore[no-untyped-def]
    # dst[z] = window(resample(clamp(canonical slice z))), where canonical slice z is read from the native
    # array through the reorientation (transpose first, then flips), sample by sample: no reoriented copy.
    # dst[0] is canonical slice ``base``; this call fills canonical slices [z0, z1).
    transpose, flip_z, flip_y, flip_x = flips[0], flips[1], flips[2], flips[3]
    air, lo, hi, scale = levels[0], levels[1], levels[2], levels[3]
    nz = src.shape[0]
    ny_c = src.shape[2] if transpose else src.shape[1]
    nx_c = src.shape[1] if transpose else src.shape[2]
    _, ny, nx = dst.shape
    ty = yw.shape[1]
    tx = xw.shape[1]
    rows = np.empty((ny_c, nx), dtype=np.float32)
    for z in range(z0, z1):
        sz = nz - 1 - z if flip_z else z
        for y in range(ny_c):
            yy = ny_c - 1 - y if flip_y else y
            for o in range(nx):
                acc = np.float32(0.0)
                s = xs[o]
                for t in range(tx):
                    w = xw[o, t]
                    if w != 0.0:
                        x = s + t
                        xx = nx_c - 1 - x if flip_x else x
                        v = np.float32(src[sz, xx, yy]) if transpose else np.float32(src[sz, yy, xx])
                        acc += w * max(v, air)
                rows[y, o] = acc
        for o in range(ny):
            s = ys[o]
            for x in range(nx):
                acc = np.float32(0.0)
                for t in range(ty):
                    w = yw[o, t]
                    if w != 0.0:
                        acc += w * rows[s + t, x]
                dst[z - base, o, x] = (min(max(acc, lo), hi) - lo) * scale


def preprocess_slices(
    native: npt.NDArray[np.generic],
    flips: tuple[bool, bool, bool, bool],
    shape_yx: tuple[int, int],
    window_hu: tuple[float, float],
    air_hu: float,
    z_range: tuple[int, int] | None = None,
) -> npt.NDArray[np.float32]:
    """Model input from native HU slices in one pass: reorient, clamp below ``air_hu``, resample, window.

    Parameters
    ----------
    native
        HU ``(z, y, x)``, int16 or float32, in the series' own orientation.
    flips
        ``(transpose, flip_z, flip_y, flip_x)`` of the reorientation to the canonical orientation
        (:class:`~litseg.runtime.geometry.Reorientation`).
    shape_yx, window_hu
        The model grid and HU window.
    z_range
        Canonical slices ``[z0, z1)`` to make (default: all), so that batches can be made as they are needed.

    Returns
    -------
    float32 ``(z1 - z0, *shape_yx)`` in [0, 1]; equal to ``window(resample_slices(reorient(max(native, air))))``.
    """
    require(native, "native", 3, (np.float32, np.int16))
    lo, hi = float(window_hu[0]), float(window_hu[1])
    if not hi > lo:
        raise ValueError(f"window_hu must be (lo, hi) with hi > lo; got {window_hu}")
    transpose = bool(flips[0])
    n_y, n_x = (native.shape[2], native.shape[1]) if transpose else native.shape[1:]
    z0, z1 = z_range if z_range is not None else (0, native.shape[0])
    if not 0 <= z0 <= z1 <= native.shape[0]:
        raise ValueError(f"z_range {z_range} must lie within 0..{native.shape[0]}")
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    ys, yw = resample_weights(n_y, ny)
    xs, xw = resample_weights(n_x, nx)
    levels = np.array([air_hu, lo, hi, np.float32(1.0) / np.float32(hi - lo)], dtype=np.float32)
    flag_array = np.array([bool(f) for f in flips], dtype=np.bool_)
    out = np.empty((z1 - z0, ny, nx), dtype=np.float32)
    over_slices(
        lambda a, b: _preprocess_kernel(native, out, flag_array, ys, yw, xs, xw, levels, z0, z0 + a, z0 + b),
        z1 - z0,
        native[0].size + ny * nx,
    )
    return out
