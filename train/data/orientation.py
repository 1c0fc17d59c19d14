"""Recover the canonical orientation of a lone axial CT slice from its anatomy.

Slices exported as pictures have lost their DICOM/NIfTI geometry: they may be transposed, mirrored or
rotated. The canonical orientation the model sees (:data:`litseg.runtime.spec.CANONICAL_ORIENTATION`,
the standard radiological display) has the patient's right on the image's left and the patient's back at
the bottom: the liver lies on the image's left, the spine at the bottom centre. Of the 8 transforms of a
square (the dihedral group: optional transpose, then optional flips, the runtime's
:class:`~litseg.runtime.geometry.Reorientation`), the one that brings a slice there scores best on four
anatomical cues, measured from the body's centre in body radii:

- the liver mask's centroid lies to the patient's right (canonical ``dx < 0``; true on 99.8 % of the MSD
  slices) and, less surely, in front of the body's centre (``dy < 0``; 90 %; weighted by half);
- the spine lies on the midline behind the centre: within a band along the midline, the dense pixels
  (bone and dense contrast, >= 250 HU) lie mostly posterior (97 %). The band keeps out what is dense but
  off the midline (ribs, kidneys, contrast in bowel loops); the aorta in front of the spine helps. Both
  midline bands (vertical and horizontal) are measured, so the cue also says which axis is
  anterior-posterior;
- the table, a dense arc outside the body where the picture shows it, lies behind the patient.

``score = -dx(liver) - dy(liver) / 2 + asymmetry(dense, vertical band) + dy(table)`` in the transformed
frame; the best of the 8 wins, and the margin to the second best says how sure the choice is. Every
feature is a centroid or a count of a pixel set defined without reference to the axes (thresholds,
symmetric morphology, row-and-column hull), so the rule is equivariant: any of the 8 transforms of a
slice recovers the same canonical array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from litseg.runtime.geometry import Reorientation

GenericT = TypeVar("GenericT", bound=np.generic)

#: The 8 transforms of a square slice, identity first (transpose, then flip rows, then flip columns).
DIHEDRAL: tuple[Reorientation, ...] = tuple(
    Reorientation(transpose=t, flip_y=fy, flip_x=fx) for t, fy, fx in product((False, True), repeat=3)
)
#: HU above which a pixel is body tissue (soft tissue; fat is excluded because MSD slices saturate it to 0).
SOFT_TISSUE_FLOOR_HU = 20.0
#: Weight of the liver's anterior position against its right-sided one (a weaker cue).
LIVER_ANTERIOR_WEIGHT = 0.5
#: Tissue blobs smaller than this fraction of the largest are not body (the table's arcs, cables).
MIN_BLOB_FRACTION = 0.05
#: HU from which a pixel counts as dense: cortical bone, contrast-filled vessels and kidneys.
DENSE_HU = 250.0
#: Half-width of the midline band, in body radii (a vertebral body is about 0.12 body radii either side).
BAND_RADII = 0.2
#: Dense pixels count within this many body radii of the centre along the band (not the table, not skin).
BAND_REACH_RADII = 0.85
#: The dense asymmetry is damped by this many pixels per pixel of body area: a few stray pixels say little.
DENSE_PRIOR = 0.005
_PROBE = np.arange(4, dtype=np.int16).reshape(1, 2, 2)  # distinct values: identifies each of the 8


@dataclass(frozen=True)
class Cues:
    """Anatomical cues of one slice in its own frame, as ``(dy, dx)`` pairs.

        ``liver_yx``: the liver's centroid from the body's centre, in body radii. ``dense_yx``: the dense
        asymmetry along each midline band: ``dense_yx[0]`` compares the dense pixels below and above the
        centre within the vertical band (``|dx| < band``), ``dense_yx[1]`` right against left within the
        horizontal band; each in [-1, 1]. ``table_yx``: the direction (unit vector, damped when few pixels show
    it) of the dense pixels outside the body: the table under the patient. All turn like displacements under
    a transform.
    """

    liver_yx: tuple[float, float]
    dense_yx: tuple[float, float]
    table_yx: tuple[float, float]
    body_radius_px: float


@dataclass(frozen=True)
class Orientation:
    """The transform that makes a slice canonical, with the scores that chose it.

    Attributes
    ----------
    transform
        Apply it (``transform.apply_array``) to a ``(1, h, w)`` array to get the canonical slice.
    scores
        The score of each of :data:`DIHEDRAL`, in that order.
    margin
        Best minus second-best score (0: a tie; about 2 x the weaker cue when both are clear).
    """

    transform: Reorientation
    scores: tuple[float, ...]
    margin: float


def transform_vector(t: Reorientation, yx: tuple[float, float]) -> tuple[float, float]:
    """Where a displacement ``(dy, dx)`` points after ``t`` (transpose swaps the axes, flips negate)."""
    dy, dx = (yx[1], yx[0]) if t.transpose else yx
    return (-dy if t.flip_y else dy, -dx if t.flip_x else dx)


def compose(first: Reorientation, second: Reorientation) -> Reorientation:
    """The single transform equal to applying ``first`` and then ``second``."""
    target = second.apply_array(first.apply_array(_PROBE))
    return next(t for t in DIHEDRAL if np.array_equal(t.apply_array(_PROBE), target))


def inverse(t: Reorientation) -> Reorientation:
    return next(u for u in DIHEDRAL if compose(t, u).is_identity)


def _centred_centroid(mask: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Centroid of a mask in pixel-centre coordinates about the image centre (``(n - 1) / 2``)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return float(ys.mean() - (h - 1) / 2), float(xs.mean() - (w - 1) / 2)


def _span_fill(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Each row filled from its first to its last set pixel."""
    any_set = np.asarray(mask.any(axis=1))
    first = np.argmax(mask, axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    cols = np.arange(mask.shape[1])
    return np.asarray(any_set[:, None] & (cols[None, :] >= first[:, None]) & (cols[None, :] <= last[:, None]))


def body_mask(hu: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """The body's region: the tissue blobs (small ones such as the table's arcs dropped), filled along
    every row and every column (the intersection: a hull that bridges the gaps of a thin chest wall
    around black lungs, where hole filling fails)."""
    tissue = ndimage.binary_closing(hu > SOFT_TISSUE_FLOOR_HU, structure=np.ones((3, 3), bool), iterations=2)
    labels, n = ndimage.label(tissue)
    if n == 0:
        raise ValueError(f"no body tissue (> {SOFT_TISSUE_FLOOR_HU:g} HU) in the slice: cannot orient it")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    kept = np.isin(labels, np.nonzero(sizes >= MIN_BLOB_FRACTION * sizes.max())[0])
    return _span_fill(kept) & _span_fill(kept.T).T


def _asymmetry(plus: int, minus: int, prior: float) -> float:
    return (plus - minus) / (plus + minus + prior)


def cues(hu: npt.NDArray[np.floating], liver: npt.NDArray[np.bool_]) -> Cues:
    """The liver and midline-dense cues of a square slice ``(h, w)`` of HU and its liver mask."""
    if hu.ndim != 2 or hu.shape[0] != hu.shape[1] or liver.shape != hu.shape:
        raise ValueError(f"need a square 2-D slice and a mask of its shape; got {hu.shape} and {liver.shape}")
    if not liver.any():
        raise ValueError("the liver mask is empty: the liver cue needs the liver")
    body = body_mask(hu)
    cy, cx = _centred_centroid(body)
    radius = float(np.sqrt(body.sum() / np.pi))
    n = hu.shape[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    dy, dx = (yy - cy) / radius, (xx - cx) / radius
    dense = (hu >= DENSE_HU) & body
    prior = DENSE_PRIOR * float(body.sum())
    vertical = dense & (np.abs(dx) < BAND_RADII) & (np.abs(dy) < BAND_REACH_RADII)
    horizontal = dense & (np.abs(dy) < BAND_RADII) & (np.abs(dx) < BAND_REACH_RADII)
    dense_yx = (
        _asymmetry(int(np.count_nonzero(vertical & (dy > 0))), int(np.count_nonzero(vertical & (dy < 0))), prior),
        _asymmetry(int(np.count_nonzero(horizontal & (dx > 0))), int(np.count_nonzero(horizontal & (dx < 0))), prior),
    )
    table = (hu >= DENSE_HU) & ~ndimage.binary_dilation(body, structure=np.ones((3, 3), bool), iterations=2)
    table_yx = (0.0, 0.0)
    if table.any():
        ty, tx = np.array(_centred_centroid(table)) - (cy, cx)
        weight = float(np.count_nonzero(table)) / (np.count_nonzero(table) + prior) / max(float(np.hypot(ty, tx)), 1e-6)
        table_yx = (float(ty) * weight, float(tx) * weight)
    ly, lx = _centred_centroid(liver)
    return Cues(((ly - cy) / radius, (lx - cx) / radius), dense_yx, table_yx, radius)


def scores(c: Cues) -> tuple[float, ...]:
    """The score of each transform of :data:`DIHEDRAL` for these cues (higher: more canonical)."""
    out = []
    for t in DIHEDRAL:
        liver = transform_vector(t, c.liver_yx)
        dense = transform_vector(t, c.dense_yx)
        table = transform_vector(t, c.table_yx)
        out.append(-liver[1] - LIVER_ANTERIOR_WEIGHT * liver[0] + dense[0] + table[0])
    return tuple(out)


def choose(score_sets: Sequence[Sequence[float]]) -> Orientation:
    """The transform with the highest summed score over one or more slices that share an orientation."""
    total = np.sum(np.asarray(score_sets, dtype=np.float64), axis=0)
    order = np.argsort(-total, kind="stable")
    margin = float(total[order[0]] - total[order[1]])
    return Orientation(DIHEDRAL[int(order[0])], tuple(float(s) for s in total), margin)


def recover(hu: npt.NDArray[np.floating], liver: npt.NDArray[np.bool_]) -> Orientation:
    """The transform that makes one slice canonical, judged from that slice alone."""
    return choose([scores(cues(hu, liver))])


def apply(t: Reorientation, image: npt.NDArray[GenericT]) -> npt.NDArray[GenericT]:
    """Apply a transform to one 2-D slice (the runtime's reorientation kernel on a one-slice stack; a
    boolean mask goes through as uint8)."""
    array = np.ascontiguousarray(image)
    if array.dtype == np.bool_:
        out = t.apply_array(array.view(np.uint8)[None])[0].view(np.bool_)
    else:
        out = t.apply_array(array[None])[0]
    return np.asarray(out, dtype=array.dtype)
