"""Where the model must look: a cheap first pass that bounds the slices and the in-plane region of the liver.

An abdominal CT holds the liver in a third to a half of its slices and in a part of each slice. The full
inference (with its test-time shifts) is the whole cost of a run, so litseg first runs the same network
once on every k-th slice (about one per :data:`COARSE_STEP_MM`), takes the slices and the in-plane box in
which it sees liver or tumor, widens both (by one coarse step and the slices between, and by
:data:`MARGIN_PX` of context around the box, aligned to the network's pooling grid), and runs the full
pass there only. Outside the focus the probabilities are background. Because the liver is one connected
organ, a widening by one coarse step cannot lose it between two sampled slices; the cost on held-out data
is measured and reported (README, issue 15), and ``RunConfig(focus=False)`` / ``--no-focus`` runs the full
pass everywhere.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Focus:
    """The canonical slices ``[z0, z1)`` and model-grid box ``[y0, y1) x [x0, x1)`` of the full pass.

    ``coarse`` lists the canonical slices the first pass saw (empty when there was no first pass).
    """

    z_range: tuple[int, int]
    box_yx: tuple[int, int, int, int]
    coarse: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return self.z_range[1] <= self.z_range[0]


def everything(nz: int, shape_yx: tuple[int, int]) -> Focus:
    """No focus: every slice, the whole grid."""
    return Focus((0, nz), (0, shape_yx[0], 0, shape_yx[1]))


def focus_fraction(focus: Focus, nz: int, shape_yx: tuple[int, int]) -> float:
    """The share of the full model work the focus keeps (slices x area), for the report."""
    if nz == 0 or focus.empty:
        return 0.0
    y0, y1, x0, x1 = focus.box_yx
    area = (y1 - y0) * (x1 - x0) / (shape_yx[0] * shape_yx[1])
    return (focus.z_range[1] - focus.z_range[0]) / nz * area


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


def find_focus(
    nz: int,
    spacing_z_mm: float,
    shape_yx: tuple[int, int],
    labels_of: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.uint8]],
) -> Focus:
    """Run the coarse pass and derive the focus.

    Parameters
    ----------
    nz, spacing_z_mm
        Canonical slices and their spacing.
    shape_yx
        The model grid.
    labels_of
        Model-grid labels ``(len(slices), *shape_yx)`` (argmax of one unshifted pass) of the given slices.
    """
    if nz < MIN_SLICES_FOR_FOCUS:
        return everything(nz, shape_yx)
    picks = coarse_slices(nz, spacing_z_mm)
    labels = labels_of(picks)
    seen = (labels > 0).reshape(len(picks), -1).sum(axis=1) >= MIN_FOREGROUND_PX
    if not seen.any():
        return Focus((0, 0), (0, 0, 0, 0), tuple(int(p) for p in picks))
    hits = np.nonzero(seen)[0]
    # one coarse step beyond the outermost slices that show liver: the organ cannot hide between samples
    z0 = int(picks[max(hits[0] - 1, 0)])
    z1 = int(picks[min(hits[-1] + 1, len(picks) - 1)]) + 1
    ys, xs = np.nonzero((labels[hits] > 0).any(axis=0))
    y0, y1 = _aligned(int(ys.min()) - MARGIN_PX, int(ys.max()) + 1 + MARGIN_PX, shape_yx[0])
    x0, x1 = _aligned(int(xs.min()) - MARGIN_PX, int(xs.max()) + 1 + MARGIN_PX, shape_yx[1])
    return Focus((z0, z1), (y0, y1, x0, x1), tuple(int(p) for p in picks))
