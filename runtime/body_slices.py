"""Which slices of a CT show a head, a neck or a limb, a chest or an abdomen: from the HU only.

How a series is read (on a subsampled grid, about 3.5 mm in-plane and at most 128 slices): the body of
each slice is everything above -300 HU, opened by one pixel (which removes the table and the head holder)
and filled along rows and columns (lungs and bowel gas count as body). Each slice is typed by its filled
area, its air fraction (< -500 HU) and the bone (> 300 HU) in its outer 12 mm:

- head: area under 350 cm^2 with a bony rim (skull) over 25 % of the outer 12 mm;
- small: area under 250 cm^2 without a skull (neck, limbs);
- chest: air over 30 % of the body (lungs; slices at the liver dome hold 15-25 %);
- abdomen: every other slice with a body (pelvis included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .hu import TISSUE_HU
from .volume import Volume

#: The body outline before it is opened and filled (lungs and bowel gas count as body through the fill). A
#: threshold of its own, not TISSUE_HU: the slice types' area limits below were set with it.
BODY_OUTLINE_HU = -300.0
CHEST_AIR_FRACTION = 0.3
BONE_HU = 300.0
SLICE_TYPES = ("head", "small", "chest", "abdomen")
GRID_MM = 3.5
MAX_SLICES = 128


@dataclass(frozen=True)
class BodySlices:
    """Per-slice body measurements on the subsampled grid (``z_mm`` ascending is not assumed)."""

    z_mm: npt.NDArray[np.float64]
    centre_x_mm: npt.NDArray[np.float64]
    area_cm2: npt.NDArray[np.float64]
    air_fraction: npt.NDArray[np.float64]
    kind: npt.NDArray[np.str_]


def slice_axis(affine: npt.NDArray[np.float64]) -> tuple[int, list[int]]:
    """The numpy axis that runs most head-foot, and the two in-plane numpy axes."""
    slice_np_axis = 2 - int(np.argmax(np.abs(affine[2, :3])))
    return slice_np_axis, [ax for ax in (0, 1, 2) if ax != slice_np_axis]


def slice_first(volume: Volume, step: int, max_slices: int | None) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """A strided view with the most head-foot array axis first, and the affine of that view.

    The view's index ``(c, b, a)`` (last axis first, as in :class:`Volume`) maps to LPS through the
    returned 4x4 affine, so every measurement stays in world coordinates whatever the array order.
    """
    affine = volume.affine_lps
    slice_np_axis, plane = slice_axis(affine)
    n_slices = volume.array.shape[slice_np_axis]
    z_step = 1 if max_slices is None else max(1, math.ceil(n_slices / max_slices))
    view = np.moveaxis(volume.array, slice_np_axis, 0)[::z_step, ::step, ::step]
    sub = np.zeros((4, 4))
    sub[:, 0] = affine[:, 2 - plane[1]] * step
    sub[:, 1] = affine[:, 2 - plane[0]] * step
    sub[:, 2] = affine[:, 2 - slice_np_axis] * z_step
    sub[:, 3] = affine[:, 3]
    return view, sub


def _erode(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    out = mask.copy()
    out[:, 1:, :] &= mask[:, :-1, :]
    out[:, :-1, :] &= mask[:, 1:, :]
    out[:, :, 1:] &= mask[:, :, :-1]
    out[:, :, :-1] &= mask[:, :, 1:]
    return out


def _dilate(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    out = mask.copy()
    out[:, 1:, :] |= mask[:, :-1, :]
    out[:, :-1, :] |= mask[:, 1:, :]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def _fill(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Pixels between the first and last body pixel of both their row and their column."""
    filled = np.ones_like(mask)
    for axis in (1, 2):
        n = mask.shape[axis]
        first = np.argmax(mask, axis=axis)
        last = n - 1 - np.argmax(np.flip(mask, axis=axis), axis=axis)
        any_: npt.NDArray[np.bool_] = np.asarray(mask.any(axis=axis))
        idx = np.arange(n)
        if axis == 2:
            span = (idx >= first[..., None]) & (idx <= last[..., None]) & any_[..., None]
        else:
            span = (idx[:, None] >= first[:, None, :]) & (idx[:, None] <= last[:, None, :]) & any_[:, None, :]
        filled &= span
    return filled


def body_slices(hu: Volume) -> BodySlices:
    """Type every sampled slice (see the module docstring) and measure its body centre and area."""
    _, plane = slice_axis(hu.affine_lps)
    spacing = min(float(np.linalg.norm(hu.affine_lps[:3, 2 - ax])) for ax in plane)
    step = max(1, round(GRID_MM / spacing))
    view, sub = slice_first(hu, step=step, max_slices=MAX_SLICES)
    values = np.ascontiguousarray(view, dtype=np.float32)
    nz, nb, nc = values.shape
    pixel_mm = float(np.sqrt(np.linalg.norm(sub[:3, 0]) * np.linalg.norm(sub[:3, 1])))
    pixel_cm2 = float(np.linalg.norm(np.cross(sub[:3, 0], sub[:3, 1]))) / 100.0
    body = _fill(_dilate(_erode(values > BODY_OUTLINE_HU)))
    area = body.sum(axis=(1, 2)) * pixel_cm2
    # world x of every pixel of a slice (the slice's own offset added below) for centres and sides
    c_idx, b_idx = np.meshgrid(np.arange(nc), np.arange(nb))
    x_plane = sub[0, 0] * c_idx + sub[0, 1] * b_idx
    counts = np.maximum(body.sum(axis=(1, 2)), 1)
    a_idx = np.arange(nz, dtype=np.float64)
    centre_x = (body * x_plane).sum(axis=(1, 2)) / counts + sub[0, 2] * a_idx + sub[0, 3]
    mid = np.array([(nc - 1) / 2, (nb - 1) / 2])
    z_mm = sub[2, 0] * mid[0] + sub[2, 1] * mid[1] + sub[2, 2] * a_idx + sub[2, 3]
    air = (body & (values < TISSUE_HU)).sum(axis=(1, 2)) / counts
    inner = body
    for _ in range(max(1, round(12.0 / pixel_mm))):
        inner = _erode(inner)
    rim = body & ~inner
    rim_bone = (rim & (values > BONE_HU)).sum(axis=(1, 2)) / np.maximum(rim.sum(axis=(1, 2)), 1)
    kind = np.full(nz, "", dtype="<U7")
    has_body = area >= 20.0
    kind[has_body] = "abdomen"
    kind[has_body & (air > CHEST_AIR_FRACTION)] = "chest"
    kind[has_body & (area < 250.0)] = "small"
    kind[has_body & (area < 350.0) & (rim_bone > 0.25)] = "head"
    return BodySlices(z_mm, centre_x, area, air, kind)
