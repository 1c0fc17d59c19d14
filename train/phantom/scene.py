"""The phantom's scene: a list of analytic shapes in LPS millimetres, its random draws, and its rendering.

Every anatomy module (:mod:`.torso`, :mod:`.thorax`, :mod:`.abdomen`,
:mod:`.pelvis`, :mod:`.head`, :mod:`.neck`) appends shapes to one :class:`Scene`;
shapes are composited back to front in the order they were added, so a later shape covers an earlier one.
:func:`render` rasterises the scene with the numba kernel of :mod:`.render`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import render as pr

#: Extruded along z (body wall, spinal canal, table): longer than any scan.
BIG_MM = 1e5


def u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One uniform draw in ``[lo, hi)`` as a Python float."""
    return float(rng.uniform(lo, hi))


class Scene:
    """Collects shapes (rows of ``render`` parameters), back to front."""

    def __init__(self, margin_mm: float, deform_mm: float) -> None:
        self.rows: list[npt.NDArray[np.float64]] = []
        self.margin = margin_mm
        self.deform_mm = deform_mm  # the largest displacement the deformation field can make

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
        z_limits: tuple[float, float] | None = None,
    ) -> None:
        """An ellipsoid rotated by ``angle`` (radians) in the axial plane; ``core``/``rim`` are (fraction, HU).

        ``z_limits`` cuts the shape to ``[zmin, zmax]`` mm (an extruded column that ends, e.g. the lumbar
        spine at the sacrum); the cut is sharp, between slices.
        """
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
        if z_limits is not None:
            row[pr.ZMIN], row[pr.ZMAX] = max(row[pr.ZMIN], z_limits[0]), min(row[pr.ZMAX], z_limits[1])
        self.rows.append(row)

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
        """A tube of ``radius`` mm from ``p0`` to ``p1`` with round ends (vessels, airways, long bones)."""
        row = np.zeros(pr.NPARAM)
        row[pr.KIND] = pr.CAPSULE
        row[[pr.CX, pr.CY, pr.CZ]] = p0
        row[[pr.RX, pr.RY, pr.RZ]] = p1
        row[pr.ANGLE], row[pr.HU], row[pr.LABEL] = radius, hu, label
        row[pr.DEFORM], row[pr.TEXTURE], row[pr.SOFT] = float(deform), texture, soft
        reach = radius * 1.05 + self.margin + soft * 2 + (self.deform_mm if deform else 0.0)
        lo = np.minimum(p0, p1) - reach
        hi = np.maximum(p0, p1) + reach
        row[[pr.XMIN, pr.XMAX, pr.YMIN, pr.YMAX, pr.ZMIN, pr.ZMAX]] = (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
        self.rows.append(row)

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
        z_limits: tuple[float, float] | None = None,
    ) -> None:
        """A tube along an elliptical arc (ribs, mandible) or, with ``extrude``, an arc band along z (table).

        ``z_limits`` cuts an extruded band to ``[zmin, zmax]`` mm (a headrest shorter than the scan).
        """
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
            row[[pr.ZMIN, pr.ZMAX]] = z_limits if z_limits is not None else (-1e9, 1e9)
        else:
            row[[pr.ZMIN, pr.ZMAX]] = (z - slope - tube - self.margin, z + tube + self.margin)
        self.rows.append(row)

    def bone(
        self,
        center: npt.ArrayLike,
        radii: npt.ArrayLike,
        cortex_hu: float,
        marrow_hu: float,
        *,
        shell_mm: float = 2.5,
        angle: float = 0.0,
    ) -> None:
        """A rigid bone: cortical shell ``shell_mm`` thick around a trabecular (marrow) core."""
        r = np.asarray(radii, dtype=np.float64)
        self.ellipsoid(center, r, cortex_hu, angle=angle)
        self.ellipsoid(center, np.maximum(r - shell_mm, 0.5), marrow_hu, angle=angle, texture=10.0)

    def array(self) -> npt.NDArray[np.float64]:
        return np.ascontiguousarray(np.stack(self.rows))


def fit_inside(
    center_xy: tuple[float, float], radii_xy: tuple[float, float], outer_xy: tuple[float, float], margin_mm: float
) -> tuple[float, float]:
    """Shrink ``radii_xy`` until the ellipse at ``center_xy`` lies ``margin_mm`` inside the centred ellipse.

    Used for fluid that must stay within the abdominal cavity (ascites) without a clipping operation.
    """
    theta = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
    oa, ob = outer_xy[0] - margin_mm, outer_xy[1] - margin_mm
    rx, ry = radii_xy
    for _ in range(60):
        x = center_xy[0] + rx * np.cos(theta)
        y = center_xy[1] + ry * np.sin(theta)
        if float(((x / oa) ** 2 + (y / ob) ** 2).max()) <= 1.0:
            break
        rx, ry = rx * 0.96, ry * 0.96
    return rx, ry


@dataclass
class Anatomy:
    """Random draws of the trunk shared by the scene builders (all mm, LPS; liver dome at z = 0)."""

    a: float  # body semi-axis, left-right
    b: float  # body semi-axis, anterior-posterior
    fat: float
    muscle: float
    liver_height: float
    contrast: bool
    liver_hu: float
    liver_seed: int = 0  # the liver's own stream, so that rescaling it redraws the same shape
    liver_scale: float = 1.0

    @property
    def inner(self) -> tuple[float, float]:
        """Semi-axes of the body cavity inside the fat and muscle of the wall."""
        return self.a - self.fat - self.muscle, self.b - self.fat - self.muscle


def deform_field(rng: np.random.Generator, amplitude_mm: float) -> npt.NDArray[np.float64]:
    """Nine plane waves (three per axis), wavelengths 90-220 mm: a smooth elastic deformation."""
    rows = []
    for component in range(3):
        for _ in range(3):
            k = rng.normal(size=3)
            k *= 2 * math.pi / u(rng, 90, 220) / np.linalg.norm(k)
            rows.append([*k, u(rng, 0, 2 * math.pi), component, amplitude_mm / 2 * u(rng, 0.5, 1.0)])
    return np.asarray(rows, dtype=np.float64)


def max_shift_mm(deform: npt.NDArray[np.float64]) -> float:
    """The largest displacement the deformation field can make (mm)."""
    per_axis = [float(np.abs(deform[deform[:, 4] == c, 5]).sum()) for c in range(3)]
    return math.sqrt(sum(v * v for v in per_axis))


def render(
    scene: Scene,
    deform: npt.NDArray[np.float64],
    rng: np.random.Generator,
    shape_zyx: tuple[int, int, int],
    affine_lps: npt.NDArray[np.float64],
    thickness_mm: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
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
