"""Plausibility of a liver segmentation, from the labels, the CT numbers and the geometry only.

:func:`assess` returns warnings a reader must see before trusting a result: no liver found; a liver volume
outside the adult range; a liver that is not in the patient's upper right abdomen; a series that does not
look abdominal (a head, neck or chest scan). It reads no files and no patient data: only the label map
and the HU volume on the same grid, in LPS millimetres, so a flipped, transposed or oblique series of the
same anatomy gets the same verdict.

How a series is read (which slices show head, neck, chest or abdomen): :mod:`~litseg.runtime.body_slices`.

The liver must sit in the upper right abdomen: its centre at least 10 mm right of the body's centre over
the liver's slices; less than half of it in chest slices; its centre at most 150 mm below the lung bases
(the lowest slice of the run of slices with air over 5 % that starts at a chest slice, or at the top of a
scan whose top slice holds lung bases) when the scan shows lungs; its top within 60 mm of the top of a scan
that shows none (such a scan starts below the diaphragm, where the liver begins); its centre in the upper
half of the abdomen when the scan shows 30 cm of abdomen or more. Each rule applies only when its landmark
is in the scan, so a partial scan (a few slices) is judged on what it shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .body_slices import MAX_SLICES, SLICE_TYPES, BodySlices, body_slices, slice_first
from .volume import Volume

#: Adult liver volume (liver + tumours) outside which a segmentation is flagged, mL. Normal livers are
#: 1.2-1.9 L; hepatomegaly and large tumour burden reach 3 L; below 0.6 L is a partial or failed result.
LIVER_VOLUME_ML = (600.0, 3500.0)
#: The liver centroid must lie at least this far to the patient's right of the body's centre (mm, LPS -x).
MIN_RIGHT_OFFSET_MM = 10.0
#: The liver centre lies at most this far below the lung bases (mm); a normal one lies 0-10 cm below them.
MAX_BELOW_LUNG_BASE_MM = 150.0
#: With at least this much abdomen in the scan (mm), the liver centre must lie in its upper half.
MIN_ABDOMEN_FOR_HALF_MM = 300.0
#: Above this fraction of its voxels in chest slices, a liver is in the chest.
MAX_CHEST_FRACTION = 0.5
#: Without lungs in the scan (it starts below the diaphragm) the liver's top lies within this of its top (mm).
MAX_TOP_GAP_MM = 60.0
#: A series is abdominal when at least this fraction of its body slices are abdominal or pelvic.
MIN_ABDOMINAL_FRACTION = 0.35
#: Lung bases: a run of slices with air over this fraction of the body below a chest slice, or from the top
#: of a scan whose top slice holds more than TOP_LUNG_AIR_FRACTION (a pelvic scan's top holds a few % gas).
TOP_LUNG_AIR_FRACTION = 0.1
LUNG_BASE_AIR_FRACTION = 0.05


@dataclass(frozen=True)
class PlausibilityWarning:
    """One finding: a stable machine-readable ``code`` and a sentence for the reader."""

    code: str
    message: str


@dataclass(frozen=True)
class Plausibility:
    """The verdict of :func:`assess`.

    Attributes
    ----------
    liver_plausible
        ``True`` when no warning was raised.
    warnings
        Findings in a fixed order: ``no_liver``, ``liver_volume_out_of_range``, ``liver_not_right``,
        ``liver_not_upper_abdomen``, ``not_abdominal``.
    checks
        The measured values behind the verdict (JSON-serialisable), e.g. ``liver_volume_ml``.
    """

    liver_plausible: bool
    warnings: tuple[PlausibilityWarning, ...]
    checks: dict[str, object] = field(default_factory=dict)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(w.code for w in self.warnings)

    def report(self) -> dict[str, object]:
        """The ``plausibility`` section of the JSON report."""
        return {
            "liver_plausible": self.liver_plausible,
            "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
            "checks": dict(self.checks),
        }


@dataclass(frozen=True)
class _Liver:
    """Liver tissue (labels > 0): its size and where it lies."""

    voxels: int
    volume_ml: float
    centroid_lps: npt.NDArray[np.float64]
    z_range_mm: tuple[float, float]
    truncated: bool  # the liver reaches the first or last slice: the scan cuts it
    per_slice: npt.NDArray[np.float64]  # voxels counted per slice (every other row and column)

    def checks(self) -> dict[str, object]:
        return {
            "liver_volume_ml": _round(self.volume_ml),
            "liver_centroid_lps_mm": [_round(float(v)) for v in self.centroid_lps],
            "liver_z_range_mm": [_round(v) for v in self.z_range_mm],
            "liver_truncated": self.truncated,
        }


def assess(labels: Volume, hu: Volume) -> Plausibility:
    """Check that a liver segmentation is anatomically plausible.

    Parameters
    ----------
    labels
        Label map on the source grid, ``(z, y, x)`` uint8: 0 background, 1 liver, 2 tumour (any value
        above 0 counts as liver tissue).
    hu
        The CT in Hounsfield units on the same grid and affine (any real dtype).

    Returns
    -------
    Plausibility
        ``liver_plausible``, the warnings and the measured checks.

    Raises
    ------
    ValueError
        When the two volumes do not share a grid.
    """
    if labels.shape_zyx != hu.shape_zyx or not np.allclose(labels.affine_lps, hu.affine_lps, atol=1e-3):
        raise ValueError(
            f"labels {labels.shape_zyx} and hu {hu.shape_zyx} must share one grid and affine; "
            "pass the labels restored onto the source series"
        )
    slices = body_slices(hu)
    body = slices.kind != ""
    checks: dict[str, object] = {
        "slice_types": {kind: int((slices.kind == kind).sum()) for kind in SLICE_TYPES},
        "median_body_area_cm2": _round(float(np.median(slices.area_cm2[body]))) if body.any() else 0.0,
    }
    found: list[PlausibilityWarning] = []
    liver = _liver(labels)
    if liver is None:
        checks["liver_volume_ml"] = 0.0
        found.append(PlausibilityWarning("no_liver", "no liver was found in the series"))
    else:
        checks.update(liver.checks())
        found.extend(_volume_warnings(liver))
        if body.any():
            found.extend(_side_warnings(liver, slices, checks))
            found.extend(_height_warnings(liver, slices, checks))
    not_abdominal = _series_warning(slices)
    if not_abdominal is not None:
        found.append(not_abdominal)
    return Plausibility(not found, tuple(found), checks)


def _round(value: float, digits: int = 1) -> float:
    return round(value, digits)


def shown(value: float, limit: float) -> str:
    """``value`` with the fewest decimals (0 to 3) that keep it on its side of ``limit`` once printed, so a
    warning never reads "10 mm ... expected at least 10 mm" for 9.8 mm (or "600 mL is outside 600-3500")."""
    for digits in range(4):
        printed = round(value, digits)
        if (printed - limit) * (value - limit) > 0 or value == limit:
            return f"{value:.{digits}f}"
    return f"{value:.3f}"


def _liver(labels: Volume) -> _Liver | None:
    """Volume on the full grid; centroid, extent and truncation on every other row and column."""
    voxels = int(np.count_nonzero(labels.array))
    if voxels == 0:
        return None
    view, affine = slice_first(labels, step=1, max_slices=None)
    flat = view.reshape(view.shape[0], -1) if view.flags.c_contiguous else None
    present = (flat.max(axis=1) if flat is not None else view.max(axis=(1, 2))) > 0
    occupied = np.nonzero(present)[0]
    first, last = int(occupied[0]), int(occupied[-1])
    for step in (2, 1):  # every other row and column, or all where a thin liver falls between them
        mask = view[first : last + 1, ::step, ::step] > 0
        rows = mask.sum(axis=2, dtype=np.int64)  # (slices, rows): voxels per row
        counts = rows.sum(axis=1)
        if counts.sum():
            break
    cols = mask.sum(axis=1, dtype=np.int64)  # (slices, columns)
    total = float(counts.sum())
    index = np.array(
        [
            float(cols.sum(axis=0) @ np.arange(cols.shape[1])) / total * step,
            float(rows.sum(axis=0) @ np.arange(rows.shape[1])) / total * step,
            float(counts @ np.arange(counts.size)) / total + first,
            1.0,
        ]
    )
    per_slice = np.zeros(view.shape[0])
    per_slice[first : last + 1] = counts
    z_ends = sorted(float((affine @ np.array([index[0], index[1], float(k), 1.0]))[2]) for k in (first, last))
    return _Liver(
        voxels=voxels,
        volume_ml=voxels * labels.voxel_volume_ml,
        centroid_lps=(affine @ index)[:3],
        z_range_mm=(z_ends[0], z_ends[1]),
        truncated=first == 0 or last == view.shape[0] - 1,
        per_slice=per_slice,
    )


def _volume_warnings(liver: _Liver) -> list[PlausibilityWarning]:
    lo, hi = LIVER_VOLUME_ML
    if lo <= liver.volume_ml <= hi:
        return []
    cut = " (the scan range cuts the liver)" if liver.truncated else ""
    limit = lo if liver.volume_ml < lo else hi
    message = f"liver volume {shown(liver.volume_ml, limit)} mL is outside {lo:.0f}-{hi:.0f} mL{cut}"
    return [PlausibilityWarning("liver_volume_out_of_range", message)]


def _side_warnings(liver: _Liver, slices: BodySlices, checks: dict[str, object]) -> list[PlausibilityWarning]:
    """The liver's centre against the body's centre over the liver's slices (LPS: the right is -x)."""
    body = slices.kind != ""
    z_lo, z_hi = liver.z_range_mm
    near = body & (slices.z_mm >= z_lo - 1e-6) & (slices.z_mm <= z_hi + 1e-6)
    if not near.any():  # a thin liver between the sampled slices: the nearest body slice
        candidates = np.nonzero(body)[0]
        near = np.zeros_like(body)
        near[candidates[np.argmin(np.abs(slices.z_mm[candidates] - liver.centroid_lps[2]))]] = True
    offset = float(liver.centroid_lps[0] - slices.centre_x_mm[near].mean())
    checks["liver_offset_left_mm"] = _round(offset)
    if offset <= -MIN_RIGHT_OFFSET_MM:
        return []
    return [PlausibilityWarning("liver_not_right", side_message(offset))]


def side_message(offset_left_mm: float) -> str:
    """The ``liver_not_right`` sentence for a liver centre ``offset_left_mm`` to the patient's left of the
    body's midline (negative: to the right, but less than :data:`MIN_RIGHT_OFFSET_MM`)."""
    if offset_left_mm > 0:
        where = f"{shown(offset_left_mm, 0.0)} mm to the patient's left of"
    else:
        where = f"only {shown(-offset_left_mm, MIN_RIGHT_OFFSET_MM)} mm right of"
    return (
        f"the liver's centre lies {where} the body's midline "
        f"(expected at least {MIN_RIGHT_OFFSET_MM:.0f} mm to the patient's right)"
    )


def _height_warnings(liver: _Liver, slices: BodySlices, checks: dict[str, object]) -> list[PlausibilityWarning]:
    """Upper abdomen: below the chest, not far below the lung bases, up to the top of a scan without lungs,
    in the upper half of a long abdomen."""
    centre_z, liver_top = float(liver.centroid_lps[2]), liver.z_range_mm[1]
    sampled = liver.per_slice[:: max(1, math.ceil(liver.per_slice.size / MAX_SLICES))]
    chest_fraction = float(sampled[slices.kind == "chest"].sum() / max(float(sampled.sum()), 1.0))
    lung_base = _lung_base(slices)
    abdomen = slices.z_mm[slices.kind == "abdomen"]
    top = lung_base if lung_base is not None else (float(abdomen.max()) if abdomen.size else None)
    bottom = float(abdomen.min()) if abdomen.size else None
    checks["lung_base_z_mm"] = None if lung_base is None else _round(lung_base)
    checks["liver_fraction_in_chest_slices"] = _round(chest_fraction, 3)
    reasons = []
    if chest_fraction > MAX_CHEST_FRACTION:
        reasons.append(f"{shown(100 * chest_fraction, 100 * MAX_CHEST_FRACTION)} % of it lies in slices of the chest")
    if lung_base is not None and centre_z < lung_base - MAX_BELOW_LUNG_BASE_MM:
        below = shown(lung_base - centre_z, MAX_BELOW_LUNG_BASE_MM)
        reasons.append(f"its centre lies {below} mm below the lung bases")
    body_top = float(slices.z_mm[slices.kind != ""].max())
    if lung_base is None and body_top - liver_top > MAX_TOP_GAP_MM:
        reasons.append(
            f"its top lies {shown(body_top - liver_top, MAX_TOP_GAP_MM)} mm below the top of a scan that shows "
            "no lungs (a liver reaches up to the diaphragm)"
        )
    if top is not None and bottom is not None and top - bottom >= MIN_ABDOMEN_FOR_HALF_MM:
        checks["abdomen_z_range_mm"] = [_round(bottom), _round(top)]
        if centre_z < (top + bottom) / 2:
            reasons.append(f"its centre lies in the lower half of the {top - bottom:.0f} mm of abdomen scanned")
    if not reasons:
        return []
    return [
        PlausibilityWarning("liver_not_upper_abdomen", "the liver is not in the upper abdomen: " + "; ".join(reasons))
    ]


def _lung_base(slices: BodySlices) -> float | None:
    """z of the lowest slice of lung: the run of slices with air over 5 % that starts at a chest slice, or
    at the top of the scan when its top slice holds lung bases (air over 10 %; the top of a pelvic scan
    holds a few % of bowel gas)."""
    body = np.nonzero(slices.kind != "")[0]
    if body.size == 0:
        return None
    order = body[np.argsort(-slices.z_mm[body])]
    run = bool(slices.air_fraction[order[0]] > TOP_LUNG_AIR_FRACTION)
    base = float(slices.z_mm[order[0]]) if run else None
    for k in order:
        if slices.kind[k] == "chest":
            run, base = True, float(slices.z_mm[k])
        elif run and slices.air_fraction[k] > LUNG_BASE_AIR_FRACTION:
            base = float(slices.z_mm[k])
        else:
            run = False
    return base


def _series_warning(slices: BodySlices) -> PlausibilityWarning | None:
    body = slices.kind != ""
    counts = {kind: int((slices.kind == kind).sum()) for kind in SLICE_TYPES}
    n = int(body.sum())
    abdominal = counts["abdomen"]
    if n and abdominal / n >= MIN_ABDOMINAL_FRACTION:
        return None
    if n == 0:
        return PlausibilityWarning("not_abdominal", "the series shows no body (nothing above -300 HU)")
    seen = ", ".join(f"{kind} {counts[kind]}" for kind in SLICE_TYPES if counts[kind])
    return PlausibilityWarning(
        "not_abdominal",
        f"the series does not look abdominal: {abdominal} of {n} body slices show abdomen ({seen})",
    )
