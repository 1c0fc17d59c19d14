"""Numba renderer of the CT phantom: analytic shapes composited with partial-volume edges.

Shapes are drawn back to front; each voxel takes ``hu = hu * (1 - a) + shape_hu * a`` where the
coverage ``a`` ramps linearly across the voxel's footprint along the shape's normal (in-plane pixel
size and slice *thickness*), which is the partial-volume effect of a real reconstruction. Labels take
a shape where its coverage is at least one half.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import numpy.typing as npt

# Shape kinds
ELLIPSOID = 0
CAPSULE = 1
RING = 2  # tube along an elliptical arc (ribs), or an extruded arc band (table) when RING_EXTRUDE is set

# Label codes
KEEP = 0
LIVER = 1
TUMOR = 2  # applied only where the voxel already is liver or tumor
CLEAR = 255

# Parameter columns
KIND, CX, CY, CZ, RX, RY, RZ, ANGLE, HU, LABEL, DEFORM, TEXTURE, SOFT = range(13)
CORE_FRAC, CORE_HU, RIM_FRAC, RIM_HU, ZMIN, ZMAX, XMIN, XMAX, YMIN, YMAX = range(13, 23)
# capsule: (CX, CY, CZ) -> (RX, RY, RZ) with radius in ANGLE
# ring: centre (CX, CY), z at arc middle CZ, semi-axes RX, RY, tube radius RZ, arc [THETA0, THETA1],
#       z drop towards anterior RING_SLOPE (mm), RING_EXTRUDE 1 for an extruded band
THETA0, THETA1, RING_SLOPE, RING_EXTRUDE, COS, SIN = range(23, 29)
NPARAM = 29


@nb.njit(cache=True, nogil=True, inline="always")
def _clamp01(v):  # type: ignore[no-untyped-def]
    return 0.0 if v < 0.0 else (1.0 if v > 1.0 else v)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _shape(prm, x, y, z, px, py, pz):  # type: ignore[no-untyped-def]
    """Return (coverage, normalised radius) of one shape at a point (already deformed)."""
    kind = int(prm[KIND])
    if kind == ELLIPSOID:
        dx = x - prm[CX]
        dy = y - prm[CY]
        dz = z - prm[CZ]
        c = prm[COS]
        s = prm[SIN]
        lx = (c * dx + s * dy) / prm[RX]
        ly = (-s * dx + c * dy) / prm[RY]
        lz = dz / prm[RZ]
        f = math.sqrt(lx * lx + ly * ly + lz * lz)
        if (f - 1.0) * min(prm[RX], prm[RY], prm[RZ]) > max(px, py, pz) + prm[SOFT]:
            return 0.0, f  # clearly outside: no coverage (saves the gradient)
        # gradient of f in world axes (unnormalised): rotate (lx/rx, ly/ry) back
        gx_l = lx / prm[RX]
        gy_l = ly / prm[RY]
        gx = c * gx_l - s * gy_l
        gy = s * gx_l + c * gy_l
        gz = lz / prm[RZ]
        g = math.sqrt(gx * gx + gy * gy + gz * gz) + 1e-12
        d = (f - 1.0) * f / g  # first-order signed distance (mm)
        w = math.sqrt((px * gx) ** 2 + (py * gy) ** 2 + (pz * gz) ** 2) / g + prm[SOFT]
        return _clamp01(0.5 - d / w), f
    if kind == CAPSULE:
        ax = prm[RX] - prm[CX]
        ay = prm[RY] - prm[CY]
        az = prm[RZ] - prm[CZ]
        t = ((x - prm[CX]) * ax + (y - prm[CY]) * ay + (z - prm[CZ]) * az) / (ax * ax + ay * ay + az * az)
        t = _clamp01(t)
        qx = x - (prm[CX] + t * ax)
        qy = y - (prm[CY] + t * ay)
        qz = z - (prm[CZ] + t * az)
        r = math.sqrt(qx * qx + qy * qy + qz * qz) + 1e-12
        d = r - prm[ANGLE]
        w = math.sqrt((px * qx) ** 2 + (py * qy) ** 2 + (pz * qz) ** 2) / r + prm[SOFT]
        return _clamp01(0.5 - d / w), r / prm[ANGLE]
    # RING
    ex = (x - prm[CX]) / prm[RX]
    ey = (y - prm[CY]) / prm[RY]
    rho = math.sqrt(ex * ex + ey * ey)
    radial = (rho - 1.0) * math.sqrt((prm[RX] * ex) ** 2 + (prm[RY] * ey) ** 2) / (rho + 1e-12)
    if abs(radial) > prm[RZ] + 2.0 * max(px, py) + prm[SOFT]:
        return 0.0, 9.0  # far from the arc: skip the angle
    theta = math.atan2(ey, ex)
    if theta < prm[THETA0]:
        theta += 2.0 * math.pi
    if theta > prm[THETA1]:
        return 0.0, 9.0
    if prm[RING_EXTRUDE] > 0.5:
        d = abs(radial) - prm[RZ]
        w = max(px, py) + prm[SOFT]
        return _clamp01(0.5 - d / w), abs(radial) / prm[RZ]
    anterior = 0.5 * (1.0 - math.sin(theta))  # 0 at the back (+y, posterior), 1 at the front
    zc = prm[CZ] - prm[RING_SLOPE] * anterior
    vz = z - zc
    r = math.sqrt(radial * radial + vz * vz) + 1e-12
    d = r - prm[RZ]
    w = math.sqrt((px * radial) ** 2 + (pz * vz) ** 2) / r + prm[SOFT]
    return _clamp01(0.5 - d / w), r / prm[RZ]


@nb.njit(cache=True, nogil=True)
def _texture(tex, tex_origin, tex_step, x, y, z):  # type: ignore[no-untyped-def]
    fx = (x - tex_origin[0]) / tex_step
    fy = (y - tex_origin[1]) / tex_step
    fz = (z - tex_origin[2]) / tex_step
    nz, ny, nx = tex.shape
    fx = min(max(fx, 0.0), nx - 1.001)
    fy = min(max(fy, 0.0), ny - 1.001)
    fz = min(max(fz, 0.0), nz - 1.001)
    ix, iy, iz = int(fx), int(fy), int(fz)
    ax, ay, az = fx - ix, fy - iy, fz - iz
    v = 0.0
    for dz in range(2):
        for dy in range(2):
            for dx in range(2):
                wgt = (ax if dx else 1 - ax) * (ay if dy else 1 - ay) * (az if dz else 1 - az)
                v += wgt * tex[iz + dz, iy + dy, ix + dx]
    return v


DEFORM_STEP_PX = 8  # the deformation field is smooth: evaluate it every 8 pixels, interpolate between


@nb.njit(cache=True, nogil=True)
def _deform_grid(deform, z, origin, px, py, ny, nx):  # type: ignore[no-untyped-def]
    gy = ny // DEFORM_STEP_PX + 2
    gx = nx // DEFORM_STEP_PX + 2
    grid = np.zeros((gy, gx, 3))
    for a in range(gy):
        y = origin[1] + a * DEFORM_STEP_PX * py
        for b in range(gx):
            x = origin[0] + b * DEFORM_STEP_PX * px
            for m in range(deform.shape[0]):
                grid[a, b, int(deform[m, 4])] += deform[m, 5] * math.sin(
                    deform[m, 0] * x + deform[m, 1] * y + deform[m, 2] * z + deform[m, 3]
                )
    return grid


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _voxel(  # type: ignore[no-untyped-def]
    prims,
    seg,
    n_seg,
    first_labelled,
    grid,
    ja,
    fj,
    i,
    x,
    y,
    z,
    px,
    py,
    thickness,
    tex,
    tex_origin,
    tex_step,
    background,
):
    """Composite the shapes ``seg[:n_seg]`` (back to front) that can cover voxel ``(x, y, z)``."""
    # Front to back: stop once the voxel is opaque and its label is known.
    v = 0.0
    transmit = 1.0
    lab = -1
    tumor_pending = False
    have_d = False
    have_t = False
    wx = x
    wy = y
    wz = z
    tval = 0.0
    for a in range(n_seg - 1, -1, -1):
        prm = prims[seg[a]]
        if transmit == 0.0:  # opaque: only shapes that set labels still matter
            if lab != -1 or a < first_labelled:
                break
            if prm[LABEL] == KEEP:
                continue
        if prm[DEFORM] > 0.5:
            if not have_d:
                gi = i / DEFORM_STEP_PX
                ia = int(gi)
                fi = gi - ia
                w00 = (1 - fj) * (1 - fi)
                w01 = (1 - fj) * fi
                w10 = fj * (1 - fi)
                w11 = fj * fi
                wx = x + (
                    w00 * grid[ja, ia, 0]
                    + w01 * grid[ja, ia + 1, 0]
                    + w10 * grid[ja + 1, ia, 0]
                    + w11 * grid[ja + 1, ia + 1, 0]
                )
                wy = y + (
                    w00 * grid[ja, ia, 1]
                    + w01 * grid[ja, ia + 1, 1]
                    + w10 * grid[ja + 1, ia, 1]
                    + w11 * grid[ja + 1, ia + 1, 1]
                )
                wz = z + (
                    w00 * grid[ja, ia, 2]
                    + w01 * grid[ja, ia + 1, 2]
                    + w10 * grid[ja + 1, ia, 2]
                    + w11 * grid[ja + 1, ia + 1, 2]
                )
                have_d = True
            cov, f = _shape(prm, wx, wy, wz, px, py, thickness)
        else:
            cov, f = _shape(prm, x, y, z, px, py, thickness)
        if cov <= 0.0:
            continue
        if cov >= 0.5 and lab == -1:
            # paint order semantics: tumor counts only over liver; CLEAR and LIVER settle it
            code = int(prm[LABEL])
            if code == LIVER:
                lab = 2 if tumor_pending else 1
            elif code == CLEAR:
                lab = 0
            elif code == TUMOR:
                tumor_pending = True
        if transmit > 0.0:
            value = prm[HU]
            if prm[CORE_FRAC] > 0.0:
                value += (prm[CORE_HU] - value) * _clamp01((prm[CORE_FRAC] - f) / 0.15 + 0.5)
            if prm[RIM_FRAC] > 0.0:
                value += (prm[RIM_HU] - value) * _clamp01((f - prm[RIM_FRAC]) / 0.1 + 0.5)
            if prm[TEXTURE] > 0.0:
                if not have_t:
                    tval = _texture(tex, tex_origin, tex_step, x, y, z)
                    have_t = True
                value += prm[TEXTURE] * tval
            v += transmit * cov * value
            transmit *= 1.0 - cov
            if transmit < 1e-4:
                transmit = 0.0
    return v + transmit * background, max(lab, 0)


@nb.njit(cache=True, nogil=True, inline="always")
def _columns(lo, hi, ox, px, nx):  # type: ignore[no-untyped-def]
    """First column and one past the last whose centre x lies in ``[lo, hi]`` (clipped to the row)."""
    c0 = max(math.ceil((lo - ox) / px), 0)
    c1 = min(math.floor((hi - ox) / px) + 1, nx)
    return c0, c1


@nb.njit(parallel=True, cache=True, nogil=True, fastmath=True, error_model="numpy")
def render_kernel(prims, deform, tex, tex_origin, tex_step, origin, spacing, thickness, hu, labels, background):  # type: ignore[no-untyped-def]
    """Rasterise the shapes ``prims`` (rows of parameters, back to front) into ``hu`` and ``labels``.

    Each row of voxels is cut into column segments at the shapes' bounding boxes, so a voxel visits only
    the shapes whose boxes contain it, front to back, until it is opaque and its label is known.
    """
    nz, ny, nx = hu.shape
    px, py, dz_step = spacing[0], spacing[1], spacing[2]
    n_prims = prims.shape[0]
    for kp in nb.prange(nz):
        k = np.int64(kp)
        z = origin[2] + k * dz_step
        in_slice = np.empty(n_prims, dtype=np.int64)
        n_slice = 0
        for p in range(n_prims):
            if prims[p, ZMIN] <= z <= prims[p, ZMAX]:
                in_slice[n_slice] = p
                n_slice += 1
        grid = _deform_grid(deform, z, origin, px, py, ny, nx)
        active = np.empty(n_slice, dtype=np.int64)
        start = np.empty(n_slice, dtype=np.int64)
        stop = np.empty(n_slice, dtype=np.int64)
        cuts = np.empty(2 * n_slice + 2, dtype=np.int64)
        seg = np.empty(n_slice, dtype=np.int64)
        for j in range(ny):
            y = origin[1] + j * py
            n_active = 0
            for a in range(n_slice):
                p = in_slice[a]
                if prims[p, YMIN] <= y <= prims[p, YMAX]:
                    c0, c1 = _columns(prims[p, XMIN], prims[p, XMAX], origin[0], px, nx)
                    if c0 < c1:
                        active[n_active] = p
                        start[n_active] = c0
                        stop[n_active] = c1
                        n_active += 1
            cuts[0] = 0
            cuts[1] = nx
            for a in range(n_active):
                cuts[2 + 2 * a] = start[a]
                cuts[3 + 2 * a] = stop[a]
            bounds = np.sort(cuts[: 2 + 2 * n_active])
            gj = j / DEFORM_STEP_PX
            ja = int(gj)
            fj = gj - ja
            for b in range(bounds.size - 1):
                s0 = bounds[b]
                s1 = bounds[b + 1]
                if s1 <= s0:
                    continue
                # the shapes covering this whole segment, in paint order
                n_seg = 0
                first_labelled = n_slice  # position of the backmost shape that sets a label
                for a in range(n_active):
                    if start[a] <= s0 and stop[a] >= s1:
                        if prims[active[a], LABEL] != KEEP and first_labelled == n_slice:
                            first_labelled = n_seg
                        seg[n_seg] = active[a]
                        n_seg += 1
                for i in range(s0, s1):
                    x = origin[0] + i * px
                    v, lab = _voxel(
                        prims,
                        seg,
                        n_seg,
                        first_labelled,
                        grid,
                        ja,
                        fj,
                        i,
                        x,
                        y,
                        z,
                        px,
                        py,
                        thickness,
                        tex,
                        tex_origin,
                        tex_step,
                        background,
                    )
                    hu[k, j, i] = v
                    labels[k, j, i] = lab


@nb.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def blur_slices_kernel(src, dst, kernel):  # type: ignore[no-untyped-def]
    nz, ny, nx = src.shape
    r = kernel.size // 2
    for kp in nb.prange(nz):
        k = np.int64(kp)
        tmp = np.empty((ny, nx), dtype=np.float32)
        for j in range(ny):
            for i in range(nx):
                acc = 0.0
                for t in range(-r, r + 1):
                    ii = min(max(i + t, 0), nx - 1)
                    acc += kernel[t + r] * src[k, j, ii]
                tmp[j, i] = acc
        for j in range(ny):
            for i in range(nx):
                acc = 0.0
                for t in range(-r, r + 1):
                    jj = min(max(j + t, 0), ny - 1)
                    acc += kernel[t + r] * tmp[jj, i]
                dst[k, j, i] = acc


def gaussian_kernel(sigma_px: float) -> npt.NDArray[np.float32]:
    radius = max(1, math.ceil(3 * sigma_px))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / max(sigma_px, 1e-6)) ** 2)
    out: npt.NDArray[np.float32] = (k / k.sum()).astype(np.float32)
    return out


def blur_slices(array: npt.NDArray[np.float32], sigma_px: float) -> npt.NDArray[np.float32]:
    """In-plane Gaussian blur of every slice (edge-clamped), float32."""
    if array.dtype != np.float32 or array.ndim != 3 or not array.flags.c_contiguous:
        raise ValueError(f"blur_slices needs a C-contiguous float32 (z, y, x) array; got {array.dtype} {array.shape}")
    out = np.empty_like(array)
    blur_slices_kernel(array, out, gaussian_kernel(sigma_px))
    return out
