"""Where the model must look: a cheap first pass that bounds the slices and the in-plane region of the liver.

An abdominal CT holds the liver in a third to a half of its slices and in a part of each slice. The full
inference (with its test-time shifts) is the whole cost of a run, so litseg first runs the same network
once on every k-th slice (about one per :data:`COARSE_STEP_MM`), takes the slices and the in-plane box in
which it sees liver or tumor, widens both (by one coarse step and the slices between, and by
:data:`MARGIN_PX` of context around the box, aligned to the network's pooling grid), and runs the full
pass there only (each separate slice range with its own box). Outside the focus the probabilities are
background. Because the liver is one connected organ, a widening by one coarse step cannot lose it
between two sampled slices.

Coarse slices that show foreground more than :data:`MAX_GAP_MM` apart start a new slice range: a blob the
coarse pass calls liver in the pelvis (a bladder, a mass) gets its own short range instead of stretching
one range over every slice between it and the liver. Nothing the coarse pass saw is dropped (the full
pass and the post-processing decide about every range); only the empty slices between are skipped.
Two bounds make both passes smaller. The patient's body (tissue, above
:data:`~litseg.runtime.hu.TISSUE_HU`, on the coarse slices; :data:`BODY_MARGIN_PX` of air around it) bounds
every box: a scan's field of view holds a lot of air and table, and the coarse pass itself runs on that box
only. And the full pass steps through each part in
blocks of slices, each with the box of the coarse slices around it (those that bracket it and one more on
either side): the liver's cross-section shrinks toward its dome and its tip, so one box for the whole part
would run the network on empty context there.

The cost on held-out data is measured and reported (docs/performance.md, issue 15), and
``RunConfig(focus=False)`` / ``--no-focus`` runs the full pass everywhere.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: One coarse slice per this many millimetres along the patient's axis.
COARSE_STEP_MM = 10.0
#: Context kept around the liver's in-plane box, in model-grid pixels (256 px span ~ 35-50 cm: ~5-7 cm).
MARGIN_PX = 40
#: The box is aligned to the U-Net's pooling grid (4 poolings of 2).
GRID_PX = 16
#: A coarse slice counts as showing liver from this many foreground pixels of the model grid.
MIN_FOREGROUND_PX = 16
#: Below this many slices the coarse pass would not save anything.
MIN_SLICES_FOR_FOCUS = 24
#: Air kept around the body's box, in model-grid pixels (the network's view of the skin and its surroundings).
BODY_MARGIN_PX = 16
#: Foreground seen on coarse slices further apart than this (empty coarse slices between) splits the focus
#: into separate slice ranges; closer ones share a range (a liver is one organ: 30 mm covers the two
#: empty samples a thin or poorly seen part of it could give).
MAX_GAP_MM = 30.0


Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class FocusPart:
    """Canonical slices ``[z0, z1)`` and the model-grid box ``[y0, y1) x [x0, x1)`` the full pass sees there.

    ``seen`` holds the part's coarse slices that showed liver, each with its own box (margin included); a
    block of slices runs on the boxes around it (:meth:`block_box`), ``box_yx`` is the envelope of them all.
    """

    z0: int
    z1: int
    box_yx: Box
    seen: tuple[tuple[int, Box], ...] = ()

    def block_box(self, a: int, b: int) -> Box:
        """The box for slices ``[a, b)`` of this part: the boxes of the seen coarse slices that bracket the
        block, and one more on either side (the envelope when the part has no per-slice boxes)."""
        if not self.seen:
            return self.box_yx
        zs = [z for z, _ in self.seen]
        first = max(bisect.bisect_right(zs, a) - 2, 0)  # one before the last seen slice at or before a
        last = min(bisect.bisect_left(zs, b - 1) + 1, len(zs) - 1)  # one after the first at or after b - 1
        return _union([box for _, box in self.seen[first : last + 1]])


@dataclass(frozen=True)
class Focus:
    """Where the full pass runs: parts sorted by slice, disjoint.

    ``coarse`` lists the canonical slices the first pass saw (empty when there was no first pass).
    """

    parts: tuple[FocusPart, ...]
    coarse: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return self.slices == 0

    @property
    def slices(self) -> int:
        """Slices of the full pass."""
        return sum(p.z1 - p.z0 for p in self.parts)

    @property
    def z_range(self) -> tuple[int, int]:
        """The first and the end slice of all parts (``(0, 0)`` when empty)."""
        return (self.parts[0].z0, self.parts[-1].z1) if self.parts else (0, 0)

    @property
    def box_yx(self) -> tuple[int, int, int, int]:
        """The box that holds every part's box (``(0, 0, 0, 0)`` when empty)."""
        return _union([p.box_yx for p in self.parts]) if self.parts else (0, 0, 0, 0)

    def with_box(self, box_yx: Box) -> Focus:
        """The same slices, every part and block with ``box_yx``."""
        return Focus(tuple(FocusPart(p.z0, p.z1, box_yx) for p in self.parts), self.coarse)

    def blocks(self, size: int) -> list[tuple[int, int, Box]]:
        """The full pass' steps: each part cut into blocks of up to ``size`` slices, each with its box."""
        return [
            (a, min(a + size, p.z1), p.block_box(a, min(a + size, p.z1)))
            for p in self.parts
            for a in range(p.z0, p.z1, size)
        ]


def everything(nz: int, shape_yx: tuple[int, int]) -> Focus:
    """No focus: every slice, the whole grid."""
    return Focus((FocusPart(0, nz, (0, shape_yx[0], 0, shape_yx[1])),))


def work_fraction(blocks: list[tuple[int, int, Box]], nz: int, shape_yx: tuple[int, int]) -> float:
    """The share of the full model work (slices x area) that the blocks of a focus keep, for the report."""
    if nz == 0:
        return 0.0
    return sum((b - a) * (y1 - y0) * (x1 - x0) for a, b, (y0, y1, x0, x1) in blocks) / (nz * shape_yx[0] * shape_yx[1])


def coarse_slices(nz: int, spacing_z_mm: float) -> npt.NDArray[np.int64]:
    """Every k-th slice, k such that the step is about :data:`COARSE_STEP_MM`, first and last included."""
    step = max(1, round(COARSE_STEP_MM / max(abs(spacing_z_mm), 1e-3)))
    picks = np.arange(0, nz, step, dtype=np.int64)
    if picks[-1] != nz - 1:
        picks = np.append(picks, nz - 1)
    return picks


def _aligned(lo: int, hi: int, n: int) -> tuple[int, int]:
    """``[lo, hi)`` widened to multiples of :data:`GRID_PX` (the network's grid), within ``[0, n)``."""
    lo = max(0, (lo // GRID_PX) * GRID_PX)
    hi = min(n, math.ceil(hi / GRID_PX) * GRID_PX)
    return lo, hi


def shows_foreground(labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Per coarse slice of model-grid labels ``(n, h, w)``: does it show liver or tumor (at least
    :data:`MIN_FOREGROUND_PX` pixels)?"""
    counts: npt.NDArray[np.int64] = (labels > 0).reshape(len(labels), -1).sum(axis=1)
    return counts >= MIN_FOREGROUND_PX


def body_box(body_yx: npt.NDArray[np.bool_], shape_yx: tuple[int, int]) -> Box | None:
    """The model-grid box of the body, :data:`BODY_MARGIN_PX` around it, aligned to the network's grid.

    ``body_yx`` marks the canonical native pixels (before resampling) where any coarse slice shows the body;
    None when there is none.
    """
    rows = np.flatnonzero(body_yx.any(axis=1))
    cols = np.flatnonzero(body_yx.any(axis=0))
    if rows.size == 0:
        return None
    scale_y, scale_x = shape_yx[0] / body_yx.shape[0], shape_yx[1] / body_yx.shape[1]
    y0, y1 = math.floor(rows[0] * scale_y), math.ceil((rows[-1] + 1) * scale_y)
    x0, x1 = math.floor(cols[0] * scale_x), math.ceil((cols[-1] + 1) * scale_x)
    return (
        *_aligned(y0 - BODY_MARGIN_PX, y1 + BODY_MARGIN_PX, shape_yx[0]),
        *_aligned(x0 - BODY_MARGIN_PX, x1 + BODY_MARGIN_PX, shape_yx[1]),
    )


def find_focus(
    nz: int,
    spacing_z_mm: float,
    shape_yx: tuple[int, int],
    labels_of: Callable[[npt.NDArray[np.int64], Box], npt.NDArray[np.uint8]],
    body_of: Callable[[npt.NDArray[np.int64]], Box | None] | None = None,
) -> Focus:
    """Run the coarse pass and derive the focus.

    Parameters
    ----------
    nz, spacing_z_mm
        Canonical slices and their spacing.
    shape_yx
        The model grid.
    labels_of
        ``labels_of(slices, box)``: model-grid labels ``(len(slices), *shape_yx)`` (argmax of one unshifted
        pass run on ``box``, background outside it) of the given canonical slices.
    body_of
        ``body_of(slices)``: the body's box on the model grid (:func:`body_box`) or None; it bounds the coarse
        pass and every box of the focus. Without it the whole grid.
    """
    if nz < MIN_SLICES_FOR_FOCUS:
        return everything(nz, shape_yx)
    picks = coarse_slices(nz, spacing_z_mm)
    grid: Box = (0, shape_yx[0], 0, shape_yx[1])
    body = (body_of(picks) if body_of is not None else None) or grid
    labels = labels_of(picks, body)
    seen = shows_foreground(labels)
    coarse = tuple(int(p) for p in picks)
    if not seen.any():
        return Focus((), coarse)
    hits = np.nonzero(seen)[0]
    runs: list[tuple[int, int, npt.NDArray[np.int64]]] = []
    for run in np.split(hits, np.nonzero(np.diff(picks[hits]) * abs(spacing_z_mm) > MAX_GAP_MM)[0] + 1):
        # one coarse step beyond the outermost slices of a run: the organ cannot hide between samples
        z0 = int(picks[max(run[0] - 1, 0)])
        z1 = int(picks[min(run[-1] + 1, len(picks) - 1)]) + 1
        if runs and z0 <= runs[-1][1]:  # widened runs that touch are one part
            z0, _, before = runs.pop()
            run = np.concatenate([before, run])
        runs.append((z0, z1, run))
    parts = []
    for z0, z1, run in runs:
        seen_boxes = tuple((int(picks[k]), _box(labels[k], shape_yx, body)) for k in run)
        parts.append(FocusPart(z0, z1, _union([box for _, box in seen_boxes]), seen_boxes))
    return Focus(tuple(parts), coarse)


def _box(labels: npt.NDArray[np.uint8], shape_yx: tuple[int, int], body: Box) -> Box:
    """The aligned box around the foreground of one coarse slice's labels, :data:`MARGIN_PX` around it, within
    the body's box."""
    ys, xs = np.nonzero(labels > 0)
    y0, y1 = _aligned(int(ys.min()) - MARGIN_PX, int(ys.max()) + 1 + MARGIN_PX, shape_yx[0])
    x0, x1 = _aligned(int(xs.min()) - MARGIN_PX, int(xs.max()) + 1 + MARGIN_PX, shape_yx[1])
    by0, by1, bx0, bx1 = body
    clipped = (max(y0, by0), min(y1, by1), max(x0, bx0), min(x1, bx1))
    # the coarse labels lie inside the body box (the pass ran there), so the clip keeps them all
    return clipped if clipped[0] < clipped[1] and clipped[2] < clipped[3] else (y0, y1, x0, x1)


def _union(boxes: list[Box]) -> Box:
    array = np.array(boxes)
    return (int(array[:, 0].min()), int(array[:, 1].max()), int(array[:, 2].min()), int(array[:, 3].max()))
