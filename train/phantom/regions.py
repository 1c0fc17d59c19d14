"""Where a phantom case is scanned: the body regions, their z ranges and slices, and seeded region mixes.

Trunk regions share one frame (LPS millimetres, liver dome at z = 0) whose landmarks come from the
:class:`~litseg.train.phantom.torso.TorsoPlan`; the head and the neck have their own frames
(:mod:`.head`, :mod:`.neck`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .scene import u

if TYPE_CHECKING:
    from .torso import TorsoPlan

#: Body regions a case can cover; only the first two contain liver.
REGIONS = ("abdomen", "chest-abdomen-pelvis", "chest", "pelvis", "head", "neck")
LIVER_REGIONS = ("abdomen", "chest-abdomen-pelvis")
THICKNESSES_MM = (0.7, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
#: Longer scans get thicker slices rather than more of them (generation time grows with slices).
MAX_SLICES = 300
_MIX_STREAM = 0x6D6978


def parse_region_mix(text: str) -> tuple[tuple[str, float], ...]:
    """``"abdomen:0.6,chest:0.4"`` -> ``(("abdomen", 0.6), ("chest", 0.4))`` with weights summing to 1."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition(":")
        if not sep or name not in REGIONS:
            raise ValueError(f"region mix entry {part!r} must be REGION:WEIGHT with REGION one of {REGIONS}")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"region mix entry {part!r}: weight {weight!r} is not a number") from None
        if not value > 0 or name in mix:
            raise ValueError(f"region mix entry {part!r}: weights must be > 0 and each region named once")
        mix[name] = value
    total = sum(mix.values())
    return tuple((name, value / total) for name, value in mix.items())


def region_for_seed(seed: int, mix: Sequence[tuple[str, float]]) -> str:
    """The region of case ``seed`` under a mix: a draw from the seed's own stream, independent of the case."""
    draw = float(np.random.default_rng([seed, _MIX_STREAM]).random())
    total = 0.0
    for name, weight in mix:
        total += weight
        if draw < total:
            return name
    return mix[-1][0]


@dataclass
class Scan:
    """Where and how a case is scanned (z in the region's frame)."""

    pixel: float
    thickness: float
    spacing_z: float
    slices: int
    z_bottom: float


def fit_scan(
    scan: Scan, z_range: tuple[float, float], focus: float, anchor: str, slices: int | None, fixed_thickness: bool
) -> Scan:
    """Slices covering ``z_range`` (thicker ones past :data:`MAX_SLICES` unless the thickness is fixed);
    a fixed number of ``slices`` centres on ``focus`` inside the range, held at the ``anchor`` end
    ("bottom", "top", "centre") when it is longer than the range."""
    lo, hi = z_range
    thickness, spacing_z = scan.thickness, scan.spacing_z
    if slices is not None:
        length = (slices - 1) * spacing_z
        if length <= hi - lo:
            bottom = min(max(focus - length / 2, lo), hi - length)
        else:
            bottom = {"bottom": lo, "top": hi - length}.get(anchor, (lo + hi - length) / 2)
        return Scan(scan.pixel, thickness, spacing_z, slices, bottom)
    n = round((hi - lo) / spacing_z) + 1
    if n > MAX_SLICES and not fixed_thickness:
        ratio = spacing_z / thickness
        wanted = (hi - lo) / (MAX_SLICES - 1) / ratio
        thickness = next((t for t in THICKNESSES_MM if t >= wanted), THICKNESSES_MM[-1])
        spacing_z = thickness * ratio
        n = round((hi - lo) / spacing_z) + 1
    return Scan(scan.pixel, thickness, spacing_z, int(np.clip(n, 24, MAX_SLICES)), lo)


def trunk_range(
    region: str, plan: TorsoPlan, liver_z: tuple[float, float], xrng: np.random.Generator
) -> tuple[tuple[float, float], float, str]:
    """``(z_range, focus, anchor)`` of a trunk region; chest and pelvis scans stop short of the liver."""
    top = plan.apex_z + u(xrng, 0, 20)
    bottom = plan.symphysis_z - u(xrng, 30, 60)
    if region == "chest":
        lo = liver_z[1] + u(xrng, 5, 20)
        return (lo, top), max(lo + 60, 80.0), "bottom"
    if region == "pelvis":
        hi = min(plan.crest_z + u(xrng, 10, 40), liver_z[0] - 10)
        return (bottom, hi), min(plan.symphysis_z + 60, hi - 40), "top"
    return (bottom, top), -40.0, "centre"  # chest-abdomen-pelvis
