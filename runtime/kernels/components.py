"""Connected components (6-connected, as scipy.ndimage.label), their statistics, and in-plane label growth."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .threads import jit, over_slices, require


# ----- connected components ------------------------------------------------------------------------
# Inlined into its caller, whose cache holds it (no cache of its own: it must not need a writable folder).
@jit
def _label_kernel(mask, labels, parent):  # type: ignore[no-untyped-def]
    # Two-pass union-find on the raster order: pass 1 gives provisional labels and records which
    # touch (through the already visited x-1, y-1 and z-1 neighbours), pass 2 writes final labels
    # numbered by first appearance, as scipy.ndimage.label does. ``parent`` has room for one
    # provisional label per mask voxel (the most there can be). One function, no helpers: each nested
    # jitted function costs its own type inference, and this kernel compiles on every fresh install.
    nz, ny, nx = mask.shape
    parent[0] = 0
    n = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not mask[z, y, x]:
                    continue
                best = 0
                for d in range(3):
                    other = 0
                    if d == 0 and x > 0:
                        other = labels[z, y, x - 1]
                    elif d == 1 and y > 0:
                        other = labels[z, y - 1, x]
                    elif d == 2 and z > 0:
                        other = labels[z - 1, y, x]
                    if other == 0:
                        continue
                    root = other
                    while parent[root] != root:
                        parent[root] = parent[parent[root]]  # path halving
                        root = parent[root]
                    if best == 0 or root == best:
                        best = root
                    elif root < best:
                        parent[best] = root
                        best = root
                    else:
                        parent[root] = best
                if best == 0:
                    n += 1
                    parent[n] = n
                    best = n
                labels[z, y, x] = best
    final = np.zeros(n + 1, dtype=np.int32)
    count = 0
    for a in range(1, n + 1):
        root = a
        while parent[root] != root:
            root = parent[root]
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
    require(mask, "mask", 3, (np.bool_,))
    labels = np.zeros(mask.shape, dtype=np.int32)
    parent = np.empty(int(np.count_nonzero(mask)) + 1, dtype=np.int32)
    count = int(_label_kernel(mask, labels, parent))
    return labels, count


def component_stats(
    components: npt.NDArray[np.int32], count: int, labels: npt.NDArray[np.uint8], label: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per component (index 0 = outside): its size in voxels and how many of its voxels have ``label``."""
    require(components, "components", 3, (np.int32,))
    require(labels, "labels", 3, (np.uint8,))
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
    require(labels, "labels", 3, (np.uint8,))
    require(components, "components", 3, (np.int32,))
    require(keep, "keep", 1, (np.bool_,))
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
    require(labels, "labels", 3, (np.uint8,))
    dy_mm, dx_mm = (float(v) for v in spacing_yx_mm)
    if not (dy_mm > 0 and dx_mm > 0 and radius_mm >= 0):
        raise ValueError(f"spacing_yx_mm must be > 0 and radius_mm >= 0; got {spacing_yx_mm}, {radius_mm}")
    out = np.empty_like(labels)
    r_y, r_x = int(radius_mm / dy_mm), int(radius_mm / dx_mm)
    args = (np.uint8(into), np.uint8(grow), r_y, r_x, float(radius_mm), dy_mm, dx_mm)
    over_slices(lambda z0, z1: _grow_label_kernel(labels, out, *args, z0, z1), labels.shape[0], labels[0].size)
    return out
