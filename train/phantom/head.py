"""The head, a liver-free region: scalp, skull, brain (grey and white matter, ventricles, falx), skull base
and posterior fossa, orbits, nasal cavity and paranasal sinuses, upper teeth, the atlas, and a headrest.

Frame: LPS millimetres with z = 0 at the centre of the orbits (roughly the orbitomeatal line), vertex at
+115 to +130 mm, foramen magnum near -45 mm. Everything is labelled background. Sizes and HU in
docs/phantom.md (adult head 14-16 cm wide, 18-20 cm long; brain 25-45 HU; bone 700-1800 HU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .scene import Scene, u


@dataclass(frozen=True)
class HeadAnatomy:
    ha: float  # half-width (left-right)
    hb: float  # half-length (anterior-posterior)
    cz: float  # centre of the cranium's ellipsoid
    rz: float  # its half-height; the vertex is at cz + rz
    scalp: float
    skull: float
    contrast: bool

    @property
    def vertex_z(self) -> float:
        return self.cz + self.rz

    @property
    def half_extent_mm(self) -> float:
        return max(self.ha, self.hb) + 5.0


def draw(xrng: np.random.Generator, contrast: bool) -> HeadAnatomy:
    return HeadAnatomy(
        ha=u(xrng, 68, 78),
        hb=u(xrng, 88, 100),
        cz=u(xrng, 22, 30),
        rz=u(xrng, 92, 102),
        scalp=u(xrng, 4, 7),
        skull=u(xrng, 5, 8),
        contrast=contrast,
    )


def extent(hd: HeadAnatomy, xrng: np.random.Generator) -> tuple[float, float, float]:
    """``(z_bottom, z_top, focus)``: a head CT from the maxilla or the atlas to above the vertex."""
    return -u(xrng, 45, 70), hd.vertex_z + u(xrng, 5, 15), hd.cz + 10


def build(scene: Scene, hd: HeadAnatomy, xrng: np.random.Generator) -> dict[str, object]:
    """Append the head to ``scene`` (back to front)."""
    ha, hb, cz, rz = hd.ha, hd.hb, hd.cz, hd.rz
    bone_hu = u(xrng, 900, 1500)
    _headrest(scene, hd, xrng)
    # below the cranium: the face and upper neck soft tissue (fat around muscle)
    scene.ellipsoid((0, -0.02 * hb, -58), (0.86 * ha + 4, 0.9 * hb + 4, 52), u(xrng, -110, -80), texture=5.0)
    scene.ellipsoid((0, -0.02 * hb, -58), (0.86 * ha, 0.9 * hb, 50), u(xrng, 30, 50), texture=10.0)
    # cranium: scalp, skull, CSF, grey matter, white matter
    shells = (0.0, hd.scalp, hd.scalp + hd.skull, hd.scalp + hd.skull + 2.5)
    for shrink, hu, tex in zip(
        shells, (u(xrng, 30, 50), bone_hu, u(xrng, 4, 14), u(xrng, 36, 44)), (5.0, 25.0, 2.0, 2.5), strict=True
    ):
        scene.ellipsoid((0, 0, cz), (ha - shrink, hb - shrink, rz - shrink), hu, texture=tex)
    white = u(xrng, 24, 31)
    scene.ellipsoid((0, 0.02 * hb, cz + 12), (0.68 * ha, 0.7 * hb, 0.62 * rz), white, texture=2.0, deform=True)
    grey = u(xrng, 35, 42)
    for side in (-1, 1):  # deep grey matter: basal ganglia and thalami
        scene.ellipsoid((side * 16, -0.02 * hb, cz + 2), (9, 18, 12), grey, deform=True, texture=1.5)
    csf = u(xrng, 2, 12)
    for side in (-1, 1):  # lateral ventricles, third ventricle
        scene.ellipsoid((side * 9, -0.04 * hb, cz + 24), (7, 0.36 * hb, 11), csf, angle=side * 0.12, deform=True)
    scene.ellipsoid((0, 0.02 * hb, cz + 4), (2.5, 13, 10), csf, deform=True)
    scene.ellipsoid((0, 0, cz + 45), (1.2, hb - 22, 0.55 * rz), u(xrng, 45, 90))  # falx
    # skull base, middle and posterior fossa contents, brainstem
    scene.ellipsoid((0, 0.05 * hb, -42), (0.66 * ha, 0.7 * hb, 13), bone_hu * 0.7, texture=40.0)
    for side in (-1, 1):  # temporal lobes in the middle cranial fossae
        scene.ellipsoid((side * 0.48 * ha, -0.08 * hb, -24), (0.3 * ha, 0.32 * hb, 16), grey, texture=2.5)
    scene.ellipsoid((0, 0.48 * hb, -30), (0.58 * ha, 0.32 * hb, 22), grey, texture=2.5)  # cerebellum
    scene.ellipsoid((0, 0.42 * hb, -28), (3, 6, 6), csf)  # fourth ventricle
    scene.capsule((0, 0.22 * hb, -58), (0, 0.1 * hb, 2), 12, u(xrng, 30, 38))  # brainstem
    for side in (-1, 1):
        scene.capsule((side * 0.8 * ha, 0.25 * hb, -32), (side * 0.24 * ha, 0.05 * hb, -28), 8.5, bone_hu * 1.2)
        scene.ellipsoid((side * 0.8 * ha, 0.36 * hb, -42), (10, 12, 12), u(xrng, -600, -300), texture=80.0)
    scene.ellipsoid((0, -0.2 * hb, -33), (15, 15, 13), bone_hu * 0.6)  # sphenoid sinus: bone, air
    scene.ellipsoid((0, -0.2 * hb, -33), (13, 13, 11), u(xrng, -950, -850))
    _face(scene, hd, xrng, bone_hu)
    # the atlas and the dens below the foramen magnum
    scene.ellipsoid((0, 0.28 * hb, -62), (26, 14, 8), bone_hu * 0.7)
    scene.ellipsoid((0, 0.2 * hb, -62), (6, 6, 14), bone_hu * 0.6)
    scene.ellipsoid((0, 0.36 * hb, -62), (11, 9, 9), u(xrng, 30, 38))  # cord
    return {"head_width_mm": round(2 * ha, 1), "head_length_mm": round(2 * hb, 1)}


def _face(scene: Scene, hd: HeadAnatomy, xrng: np.random.Generator, bone_hu: float) -> None:
    """Orbits (bony wall, fat, globe, lens), nose, nasal cavity, maxillary sinuses, zygoma, upper teeth."""
    ha, hb = hd.ha, hd.hb
    front = 0.96 * hb
    for side in (-1, 1):
        x = side * u(xrng, 29, 34)
        y = -(front - 16)
        scene.ellipsoid((x, y + 6, 0), (18, 22, 18), bone_hu * 0.6)
        scene.ellipsoid((x, y + 6, 0), (16, 20, 16), u(xrng, -100, -80), texture=5.0)
        scene.ellipsoid((x, y, 0), (12, 12, 12), u(xrng, 5, 15))
        scene.ellipsoid((x, y - 9, 0), (4.5, 2, 4.5), u(xrng, 90, 130))  # lens
        scene.capsule((x, y + 12, 0), (side * 10, -0.35 * hb, -8), 2.5, u(xrng, 30, 40))  # optic nerve
    scene.ellipsoid((0, -(hb + 4), -28), (12, 18, 24), u(xrng, 30, 50), texture=6.0)  # nose
    scene.ellipsoid((0, -(hb - 32), -35), (13, 28, 26), u(xrng, -960, -900))  # nasal cavity
    scene.ellipsoid((0, -(hb - 32), -35), (1.5, 26, 24), bone_hu * 0.5)  # septum
    for side in (-1, 1):
        scene.ellipsoid((side * 8, -(hb - 34), -42), (4, 18, 6), u(xrng, 30, 50))  # inferior turbinate
        centre = (side * 31, -(hb - 40), -43)
        scene.ellipsoid(centre, (19, 21, 19), bone_hu * 0.6)
        scene.ellipsoid(centre, (17, 19, 17), u(xrng, -960, -900))
        if xrng.random() < 0.2:  # mucosal thickening in the floor of the sinus
            scene.ellipsoid((centre[0], centre[1], centre[2] - 12), (15, 16, 8), u(xrng, 20, 45))
        scene.capsule((side * 0.55 * ha, -(hb - 30), -22), (side * 0.9 * ha, 0.05 * hb, -25), 5, bone_hu * 0.8)
    scene.ring((0, -(hb - 48)), (27, 30), 5.5, -63.0, (-math.pi, 0.0), u(xrng, 1500, 2500))  # upper teeth


def _headrest(scene: Scene, hd: HeadAnatomy, xrng: np.random.Generator) -> None:
    """A curved carbon head holder with foam under the occiput (it reaches above the skin: HU > -300)."""
    radius = u(xrng, 110, 150)
    gap = u(xrng, 2, 8)
    center = (0.0, hd.hb + gap + 6 - radius)
    half = math.asin(min(0.95, (hd.ha * 1.15) / radius))
    arc = (math.pi / 2 - half, math.pi / 2 + half)
    limits = (-120.0, hd.vertex_z - 20)
    scene.ring(center, (radius + 10, radius + 10), 5.0, 0.0, arc, u(xrng, -400, -200), extrude=True, z_limits=limits)
    scene.ring(center, (radius, radius), 2.5, 0.0, arc, u(xrng, 150, 350), extrude=True, z_limits=limits)
