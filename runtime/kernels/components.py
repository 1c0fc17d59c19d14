"""Connected components (6-connected, as scipy.ndimage.label), their statistics, and in-plane label growth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .threads import jit, over_slices, require


# ----- connected components ------------------------------------------------------------------------
# Two-pass union-find on the raster order (6-connected; components numbered by first appearance, as
# scipy.ndimage.label numbers them) for the post-processing's component filters. Provisional labels live in
# two slices only (the voxel's own and the previous one: all that 6-connectivity looks back at), so a filter
# needs no volume of int32 labels (450 MB for a 432-slice series). Pass one counts each component's voxels
# and the voxels of one label in it; pass two replays the identical scan (the same provisional labels in the
# same order) and writes each component's new value in place.
# Compile time matters as much as run time here (every fresh install compiles it): the kernel allocates
# nothing and calls no numpy function, whose overloads numba would type and compile first (most of its time);
# the caller passes the scratch arrays and calls again with larger ones when the labels outgrow them.
@jit
def _component_scan(labels, lo, hi, stat_label, scratch, final, action, apply):  # type: ignore[no-untyped-def]
    # scratch: rows (2, ny, nx) int32, parent / size / hits of the provisional labels (int64, one length).
    # Returns the number of provisional labels, or -1 when they outgrow ``parent``.
    rows, parent, size, hits = scratch
    nz, ny, nx = labels.shape
    parent[0] = 0
    n = 0
    for z in range(nz):
        cur = rows[z & 1]
        prev = rows[(z + 1) & 1]
        for y in range(ny):
            for x in range(nx):
                v = labels[z, y, x]
                if v < lo or v > hi:
                    cur[y, x] = 0
                    continue
                best = 0
                for d in range(3):
                    other = 0
                    if d == 0 and x > 0:
                        other = cur[y, x - 1]
                    elif d == 1 and y > 0:
                        other = cur[y - 1, x]
                    elif d == 2 and z > 0:
                        other = prev[y, x]
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
                    if n == parent.size:
                        return -1
                    parent[n] = n
                    size[n] = 0
                    hits[n] = 0
                    best = n
                cur[y, x] = best
                if apply:
                    new = action[final[best]]
                    if new != 255:
                        labels[z, y, x] = new
                else:
                    size[best] += 1
                    if v == stat_label:
                        hits[best] += 1
    if not apply:  # components numbered by first appearance (a set's root is its smallest provisional label)
        final[0] = 0
        count = 0
        for a in range(1, n + 1):
            root = a
            while parent[root] != root:
                root = parent[root]
            if root == a:
                count += 1
                final[a] = count
            else:
                final[a] = final[root]
    return n


def _scan(
    labels: npt.NDArray[np.uint8],
    value_range: tuple[int, int],
    counted: int,
    final: npt.NDArray[np.int64],
    action: npt.NDArray[np.uint8] | None,
) -> tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Run :func:`_component_scan` with room for more provisional labels than ``final`` holds (``action``
    given: the replay, which reads ``final`` and makes the same labels again, so it never runs out), doubling
    the room until they fit; returns their number, each one's component, size and counted voxels."""
    lo, hi = (np.uint8(v) for v in value_range)
    ny, nx = labels.shape[1:]
    capacity = max(final.size + 1, 4096)
    while True:
        rows = np.zeros((2, ny, nx), dtype=np.int32)
        scratch = (rows, np.empty(capacity, np.int64), np.empty(capacity, np.int64), np.empty(capacity, np.int64))
        out = final if action is not None else np.empty(capacity, np.int64)
        replay = action if action is not None else np.zeros(0, np.uint8)
        n = _component_scan(labels, lo, hi, np.uint8(counted), scratch, out, replay, action is not None)
        if n >= 0:
            return int(n), out, scratch[2], scratch[3]
        capacity *= 2


@dataclass(frozen=True)
class Components:
    """The 6-connected components of ``lo <= labels <= hi``: ``count``, per component (index 0 = none) its
    ``sizes`` in voxels and ``hits`` (its voxels of the counted label), and ``provisional``, the scan's own
    numbering that :func:`relabel_components` replays."""

    count: int
    sizes: npt.NDArray[np.int64]
    hits: npt.NDArray[np.int64]
    provisional: npt.NDArray[np.int64]
    value_range: tuple[int, int]


def _require_labels(labels: npt.NDArray[np.generic]) -> None:
    # views into a larger volume (a bounding box) are fine here: numba reads them strided
    if not isinstance(labels, np.ndarray) or labels.ndim != 3 or labels.dtype != np.uint8:
        raise TypeError(f"labels must be a 3-D uint8 numpy array; got {getattr(labels, 'dtype', type(labels))}")


def find_components(labels: npt.NDArray[np.uint8], value_range: tuple[int, int], counted: int) -> Components:
    """Components of the voxels with ``value_range[0] <= label <= value_range[1]`` (6-connected, numbered
    as ``scipy.ndimage.label`` numbers them), their sizes and how many of their voxels are ``counted``.
    Memory: two slices of int32, whatever the volume."""
    _require_labels(labels)
    lo, hi = (int(v) for v in value_range)
    data = labels
    if not labels.flags.writeable:
        # The scan is typed for writable arrays, and the post-processing passes strided views (a box of the
        # volume): copy into one too, so that a fresh install compiles the kernel once, not twice.
        z, y, x = labels.shape
        data = np.empty((z, y, x + 1), dtype=np.uint8)[:, :, :x]
        data[...] = labels
    n, final, size, hits = _scan(data, (lo, hi), counted, np.empty(0, np.int64), None)
    provisional = final[: n + 1].copy()
    count = int(provisional.max(initial=0))
    sizes = np.zeros(count + 1, dtype=np.int64)
    counted_voxels = np.zeros(count + 1, dtype=np.int64)
    np.add.at(sizes, provisional[1:], size[1 : n + 1])
    np.add.at(counted_voxels, provisional[1:], hits[1 : n + 1])
    return Components(count, sizes, counted_voxels, provisional, (lo, hi))


def relabel_components(
    labels: npt.NDArray[np.uint8], components: Components, new_values: npt.NDArray[np.uint8]
) -> None:
    """Write ``new_values[c]`` into every voxel of component ``c`` (255: leave it), in place.

    ``components`` must come from :func:`find_components` on these very labels."""
    _require_labels(labels)
    if new_values.dtype != np.uint8 or new_values.shape != (components.count + 1,):
        raise ValueError(f"new_values must be uint8 of {components.count + 1} entries; got {new_values.shape}")
    if not labels.flags.writeable:
        raise ValueError("labels must be writable: they are relabelled in place")
    _scan(labels, components.value_range, 0, components.provisional, new_values)


@jit
def _grow_label_kernel(labels, source, into, grow, r_y, r_x, radius_mm, dy_mm, dx_mm, z0, z1):  # type: ignore[no-untyped-def]
    # In place: each slice is read from a copy of it (``source``, one slice of scratch), and only grown
    # voxels are written (pages of a fresh, mostly untouched label volume stay untouched: no resident memory
    # for them).
    _, ny, nx = labels.shape
    r2 = radius_mm * radius_mm
    for k in range(z0, z1):
        has_grow = False
        for j in range(ny):
            for i in range(nx):
                source[j, i] = labels[k, j, i]
                if source[j, i] == grow:
                    has_grow = True
        if not has_grow:  # most slices hold no tumor: nothing to search
            continue
        for j in range(ny):
            for i in range(nx):
                if source[j, i] != into:
                    continue
                near = False
                for dj in range(-r_y, r_y + 1):
                    jj = j + dj
                    if jj < 0 or jj >= ny:
                        continue
                    for di in range(-r_x, r_x + 1):
                        ii = i + di
                        if 0 <= ii < nx and source[jj, ii] == grow and (dj * dy_mm) ** 2 + (di * dx_mm) ** 2 <= r2:
                            near = True
                            break
                    if near:
                        break
                if near:
                    labels[k, j, i] = grow


def grow_label(
    labels: npt.NDArray[np.uint8],
    grow: int,
    into: int,
    radius_mm: float,
    spacing_yx_mm: tuple[float, float],
    in_place: bool = False,
) -> npt.NDArray[np.uint8]:
    """Relabel ``into`` voxels within ``radius_mm`` (in-plane, centre to centre) of a ``grow`` voxel of the
    same slice as ``grow``; other voxels are unchanged. Growth reads the input labels only (one step, not
    iterated). Returns a new array, or ``labels`` itself, changed, with ``in_place`` (then ``labels`` may
    be a view, e.g. a bounding box of a larger volume)."""
    _require_labels(labels)
    if not in_place:
        require(labels, "labels", 3, (np.uint8,))
    dy_mm, dx_mm = (float(v) for v in spacing_yx_mm)
    if not (dy_mm > 0 and dx_mm > 0 and radius_mm >= 0):
        raise ValueError(f"spacing_yx_mm must be > 0 and radius_mm >= 0; got {spacing_yx_mm}, {radius_mm}")
    out = labels if in_place else labels.copy()
    r_y, r_x = int(radius_mm / dy_mm), int(radius_mm / dx_mm)
    args = (np.uint8(into), np.uint8(grow), r_y, r_x, float(radius_mm), dy_mm, dx_mm)
    over_slices(
        lambda z0, z1: _grow_label_kernel(out, np.empty(out.shape[1:], np.uint8), *args, z0, z1),
        out.shape[0],
        out[0].size,
    )
    return out
