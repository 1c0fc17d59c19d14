"""The fused preprocessing kernel: reorient, clamp at air, resample (:mod:`.resample`'s filter) and window
native HU slices in one pass, without a reoriented copy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .resample import _half_row, _half_taps, _horizontal, _row_scratch, _taps
from .threads import jit, over_slices, require


@jit
def _preprocess_kernel(src, dst, flips, ys, yw, yn, xs, xw, xn, half, levels, scratch, base, z0, z1):  # type: ignore[no-untyped-def]
    # dst[z] = window(resample(clamp(canonical slice z))), where canonical slice z is read from the native
    # array through the reorientation (transpose first, then flips): no reoriented copy. As
    # _resample_kernel: a canonical output row sums whole native rows (or, transposed, columns) in native
    # order, then _horizontal reads each output's taps through the x flip. The same products summed in the
    # same order as the separate steps, so the result is bit for bit theirs.
    # dst[0] is canonical slice ``base``; this call fills canonical slices [z0, z1).
    transpose, flip_z, flip_y, flip_x = flips[0], flips[1], flips[2], flips[3]
    air, lo, hi, scale = levels[0], levels[1], levels[2], levels[3]
    nz = src.shape[0]
    ny_c = src.shape[2] if transpose else src.shape[1]
    nx_c = src.shape[1] if transpose else src.shape[2]
    _, ny, nx = dst.shape
    # rows read as one stream (below) where the columns shrink exactly 2:1 (_half_row), upright, untransposed
    streamed = half.shape[2] == nx and not (transpose or flip_y)
    row, even, odd, carry, follow = scratch
    for z in range(z0, z1):
        sz = nz - 1 - z if flip_z else z
        started = -1  # the output row whose first two taps ``carry`` holds (-1: none)
        for o in range(ny):
            if streamed and yn[o] == 4 and o + 1 < ny and yn[o + 1] == 4 and ys[o + 1] == ys[o] + 2:
                # A 2:1 shrink's rows: output row o takes rows y .. y + 3 (y = 2 o - 1), and its last two are the
                # next output row's first two. Each native row is read once, whole and in order, into this
                # row's sums and the next row's (``follow``), in the tap order of the separate steps: one
                # stream the prefetcher follows (four rows read side by side ran at a third of the memory
                # bandwidth). The last pass writes the row de-interleaved for _half_row.
                y = ys[o]
                if started != o:  # the first such row of the slice: its first two rows side by side
                    w0, w1 = yw[o, 0], yw[o, 1]
                    for x in range(nx_c):
                        acc = np.float32(0.0)
                        acc += w0 * max(np.float32(src[sz, y, x]), air)
                        acc += w1 * max(np.float32(src[sz, y + 1, x]), air)
                        carry[x] = acc
                w2, w3, v0, v1 = yw[o, 2], yw[o, 3], yw[o + 1, 0], yw[o + 1, 1]
                for x in range(nx_c):
                    value = max(np.float32(src[sz, y + 2, x]), air)
                    row[x] = carry[x] + w2 * value
                    acc = np.float32(0.0)
                    acc += v0 * value
                    follow[x] = acc
                for j in range(nx):
                    a = max(np.float32(src[sz, y + 3, 2 * j]), air)
                    b = max(np.float32(src[sz, y + 3, 2 * j + 1]), air)
                    even[j] = row[2 * j] + w3 * a
                    odd[j + 1] = row[2 * j + 1] + w3 * b
                    follow[2 * j] += v1 * a
                    follow[2 * j + 1] += v1 * b
                carry, follow = follow, carry
                started = o + 1
                _half_row(dst[z - base, o], half, even, odd, flip_x)
            else:
                for x in range(nx_c):
                    row[x] = 0.0
                for t in range(yn[o]):
                    w = yw[o, t]
                    y = ys[o] + t
                    yy = ny_c - 1 - y if flip_y else y
                    if transpose:
                        for x in range(nx_c):
                            row[x] += w * max(np.float32(src[sz, x, yy]), air)
                    else:
                        for x in range(nx_c):
                            row[x] += w * max(np.float32(src[sz, yy, x]), air)
                _horizontal(row, dst[z - base, o], xs, xw, xn, half, even, odd, flip_x)
            out = dst[z - base, o]
            for x in range(nx):
                out[x] = (min(max(out[x], lo), hi) - lo) * scale


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
    taps = (*_taps(n_y, ny), *_taps(n_x, nx), _half_taps(n_x, nx))
    levels = np.array([air_hu, lo, hi, np.float32(1.0) / np.float32(hi - lo)], dtype=np.float32)
    flag_array = np.array([bool(f) for f in flips], dtype=np.bool_)
    out = np.empty((z1 - z0, ny, nx), dtype=np.float32)
    over_slices(
        lambda a, b: _preprocess_kernel(
            native, out, flag_array, *taps, levels, _row_scratch(n_x, nx), z0, z0 + a, z0 + b
        ),
        z1 - z0,
        native[0].size + ny * nx,
    )
    return out
