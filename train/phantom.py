"""A realistic synthetic abdominal CT phantom in the LiTS17 layout.

``litseg-phantom --out DIR --cases N --seed S`` writes ``volume-<n>.nii.gz`` (int16 HU) and
``segmentation-<n>.nii.gz`` (0 background, 1 liver, 2 tumor), deterministic per seed, optionally also
as DICOM series. The anatomy (body wall, spine, ribs, table, liver with vessels and tumors, and the
neighbours that cause false positives: spleen, kidneys, stomach, pancreas, gallbladder, heart, lungs,
bowel) is drawn with analytic shapes, elastically deformed, with partial volume over the slice
thickness, scanner blur, correlated noise and low-frequency texture. See docs/phantom.md for the
numbers and their sources.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from litseg.runtime.volume import Volume

from . import phantom_render as pr

log = logging.getLogger(__name__)

#: LiTS header quirks a case can carry (see docs/phantom.md).
QUIRKS = ("none", "ras-array", "flipped-z", "mask-affine-mismatch", "fake-spacing")


@dataclass(frozen=True)
class PhantomOptions:
    """Case-level choices; ``None`` means drawn at random from the realistic range."""

    contrast: bool | None = None
    slices: int | None = None
    pixel_spacing_mm: float | None = None
    slice_thickness_mm: float | None = None
    tumors: int | None = None
    quirk: str = "none"
    rows: int = 512

    def __post_init__(self) -> None:
        if self.quirk not in QUIRKS:
            raise ValueError(f"quirk must be one of {QUIRKS}; got {self.quirk!r}")
        if self.slices is not None and not 8 <= self.slices <= 1000:
            raise ValueError(f"slices must be between 8 and 1000; got {self.slices}")
        if self.tumors is not None and not 0 <= self.tumors <= 30:
            raise ValueError(f"tumors must be between 0 and 30; got {self.tumors}")


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """A generated case in canonical LPS orientation (columns +L, rows +P, slices +S)."""

    hu: Volume  # int16
    labels: Volume  # uint8, same geometry
    info: dict[str, object] = field(default_factory=dict)


class _Scene:
    """Collects shapes (rows of ``phantom_render`` parameters), back to front."""

    def __init__(self, margin_mm: float, deform_mm: float) -> None:
        self.rows: list[npt.NDArray[np.float64]] = []
        self.margin = margin_mm
        self.deform_mm = deform_mm  # the largest displacement the deformation field can make

    def _add(self, row: npt.NDArray[np.float64]) -> None:
        self.rows.append(row)

    def ellipsoid(
        self,
        center: npt.ArrayLike,
        radii: npt.ArrayLike,
        hu: float,
        *,
        angle: float = 0.0,
        label: int = pr.KEEP,
        deform: bool = False,
        texture: float = 0.0,
        soft: float = 0.0,
        core: tuple[float, float] = (0.0, 0.0),
        rim: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        c = np.asarray(center, dtype=np.float64)
        r = np.asarray(radii, dtype=np.float64)
        row = np.zeros(pr.NPARAM)
        row[pr.KIND] = pr.ELLIPSOID
        row[[pr.CX, pr.CY, pr.CZ]] = c
        row[[pr.RX, pr.RY, pr.RZ]] = r
        row[pr.ANGLE], row[pr.HU], row[pr.LABEL] = angle, hu, label
        row[pr.COS], row[pr.SIN] = math.cos(angle), math.sin(angle)
        row[pr.DEFORM], row[pr.TEXTURE], row[pr.SOFT] = float(deform), texture, soft
        row[pr.CORE_FRAC], row[pr.CORE_HU] = core
        row[pr.RIM_FRAC], row[pr.RIM_HU] = rim
        reach = max(r[0], r[1]) * 1.05 + self.margin + soft * 2 + (self.deform_mm if deform else 0.0)
        row[[pr.XMIN, pr.XMAX, pr.YMIN, pr.YMAX]] = (c[0] - reach, c[0] + reach, c[1] - reach, c[1] + reach)
        zreach = r[2] * 1.05 + self.margin + soft * 2 + (self.deform_mm if deform else 0.0)
        row[[pr.ZMIN, pr.ZMAX]] = (c[2] - zreach, c[2] + zreach)
        self._add(row)

    def capsule(
        self,
        p0: npt.ArrayLike,
        p1: npt.ArrayLike,
        radius: float,
        hu: float,
        *,
        label: int = pr.KEEP,
        deform: bool = False,
        texture: float = 0.0,
        soft: float = 0.0,
    ) -> None:
        row = np.zeros(pr.NPARAM)
        row[pr.KIND] = pr.CAPSULE
        row[[pr.CX, pr.CY, pr.CZ]] = p0
        row[[pr.RX, pr.RY, pr.RZ]] = p1
        row[pr.ANGLE], row[pr.HU], row[pr.LABEL] = radius, hu, label
        row[pr.DEFORM], row[pr.TEXTURE], row[pr.SOFT] = float(deform), texture, soft
        reach = radius * 1.05 + self.margin + soft * 2 + (self.deform_mm if deform else 0.0)
        lo = np.minimum(p0, p1) - reach
        hi = np.maximum(p0, p1) + reach
        row[[pr.XMIN, pr.XMAX, pr.YMIN, pr.YMAX, pr.ZMIN, pr.ZMAX]] = (
            lo[0],
            hi[0],
            lo[1],
            hi[1],
            lo[2],
            hi[2],
        )
        self._add(row)

    def ring(
        self,
        center_xy: tuple[float, float],
        semi_axes: tuple[float, float],
        tube: float,
        z: float,
        theta: tuple[float, float],
        hu: float,
        *,
        slope: float = 0.0,
        extrude: bool = False,
    ) -> None:
        row = np.zeros(pr.NPARAM)
        row[pr.KIND] = pr.RING
        row[[pr.CX, pr.CY, pr.CZ]] = (center_xy[0], center_xy[1], z)
        row[[pr.RX, pr.RY, pr.RZ]] = (semi_axes[0], semi_axes[1], tube)
        row[pr.HU] = hu
        row[pr.THETA0], row[pr.THETA1] = theta
        row[pr.RING_SLOPE], row[pr.RING_EXTRUDE] = slope, float(extrude)
        reach = tube + self.margin
        row[[pr.XMIN, pr.XMAX, pr.YMIN, pr.YMAX]] = (
            center_xy[0] - semi_axes[0] - reach,
            center_xy[0] + semi_axes[0] + reach,
            center_xy[1] - semi_axes[1] - reach,
            center_xy[1] + semi_axes[1] + reach,
        )
        if extrude:
            row[[pr.ZMIN, pr.ZMAX]] = (-1e9, 1e9)
        else:
            row[[pr.ZMIN, pr.ZMAX]] = (z - slope - tube - self.margin, z + tube + self.margin)
        self._add(row)

    def array(self) -> npt.NDArray[np.float64]:
        return np.ascontiguousarray(np.stack(self.rows))


@dataclass
class _Anatomy:
    """Random draws shared by the scene builder (all mm, LPS; liver dome at z = 0)."""

    a: float  # body semi-axis, left-right
    b: float  # body semi-axis, anterior-posterior
    fat: float
    muscle: float
    liver_height: float
    contrast: bool
    liver_hu: float
    liver_seed: int = 0  # the liver's own stream, so that rescaling it redraws the same shape
    liver_scale: float = 1.0


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _liver_shapes(scene: _Scene, an: _Anatomy, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Right lobe (dome under the diaphragm), left lobe over the midline, caudate; returns the ellipsoids."""
    rng = np.random.default_rng(an.liver_seed)
    a, b, s, h = an.a, an.b, an.liver_scale, an.liver_height
    zc = -h / 2
    lobes = [
        (np.array([-0.42 * a, 0.02 * b, zc]), np.array([0.34 * a, 0.55 * b, 0.5 * h]), _u(rng, -0.3, 0.1)),
        (
            np.array([0.02 * a, -0.42 * b, zc + 0.18 * h]),
            np.array([0.30 * a, 0.26 * b, 0.28 * h]),
            _u(rng, -0.4, 0.1),
        ),
        (np.array([-0.10 * a, 0.22 * b, zc + 0.12 * h]), np.array([0.10 * a, 0.13 * b, 0.22 * h]), 0.0),
    ]
    liver_anchor = lobes[0][0]
    shapes = []
    for center, radii, angle in lobes:
        c = liver_anchor + (center - liver_anchor) * s
        r = radii * s * np.array([_u(rng, 0.92, 1.08) for _ in range(3)])
        scene.ellipsoid(c, r, an.liver_hu, angle=angle, label=pr.LIVER, deform=True, texture=6.0)
        shapes.append((c, r))
    return shapes


def _inside_liver(point: np.ndarray, shapes: list[tuple[np.ndarray, np.ndarray]], margin: float) -> bool:
    return any(float((((point - c) / np.maximum(r - margin, 1.0)) ** 2).sum()) <= 1.0 for c, r in shapes)


def _build_scene(
    an: _Anatomy,
    rng: np.random.Generator,
    n_tumors: int,
    z_range: tuple[float, float],
    margin: float,
    deform_mm: float,
) -> tuple[_Scene, dict[str, object]]:
    scene = _Scene(margin, deform_mm)
    a, b, h, con = an.a, an.b, an.liver_height, an.contrast
    zlo, zhi = z_range
    big = 1e5  # extruded along z
    # --- body wall: subcutaneous fat, muscle ring, abdominal cavity (visceral fat + soft tissue)
    scene.ellipsoid((0, 0, 0), (a, b, big), _u(rng, -120, -80), texture=4.0)
    scene.ellipsoid((0, 0, 0), (a - an.fat, b - an.fat, big), _u(rng, 40, 65), texture=4.0)
    inner_a, inner_b = a - an.fat - an.muscle, b - an.fat - an.muscle
    scene.ellipsoid((0, 0.03 * b, 0), (inner_a, inner_b, big), _u(rng, -100, -60), texture=8.0)
    # --- table: a curved carbon-fibre tray under the patient, with a foam layer
    radius = _u(rng, 450, 650)
    gap = _u(rng, 3, 12)
    center = (0.0, b + gap + 6 - radius)
    half = math.asin(min(0.95, (a * 0.95) / radius))
    scene.ring(
        center,
        (radius, radius),
        3.0,
        0.0,
        (math.pi / 2 - half, math.pi / 2 + half),
        _u(rng, 150, 350),
        extrude=True,
    )
    scene.ring(
        center,
        (radius + 14, radius + 14),
        6.0,
        0.0,
        (math.pi / 2 - half, math.pi / 2 + half),
        _u(rng, -400, -200),
        extrude=True,
    )
    # --- lungs and heart above the dome
    for side in (-1, 1):
        scene.ellipsoid(
            (side * 0.48 * inner_a, 0.18 * b, _u(rng, 70, 90)),
            (0.42 * inner_a, 0.7 * inner_b, 120),
            _u(rng, -880, -820),
            texture=15.0,
        )
    scene.ellipsoid((0.12 * a, -0.3 * b, _u(rng, 55, 75)), (0.33 * a, 0.42 * b, 60), _u(rng, 35, 50))
    scene.ellipsoid(
        (0.14 * a, -0.3 * b, _u(rng, 55, 75)),
        (0.2 * a, 0.26 * b, 40),
        _u(rng, 140, 190) if con else _u(rng, 35, 50),
    )
    # --- spine: vertebral body (cortical shell, trabecular core), posterior elements, paraspinal muscle
    vy = 0.68 * b
    for side in (-1, 1):
        scene.ellipsoid((side * 32, 0.86 * b, 0), (24, 0.14 * b, big), _u(rng, 45, 60), texture=4.0)
        if zlo < -h - 20:
            scene.ellipsoid((side * 42, 0.5 * b, -h - 120), (18, 16, 110), _u(rng, 45, 60), texture=4.0)
    scene.ellipsoid((0, vy, 0), (19, 16, big), _u(rng, 500, 1200))
    scene.ellipsoid((0, vy, 0), (16.5, 13.5, big), _u(rng, 150, 300), texture=10.0)
    scene.ellipsoid((0, vy + 22, 0), (9, 7, big), _u(rng, 0, 20))  # spinal canal
    scene.ellipsoid((0, vy + 33, 0), (22, 5, big), _u(rng, 350, 700))
    # --- ribs: intermittent arcs in the body wall, sloping down anteriorly
    rib_a, rib_b = a - an.fat - an.muscle * 0.5, b - an.fat - an.muscle * 0.5
    z = zhi + 90.0  # ribs start high at the back and slope down to the front
    while z > -h - 20:
        for lo_t, hi_t in (
            (math.pi / 2 + 0.35, 3 * math.pi / 2 - 0.25),
            (-math.pi / 2 + 0.25, math.pi / 2 - 0.35),
        ):
            scene.ring(
                (0, 0),
                (rib_a, rib_b),
                _u(rng, 3.5, 5.5),
                z + _u(rng, -5, 5),
                (lo_t, hi_t),
                _u(rng, 400, 800),
                slope=_u(rng, 70, 110),
            )
        z -= _u(rng, 24, 34)
    # --- great vessels
    scene.capsule(
        (0.06 * a, vy - 30, zlo - 50),
        (0.06 * a, vy - 30, zhi + 50),
        _u(rng, 10, 13),
        _u(rng, 140, 190) if con else _u(rng, 35, 50),
    )
    ivc = (-0.13 * a, 0.32 * b)
    vessel_hu = _u(rng, 130, 180) if con else _u(rng, 30, 42)
    scene.capsule((ivc[0], ivc[1], zlo - 50), (ivc[0], ivc[1], 20), _u(rng, 9, 12), vessel_hu)
    # --- kidneys (right below/behind the liver), spleen, stomach, pancreas, bowel
    for side, dz in ((-1, 0.0), (1, 15.0)):
        kc = (side * 0.45 * a, 0.5 * b, -0.62 * h + dz - _u(rng, 0, 25))
        kr = (_u(rng, 26, 32), _u(rng, 22, 27), _u(rng, 50, 60))
        ang = side * _u(rng, 0.2, 0.5)
        scene.ellipsoid(kc, kr, _u(rng, 150, 200) if con else _u(rng, 30, 40), angle=ang, texture=5.0, deform=True)
        scene.ellipsoid(
            kc,
            (kr[0] * 0.6, kr[1] * 0.6, kr[2] * 0.75),
            _u(rng, 90, 120) if con else _u(rng, 25, 35),
            angle=ang,
            deform=True,
        )
        scene.ellipsoid(
            (kc[0] * 0.8, kc[1] * 0.9, kc[2]),
            (kr[0] * 0.3, kr[1] * 0.3, kr[2] * 0.4),
            _u(rng, -80, -30),
            angle=ang,
            deform=True,
        )
    scene.ellipsoid(
        (0.55 * inner_a, 0.38 * inner_b, -0.3 * h),
        (0.2 * a, 0.34 * b, _u(rng, 45, 60)),
        _u(rng, 100, 130) if con else _u(rng, 40, 50),
        angle=_u(rng, -0.6, -0.2),
        deform=True,
        texture=5.0,
    )
    stomach = np.array([0.35 * a, -0.28 * b, -0.3 * h])
    sr = np.array([0.22 * a, 0.28 * b, _u(rng, 45, 65)])
    scene.ellipsoid(stomach, sr, _u(rng, 30, 50), deform=True, texture=4.0)  # wall
    scene.ellipsoid(stomach, sr - 5, _u(rng, 0, 25), deform=True)  # fluid
    if rng.random() < 0.6:
        scene.ellipsoid(stomach - (0, sr[1] * 0.55, 0), sr * (0.75, 0.4, 0.7), -1000.0, deform=True)
    zp = -0.55 * h
    scene.capsule(
        (-0.15 * a, 0.12 * b, zp - 10),
        (0.45 * a, 0.28 * b, zp + 12),
        _u(rng, 10, 14),
        _u(rng, 60, 100) if con else _u(rng, 35, 50),
        deform=True,
        texture=5.0,
    )
    for _ in range(int(rng.integers(10, 22))):
        c = np.array(
            [
                _u(rng, -0.6, 0.6) * inner_a,
                _u(rng, -0.7, 0.2) * inner_b,
                _u(rng, min(zlo, -0.8 * h - 60), -0.8 * h),
            ]
        )
        r = np.array([_u(rng, 12, 28), _u(rng, 12, 28), _u(rng, 15, 35)])
        scene.ellipsoid(c, r, _u(rng, 20, 45), deform=True, texture=4.0)
        if rng.random() < 0.35:
            scene.ellipsoid(c, r * 0.5, -1000.0, deform=True)
    # --- liver, its vessels, gallbladder, tumors
    shapes = _liver_shapes(scene, an, rng)
    anchor = shapes[0][0]
    hilum = anchor + np.array([0.28 * a, 0.05 * b, 0.05 * h]) * an.liver_scale
    targets = [
        anchor + np.array([-0.25 * a, _u(rng, -0.2, 0.2) * b, _u(rng, -0.2, 0.2) * h]) * an.liver_scale
        for _ in range(3)
    ]
    targets.append(shapes[1][0] + np.array([0.05 * a, 0, 0]))
    for t in targets:
        scene.capsule(hilum, t, _u(rng, 3, 6), vessel_hu, deform=True, soft=0.5)
    top = np.array([ivc[0], ivc[1], -0.08 * h])
    for _ in range(3):
        end = (
            anchor + np.array([_u(rng, -0.5, 0.6) * a, _u(rng, -0.5, 0.0) * b, _u(rng, 0.0, 0.3) * h]) * an.liver_scale
        )
        scene.capsule(top, end, _u(rng, 3, 5), vessel_hu, deform=True, soft=0.5)
    scene.capsule((ivc[0], ivc[1], -0.75 * h), (ivc[0], ivc[1], -0.02 * h), _u(rng, 9, 12), vessel_hu, label=pr.CLEAR)
    if rng.random() < 0.8:
        gb = anchor + np.array([0.2 * a, -0.4 * b, -0.25 * h]) * an.liver_scale
        scene.ellipsoid(
            gb,
            (_u(rng, 12, 18), _u(rng, 16, 24), _u(rng, 25, 40)),
            _u(rng, 0, 20),
            label=pr.CLEAR,
            deform=True,
        )
    tumors = []
    for _ in range(n_tumors):
        d = (
            math.exp(_u(rng, math.log(5), math.log(11)))
            if rng.random() < 0.5
            else math.exp(_u(rng, math.log(11), math.log(80)))
        )
        for _attempt in range(50):
            c, r = shapes[int(rng.choice(len(shapes), p=[0.7, 0.2, 0.1]))]
            point = c + r * rng.uniform(-1, 1, 3)
            if _inside_liver(point, shapes, margin=d * 0.35):
                break
        radii = d / 2 * rng.uniform(0.8, 1.2, 3)
        hu = an.liver_hu - _u(rng, 20, 80)
        # a thin enhancing rim (outer ~10 % of the radius): the lesion stays hypodense overall
        rim = (0.9, an.liver_hu + _u(rng, 10, 40)) if rng.random() < 0.3 else (0.0, 0.0)
        core = (0.5, _u(rng, 5, 25)) if d > 30 and rng.random() < 0.5 else (0.0, 0.0)
        scene.ellipsoid(
            point,
            radii,
            max(hu, -10.0),
            angle=_u(rng, 0, math.pi),
            label=pr.TUMOR,
            deform=True,
            soft=_u(rng, 0.5, 2.5),
            rim=rim,
            core=core,
            texture=6.0,
        )
        tumors.append({"diameter_mm": round(d, 1), "rim": bool(rim[0]), "necrotic": bool(core[0])})
    return scene, {"tumors": tumors}


def _deform_field(rng: np.random.Generator, amplitude_mm: float) -> npt.NDArray[np.float64]:
    rows = []
    for component in range(3):
        for _ in range(3):
            k = rng.normal(size=3)
            k *= 2 * math.pi / _u(rng, 90, 220) / np.linalg.norm(k)
            rows.append([*k, _u(rng, 0, 2 * math.pi), component, amplitude_mm / 2 * _u(rng, 0.5, 1.0)])
    return np.asarray(rows, dtype=np.float64)


def render(
    scene: _Scene,
    deform: np.ndarray,
    rng: np.random.Generator,
    shape_zyx: tuple[int, int, int],
    affine_lps: np.ndarray,
    thickness_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the scene on an axis-aligned LPS grid; returns float32 HU and uint8 labels."""
    spacing = np.array([affine_lps[0, 0], affine_lps[1, 1], affine_lps[2, 2]])
    origin = affine_lps[:3, 3].copy()
    step = 8.0
    extent = spacing * np.array(shape_zyx[::-1])
    tex_shape = tuple(int(v) for v in np.ceil(extent[::-1] / step) + 2)
    tex = rng.normal(size=tex_shape).astype(np.float64)
    hu = np.empty(shape_zyx, np.float32)
    labels = np.empty(shape_zyx, np.uint8)
    pr.render_kernel(
        scene.array(), deform, tex, origin - step, step, origin, spacing, thickness_mm, hu, labels, -1000.0
    )
    return hu, labels


def generate_case(seed: int, options: PhantomOptions = PhantomOptions()) -> PhantomCase:
    """One phantom case, deterministic for ``(seed, options)``."""
    rng = np.random.default_rng(seed)
    contrast = options.contrast if options.contrast is not None else bool(rng.random() > 0.2)
    an = _Anatomy(
        a=_u(rng, 145, 175),
        b=_u(rng, 105, 130),
        fat=_u(rng, 10, 30),
        muscle=_u(rng, 8, 15),
        liver_height=_u(rng, 140, 180),
        contrast=contrast,
        liver_hu=_u(rng, 95, 120) if contrast else _u(rng, 45, 65),
        liver_seed=int(rng.integers(2**31)),
    )
    target_ml = _u(rng, 1200, 2000)
    pixel = options.pixel_spacing_mm or max(_u(rng, 0.56, 1.0), (2 * an.a + 40) / options.rows)
    thickness = options.slice_thickness_mm or float(rng.choice([0.7, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0]))
    spacing_z = thickness if rng.random() < 0.7 else thickness * 0.8
    n_tumors = options.tumors if options.tumors is not None else min(12, int(rng.poisson(3.2)))
    deform = _deform_field(rng, _u(rng, 4, 10))
    per_axis = [float(np.abs(deform[deform[:, 4] == c, 5]).sum()) for c in range(3)]
    max_shift = math.sqrt(sum(v * v for v in per_axis))
    # liver volume: measure the drawn liver on a coarse grid, rescale, measure again
    for _ in range(2):
        scene = _Scene(margin_mm=8.0, deform_mm=max_shift)
        _liver_shapes(scene, an, rng)
        coarse = np.diag([4.0, 4.0, 4.0, 1.0])
        coarse[:3, 3] = (-an.a, -an.b, -an.liver_height * 1.6)
        shape = (int(an.liver_height * 1.8 / 4), int(2 * an.b / 4), int(2 * an.a / 4))
        _, lab = render(scene, deform, np.random.default_rng(0), shape, coarse, 4.0)
        volume_ml = float((lab > 0).sum()) * 64 / 1000
        an.liver_scale *= (target_ml / max(volume_ml, 1.0)) ** (1 / 3)
    # scan range: the liver on about 30% of the slices of an abdomen scan (dome at z = 0)
    liver_extent = an.liver_height * an.liver_scale
    length = liver_extent / _u(rng, 0.25, 0.38)
    slices = options.slices or int(np.clip(round(length / spacing_z), 60, 300))
    length = slices * spacing_z
    z_top = _u(rng, 20, 60) if options.slices is None else min(40.0, length * 0.3)
    z_bottom = z_top - (slices - 1) * spacing_z
    scene, extra = _build_scene(an, rng, n_tumors, (z_bottom, z_top), margin=thickness + 2 * pixel, deform_mm=max_shift)
    n = options.rows
    affine = np.diag([pixel, pixel, spacing_z, 1.0])
    affine[:3, 3] = (-(n - 1) / 2 * pixel + _u(rng, -10, 10), -(n - 1) / 2 * pixel + _u(rng, 0, 25), z_bottom)
    hu, labels = render(scene, deform, rng, (slices, n, n), affine, thickness)
    # Reconstruction: white noise and anatomy through one scanner blur, so the noise is correlated the
    # way a reconstruction kernel correlates it; scale the white noise for the wanted final sd.
    sigma_px = _u(rng, 0.7, 1.0)
    gain = float((pr.gaussian_kernel(sigma_px) ** 2).sum())  # sd factor of the separable 2-D blur
    noise_sd = _u(rng, 10, 20)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_sd / gain)
    hu = pr.blur_slices(hu, sigma_px)
    j, i = np.mgrid[:n, :n]
    outside = ((j - (n - 1) / 2) ** 2 + (i - (n - 1) / 2) ** 2) > (n / 2) ** 2
    padding = float(rng.choice([-1024.0, -2048.0, -3024.0], p=[0.5, 0.2, 0.3]))
    hu[:, outside] = padding
    hu_int = np.clip(np.round(hu), -3024, 3071).astype(np.int16)
    info: dict[str, object] = {
        "seed": seed,
        "contrast": "portal-venous" if contrast else "non-contrast",
        "liver_volume_ml": round(float((labels > 0).sum()) * pixel * pixel * spacing_z / 1000, 1),
        "tumor_voxels": int((labels == 2).sum()),
        "pixel_spacing_mm": round(pixel, 4),
        "slice_thickness_mm": thickness,
        "slice_spacing_mm": spacing_z,
        "slices": slices,
        "padding_hu": padding,
        "noise_sd_hu": round(noise_sd, 1),
        "quirk": options.quirk,
        **extra,
    }
    return PhantomCase(Volume(hu_int, affine), Volume(labels, affine), info)


def stored_volumes(case: PhantomCase) -> tuple[Volume, Volume]:
    """The (image, mask) volumes as they are stored on disk for the case's LiTS quirk.

    ``none``: data in LPS index order with the matching affine (RAS diag(-px, -py, dz), as most LiTS
    cases); ``ras-array``: rows and columns flipped with a consistent affine; ``flipped-z``: slices
    reversed with a consistent affine; ``mask-affine-mismatch``: the mask's header disagrees with the
    image's while its data are aligned (LiTS 48-52); ``fake-spacing``: both headers claim 1 mm voxels
    and the identity orientation (LiTS 28-47), which mirrors the patient if believed.
    """
    from litseg.runtime.geometry import Reorientation

    quirk = str(case.info.get("quirk", "none"))
    image, mask = case.hu, case.labels
    if quirk == "ras-array":
        flip = Reorientation(flip_y=True, flip_x=True)
        return flip.apply(image), flip.apply(mask)
    if quirk == "flipped-z":
        flip = Reorientation(flip_z=True)
        return flip.apply(image), flip.apply(mask)
    if quirk == "mask-affine-mismatch":
        wrong = mask.affine_lps.copy()
        wrong[:3, 0] *= -1.0
        return image, Volume(mask.array, wrong)
    if quirk == "fake-spacing":
        fake = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS identity, as LPS
        return Volume(image.array, fake), Volume(mask.array, fake)
    return image, mask


def write_case(case: PhantomCase, out_dir: Path, index: int, dicom: bool = False) -> dict[str, object]:
    """Write ``volume-<index>.nii.gz`` and ``segmentation-<index>.nii.gz`` (and a DICOM series)."""
    from litseg.runtime.dicom_images import SeriesIdentity, ct_datasets, write_datasets
    from litseg.runtime.nifti import write_nifti

    image, mask = stored_volumes(case)
    out_dir.mkdir(parents=True, exist_ok=True)
    for volume, name in ((image, f"volume-{index}.nii.gz"), (mask, f"segmentation-{index}.nii.gz")):
        tmp = out_dir / f".{name}.tmp.nii.gz"
        write_nifti(volume, tmp)
        tmp.replace(out_dir / name)
    if dicom:
        folder = out_dir / "dicom" / f"case-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        identity = SeriesIdentity.derived(f"PHANTOM-{index}", description="litseg phantom CT")
        write_datasets(ct_datasets(case.hu, identity), folder)
    return {"index": index, **case.info}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="litseg-phantom",
        description="Generate synthetic abdominal CT cases in the LiTS17 layout (volume-N / segmentation-N).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--cases", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case; case n uses seed + n")
    parser.add_argument("--start-index", type=int, default=0, help="index N of the first volume-N file")
    parser.add_argument("--slices", type=int, default=None, help="slices per case (default: realistic random)")
    parser.add_argument("--tumors", type=int, default=None, help="tumors per case (default: 0-12, median 3)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    parser.add_argument("--contrast", choices=("random", "portal-venous", "non-contrast"), default="random")
    parser.add_argument("--quirk", choices=QUIRKS, default="none", help="LiTS header quirk to reproduce")
    parser.add_argument("--dicom", action="store_true", help="also write each case as a DICOM CT series")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.cases < 1:
        parser.error(f"--cases must be >= 1; got {args.cases}")
    contrast = None if args.contrast == "random" else args.contrast == "portal-venous"
    options = PhantomOptions(
        contrast=contrast, slices=args.slices, tumors=args.tumors, quirk=args.quirk, rows=args.size
    )
    manifest = []
    for n in range(args.cases):
        start = time.perf_counter()
        case = generate_case(args.seed + n, options)
        index = args.start_index + n
        entry = write_case(case, args.out, index, dicom=args.dicom)
        entry["seconds"] = round(time.perf_counter() - start, 2)
        manifest.append(entry)
        print(
            f"[{n + 1}/{args.cases}] volume-{index}: {case.hu.shape_zyx[0]} slices, "
            f"liver {case.info['liver_volume_ml']} mL, {len(case.info['tumors'])} tumors "  # type: ignore[arg-type]
            f"({entry['seconds']} s)",
            file=sys.stderr,
        )
    (args.out / "phantom-manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
