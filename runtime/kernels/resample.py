"""Reorientation, anti-aliased bilinear resampling (PIL's filter, pixel-centre convention) and the HU window,
each on its own (``resample_slices`` and ``window`` are the reference the tests and benchmarks hold
:mod:`.fused` to, which does all of them in one pass, with the row helpers here), and the mapping of class
probabilities back to labels."""

from __future__ import annotations

import functools
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
    centres = (np.arange(n_out) + 0.5) * scale  # in input pixel units, pixel p spans [p, p + 1)
    lo = np.maximum(np.floor(centres - support), 0).astype(np.int64)
    hi = np.minimum(np.ceil(centres + support), n_in).astype(np.int64)
    taps = lo[:, None] + np.arange(width)
    weights = np.maximum(0.0, 1.0 - np.abs((taps + 0.5 - centres[:, None]) / support))
    weights[taps >= hi[:, None]] = 0.0
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=weights, where=totals > 0)
    return lo, weights.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _taps(n_in: int, n_out: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """:func:`resample_weights` for the kernels: each output's taps start at its first non-zero weight and
    ``count`` holds how many follow (all non-zero: the triangle is positive inside its support), so no
    kernel reads past the input. Cached (a run asks for the same few sizes on every batch), read-only."""
    starts, weights = resample_weights(n_in, n_out)
    nonzero = weights != 0.0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0)
    count = np.where(nonzero.any(axis=1), weights.shape[1] - nonzero[:, ::-1].argmax(axis=1) - first, 0)
    shifted = np.zeros_like(weights)
    for o in range(n_out):
        shifted[o, : count[o]] = weights[o, first[o] : first[o] + count[o]]
    arrays = (starts + first, shifted, count.astype(np.int64))
    for array in arrays:
        array.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=64)
def _half_taps(n_in: int, n_out: int) -> npt.NDArray[np.float32]:
    """For an exact 2:1 shrink, ``w[0, t, o]``: the weight of input ``2 o - 1 + t`` (``t`` < 4; 0 where it is no
    tap), laid out so that :func:`_half_row` reads four contiguous vectors, and ``w[1]`` the same with the
    outputs in reverse order (``w[1, t, o] = w[0, t, n_out - 1 - o]``, for a mirrored row). Shape ``(2, 4, 0)``
    otherwise."""
    half = np.zeros((2, 4, 0), dtype=np.float32)
    if n_in == 2 * n_out and n_out > 1:
        starts, weights, count = _taps(n_in, n_out)
        offset = starts - (2 * np.arange(n_out) - 1)
        if (offset >= 0).all() and (offset + count <= 4).all():
            half = np.zeros((2, 4, n_out), dtype=np.float32)
            for o in range(n_out):
                half[0, offset[o] : offset[o] + count[o], o] = weights[o, : count[o]]
            half[1] = half[0, :, ::-1]
    half.setflags(write=False)
    return half


@jit
def _half_row(out, half, even, odd, flip_x):  # type: ignore[no-untyped-def]
    # An exact 2:1 shrink's row from its de-interleaved samples (even[j] = sample 2 j, odd[j + 1] = sample
    # 2 j + 1, a zero at each end): each output is four contiguous taps, which vectorise; the extra terms are
    # zero weights times zero samples, so the sums are bit for bit the general taps'. Mirrored, canonical
    # output o is native output p = m - 1 - o, whose taps are native samples 2 p + 2 down to 2 p - 1: the loop
    # reads the native samples forwards with the weights in reverse order (half[1]) and stores backwards, the
    # same products summed in the same order, vectorised too.
    m = out.shape[0]
    if flip_x:
        w = half[1]
        for p in range(m):
            acc = np.float32(0.0)
            acc += w[0, p] * even[p + 1]
            acc += w[1, p] * odd[p + 1]
            acc += w[2, p] * even[p]
            acc += w[3, p] * odd[p]
            out[m - 1 - p] = acc
    else:
        w = half[0]
        for o in range(m):
            acc = np.float32(0.0)
            acc += w[0, o] * odd[o]
            acc += w[1, o] * even[o]
            acc += w[2, o] * odd[o + 1]
            acc += w[3, o] * even[o + 1]
            out[o] = acc


@jit
def _horizontal(row, out, xs, xw, xn, half, even, odd, flip_x):  # type: ignore[no-untyped-def]
    # out[o] = sum over t of xw[o, t] * canonical[xs[o] + t], where canonical is ``row`` (flip_x: mirrored);
    # an exact 2:1 shrink (``half`` has a column per output) through _half_row.
    n = row.shape[0]
    m = out.shape[0]
    if half.shape[2] == m:
        for j in range(m):
            even[j] = row[2 * j]
            odd[j + 1] = row[2 * j + 1]
        _half_row(out, half, even, odd, flip_x)
        return
    for o in range(m):
        acc = np.float32(0.0)
        s = xs[o]
        for t in range(xn[o]):
            x = s + t
            acc += xw[o, t] * row[n - 1 - x if flip_x else x]
        out[o] = acc


def _row_scratch(nx_in: int, nx: int) -> tuple[npt.NDArray[np.float32], ...]:
    """One thread's scratch for the resampling kernels: a row of vertical sums, :func:`_horizontal`'s even and
    odd samples (zero-padded), and two rows of partial vertical sums (the preprocessing kernel's 2:1 rows).
    The kernels allocate nothing themselves: a numpy call in a kernel costs its overload's compilation on
    every fresh install."""
    return (
        np.empty(nx_in, np.float32),
        np.zeros(nx + 1, np.float32),
        np.zeros(nx + 1, np.float32),
        np.empty(nx_in, np.float32),
        np.empty(nx_in, np.float32),
    )


@jit
def _resample_kernel(src, dst, ys, yw, yn, xs, xw, xn, half, scratch, z0, z1):  # type: ignore[no-untyped-def]
    # Rows first: an output row is a weighted sum of whole input rows (contiguous, so the inner loop is
    # vectorised), then each output pixel of that row a few taps along it (in L1 cache).
    row, even, odd, _, _ = scratch
    nx_in = src.shape[2]
    ny = dst.shape[1]
    for z in range(z0, z1):
        for o in range(ny):
            for x in range(nx_in):
                row[x] = 0.0
            for t in range(yn[o]):
                w = yw[o, t]
                r = ys[o] + t
                for x in range(nx_in):
                    row[x] += w * np.float32(src[z, r, x])
            _horizontal(row, dst[z, o], xs, xw, xn, half, even, odd, False)


def resample_slices(array: npt.NDArray[np.generic], shape_yx: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Resample every slice of a ``(z, y, x)`` array to ``shape_yx`` (anti-aliased bilinear), float32."""
    require(array, "array", 3, (np.float32, np.int16, np.uint8))
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    ys, yw, yn = _taps(array.shape[1], ny)
    xs, xw, xn = _taps(array.shape[2], nx)
    half = _half_taps(array.shape[2], nx)
    out = np.empty((array.shape[0], ny, nx), dtype=np.float32)
    over_slices(
        lambda z0, z1: _resample_kernel(
            array, out, ys, yw, yn, xs, xw, xn, half, _row_scratch(array.shape[2], nx), z0, z1
        ),
        array.shape[0],
        array[0].size + ny * nx,
    )
    return out


@jit
def _resample_argmax_kernel(probs, dst, ys, yw, yn, xs, xw, xn, scratch, b0, b1, region):  # type: ignore[no-untyped-def]
    # argmax(interpolated probabilities) with a shortcut that gives the same labels: where every input
    # pixel an output pixel's taps reach has the same argmax c, the interpolation (a convex combination with
    # positive weights) keeps c the largest, ties included (lower index first, as np.argmax). So only
    # output pixels near a label boundary on the model grid are interpolated.
    # scratch: the model-grid labels (h, w); per input column the label all of a row's taps agree on, or 255
    # (w); the vertical interpolation of one output row (c, w)
    labels, same, rows = scratch
    nc = probs.shape[1]
    oy0, oy1, ox0, ox1 = region[0], region[1], region[2], region[3]
    cx0 = xs[ox0]  # input columns and rows the region's taps reach
    cx1 = xs[ox1 - 1] + xn[ox1 - 1]
    ry0 = ys[oy0]
    ry1 = ys[oy1 - 1] + yn[oy1 - 1]
    for b in range(b0, b1):
        for y in range(ry0, ry1):
            for x in range(cx0, cx1):
                best = probs[b, 0, y, x]
                label = 0
                for c in range(1, nc):
                    if probs[b, c, y, x] > best:
                        best = probs[b, c, y, x]
                        label = c
                labels[y, x] = label
        for o in range(oy0, oy1):
            s = ys[o]
            n = yn[o]
            for x in range(cx0, cx1):
                label = labels[s, x]
                for t in range(1, n):
                    if labels[s + t, x] != label:
                        label = 255
                same[x] = label
            interpolated = False
            for ox in range(ox0, ox1):
                sx = xs[ox]
                label = same[sx]
                for t in range(1, xn[ox]):
                    if same[sx + t] != label:
                        label = 255
                if label != 255:
                    dst[b, o, ox] = label
                    continue
                if not interpolated:  # this output row's vertical interpolation, once, when first needed
                    for c in range(nc):
                        for x in range(cx0, cx1):
                            rows[c, x] = 0.0
                        for t in range(n):
                            w = yw[o, t]
                            for x in range(cx0, cx1):
                                rows[c, x] += w * probs[b, c, s + t, x]
                    interpolated = True
                best = np.float32(-np.inf)
                label = 0
                for c in range(nc):
                    acc = np.float32(0.0)
                    for t in range(xn[ox]):
                        acc += xw[ox, t] * rows[c, sx + t]
                    if acc > best:  # strict: ties go to the lower class index, as np.argmax
                        best = acc
                        label = c
                dst[b, o, ox] = label


def resample_argmax(
    probs: npt.NDArray[np.float32],
    shape_yx: tuple[int, int],
    out: npt.NDArray[np.uint8] | None = None,
    region_yx: tuple[int, int, int, int] | None = None,
) -> npt.NDArray[np.uint8]:
    """Resample class probabilities ``(n, c, h, w)`` to ``shape_yx`` and take the argmax per pixel.

    Interpolating probabilities (not labels) gives smooth, unbiased boundaries on the native grid; only
    pixels near a boundary of the model-grid argmax are interpolated (elsewhere the result is that label).
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
    ys, yw, yn = _taps(probs.shape[2], ny)
    xs, xw, xn = _taps(probs.shape[3], nx)
    region = np.array([y0, y1, x0, x1], dtype=np.int64)
    target = out
    _, nc, h, w = probs.shape

    def run(b0: int, b1: int) -> None:
        scratch = (np.empty((h, w), np.uint8), np.empty(w, np.uint8), np.empty((nc, w), np.float32))
        _resample_argmax_kernel(probs, target, ys, yw, yn, xs, xw, xn, scratch, b0, b1, region)

    over_slices(
        run,
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
