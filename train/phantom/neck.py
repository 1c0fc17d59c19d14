"""The neck, a liver-free region: shoulders and lung apices at the bottom, cervical spine and cord, airway
(trachea, larynx with its cartilages, pharynx), oesophagus, thyroid, carotid arteries and jugular veins,
lymph nodes, neck muscles, submandibular and parotid glands, hyoid, mandible and lower teeth.

Frame: LPS millimetres with z = 0 at the sternal notch; the skull base lies near +140 mm. Everything is
labelled background. Sizes and HU in docs/phantom.md (neck 11-14 cm wide; thyroid 80-130 HU without
contrast, iodine-rich; airway -1000 HU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .scene import BIG_MM, Scene, u


@dataclass(frozen=True)
class NeckAnatomy:
    na: float  # neck half-width
    nb: float  # neck half-depth
    sa: float  # shoulder half-width
    sb: float  # shoulder half-depth
    thyroid_z: float
    larynx_z: float
    hyoid_z: float
    mandible_z: float
    contrast: bool

    @property
    def half_extent_mm(self) -> float:
        return max(self.na, self.nb) + 10.0


def draw(xrng: np.random.Generator, contrast: bool) -> NeckAnatomy:
    thyroid = u(xrng, 12, 28)
    larynx = thyroid + u(xrng, 30, 40)
    hyoid = larynx + u(xrng, 22, 30)
    return NeckAnatomy(
        na=u(xrng, 55, 68),
        nb=u(xrng, 50, 62),
        sa=u(xrng, 165, 195),
        sb=u(xrng, 80, 95),
        thyroid_z=thyroid,
        larynx_z=larynx,
        hyoid_z=hyoid,
        mandible_z=hyoid + u(xrng, 12, 20),
        contrast=contrast,
    )


def extent(nk: NeckAnatomy, xrng: np.random.Generator) -> tuple[float, float, float]:
    """``(z_bottom, z_top, focus)``: a neck CT from the upper chest to the floor of the mouth or higher."""
    return -u(xrng, 20, 45), nk.mandible_z + u(xrng, 25, 45), nk.thyroid_z + 10


def build(scene: Scene, nk: NeckAnatomy, xrng: np.random.Generator) -> dict[str, object]:
    """Append the neck to ``scene`` (back to front)."""
    na, nb, con = nk.na, nk.nb, nk.contrast
    bone = u(xrng, 500, 1000)
    marrow = u(xrng, 200, 350)
    muscle = u(xrng, 45, 60)
    _table(scene, nk, xrng)
    _shoulders(scene, nk, xrng, bone, marrow, muscle)
    # the neck: skin and fat, deep tissue (fat planes between muscles)
    neck = (-5.0, 1e9)  # below the sternal notch the shoulders hold everything
    scene.ellipsoid((0, 0, 0), (na, nb, BIG_MM), u(xrng, -110, -80), texture=5.0, z_limits=neck)
    fat = u(xrng, 4, 10)
    scene.ellipsoid((0, 0.02 * nb, 0), (na - fat, nb - fat, BIG_MM), u(xrng, -70, -30), texture=25.0, z_limits=neck)
    vy = 0.22 * nb  # vertebral body centre
    scene.ellipsoid((0, vy + 28, 0), (0.78 * na, 0.42 * nb, BIG_MM), muscle, texture=5.0, z_limits=neck)
    for side in (-1, 1):
        scene.capsule((side * 16, -0.78 * nb, -30), (side * 0.85 * na, 0.2 * nb, 170), u(xrng, 7, 10), muscle)  # SCM
        scene.ellipsoid((side * 9, vy - 15, 0), (7, 5, BIG_MM), muscle)  # longus colli
    # cervical spine: body with discs, canal and cord, posterior elements, transverse processes
    scene.ellipsoid((0, vy, 0), (11, 8.5, BIG_MM), bone)
    scene.ellipsoid((0, vy, 0), (9, 6.5, BIG_MM), marrow, texture=10.0)
    z = -40.0 + u(xrng, 0, 16)
    disc = u(xrng, 70, 100)
    while z < 200:
        scene.ellipsoid((0, vy, z), (10.5, 8, 2.5), disc)
        z += u(xrng, 15, 18)
    scene.ellipsoid((0, vy + 22, 0), (18, 5, BIG_MM), bone)  # laminae
    scene.ellipsoid((0, vy + 36, 0), (4, 10, BIG_MM), bone)  # spinous processes
    scene.ellipsoid((0, vy + 3, 0), (25, 4.5, BIG_MM), bone)  # transverse processes
    scene.ellipsoid((0, vy + 17, 0), (9, 7, BIG_MM), u(xrng, 0, 15))  # canal: CSF
    scene.ellipsoid((0, vy + 17, 0), (6, 4.5, BIG_MM), u(xrng, 30, 40))  # cord
    artery = u(xrng, 150, 300) if con else u(xrng, 35, 50)
    vein = u(xrng, 120, 180) if con else u(xrng, 35, 45)
    for side in (-1, 1):
        scene.ellipsoid((side * 19, vy + 3, 0), (2.2, 2.2, BIG_MM), artery)  # vertebral arteries
        scene.capsule((side * 24, vy - 28, -60), (side * 26, vy - 24, 170), u(xrng, 3.5, 4.5), artery, deform=True)
        r_vein = u(xrng, 5, 8) * (1.2 if side < 0 else 1.0)
        scene.capsule((side * 36, vy - 28, -60), (side * 40, vy - 18, 170), r_vein, vein, deform=True)
        for _ in range(int(xrng.integers(1, 4))):  # jugular chain lymph nodes (tumour-like, benign)
            node = (side * u(xrng, 38, 0.8 * na), vy - u(xrng, 5, 30), u(xrng, 0, nk.mandible_z))
            scene.ellipsoid(node, (u(xrng, 3, 7), u(xrng, 3, 6), u(xrng, 4, 9)), u(xrng, 30, 55), deform=True)
    _airway_and_glands(scene, nk, xrng, vy, bone)
    return {"neck_width_mm": round(2 * na, 1)}


def _airway_and_glands(scene: Scene, nk: NeckAnatomy, xrng: np.random.Generator, vy: float, bone: float) -> None:
    """Oesophagus, trachea, larynx, pharynx, thyroid, hyoid, mandible with teeth, salivary glands."""
    na, nb, con = nk.na, nk.nb, nk.contrast
    soft = u(xrng, 40, 55)
    cricoid = nk.larynx_z - 20
    ty = vy - 36
    scene.capsule((4, vy - 18, -60), (2, vy - 18, cricoid), u(xrng, 6, 8), u(xrng, 35, 50))  # oesophagus
    r_t = u(xrng, 8, 10)
    scene.capsule((0, ty, -60), (0, ty, cricoid), r_t + 2, u(xrng, 60, 120))  # tracheal cartilage
    scene.capsule((0, ty, -60), (0, ty, cricoid), r_t, -1000.0)
    for side in (-1, 1):  # thyroid lobes beside the trachea, isthmus in front of it
        scene.ellipsoid(
            (side * (r_t + 10), ty + 2, nk.thyroid_z),
            (u(xrng, 8, 11), u(xrng, 10, 13), u(xrng, 20, 25)),
            u(xrng, 130, 200) if con else u(xrng, 80, 130),
            deform=True,
            texture=4.0,
        )
    thyroid_hu = u(xrng, 130, 200) if con else u(xrng, 80, 130)
    scene.capsule(
        (-(r_t + 6), ty - r_t - 3, nk.thyroid_z - 5), (r_t + 6, ty - r_t - 3, nk.thyroid_z - 5), 4, thyroid_hu
    )
    # larynx: cricoid ring, soft tissue (cords) round the glottic air, thyroid cartilage (anterior V)
    scene.ring((0, ty - 2), (r_t + 3, r_t + 3), 2.5, cricoid, (-math.pi, math.pi), u(xrng, 150, 400))
    lz = nk.larynx_z
    scene.ellipsoid((0, ty - 6, lz), (13, 15, 20), soft)
    scene.ellipsoid((0, ty - 6, lz), (6, 11, 19), -1000.0)
    scene.ring(
        (0, ty - 2),
        (17, 17),
        2.2,
        lz,
        (-math.pi + 0.3, -0.3),
        u(xrng, 120, 400),
        extrude=True,
        z_limits=(lz - 15, lz + 22),
    )
    scene.ring((0, ty + 4), (20, 22), 2.5, nk.hyoid_z, (-math.pi + 0.2, -0.2), u(xrng, 400, 800))  # hyoid
    # floor of the mouth, submandibular glands, mandible with lower teeth, rami, parotids
    mz = nk.mandible_z
    gland = u(xrng, 70, 100) if con else u(xrng, 40, 60)
    scene.ellipsoid((0, -0.38 * nb, mz + 12), (0.5 * na, 0.4 * nb, 22), u(xrng, 55, 75), texture=5.0)  # tongue
    for side in (-1, 1):
        scene.ellipsoid((side * 0.6 * na, -0.18 * nb, mz - 10), (14, 17, 14), gland, deform=True, texture=4.0)
        scene.capsule((side * 0.78 * na, 0.05 * nb, mz + 5), (side * 0.8 * na, 0.15 * nb, mz + 80), 6, bone)  # ramus
        scene.ellipsoid((side * 0.82 * na, 0.25 * nb, mz + 55), (14, 18, 24), u(xrng, -20, 20), deform=True)
    # pharynx (air with soft walls) from the larynx up
    py = vy - 22
    scene.capsule((0, py, lz + 15), (0, py, 200), u(xrng, 11, 14), soft)
    scene.capsule((0, py, lz + 15), (0, py, 200), u(xrng, 5, 8), -1000.0)
    arc = (-math.pi + 0.15, -0.15)
    scene.ring(
        (0, 0.02 * nb), (0.78 * na, 0.9 * nb), 5.0, mz, arc, bone * 1.3, extrude=True, z_limits=(mz - 12, mz + 18)
    )
    teeth = u(xrng, 1500, 2500)
    scene.ring((0, 0.02 * nb), (0.68 * na, 0.8 * nb), 4.5, mz, arc, teeth, extrude=True, z_limits=(mz + 18, mz + 28))


def _shoulders(
    scene: Scene, nk: NeckAnatomy, xrng: np.random.Generator, bone: float, marrow: float, muscle: float
) -> None:
    """Upper chest and shoulders under the neck: skin and fat, muscle, lung apices, clavicles, humeral
    heads, scapulae, first ribs."""
    sa, sb = nk.sa, nk.sb
    zc, rz = -75.0, u(xrng, 95, 105)
    scene.ellipsoid((0, 0.08 * sb, zc), (sa, sb, rz), u(xrng, -110, -80), texture=5.0)
    scene.ellipsoid((0, 0.08 * sb, zc), (sa - 12, sb - 10, rz - 10), muscle, texture=6.0)
    lung = u(xrng, -880, -820)
    for side in (-1, 1):
        scene.ellipsoid((side * 48, 0.15 * sb, -55), (40, 0.5 * sb, 70), lung, texture=15.0)
        scene.ring((side * 20, 0.05 * sb), (55, 0.55 * sb), 4.5, -25, (-math.pi, math.pi), bone, slope=25)
        medial = np.array([side * 16, -0.72 * sb, -2])
        lateral = np.array([side * 0.82 * sa, -0.15 * sb, 8])
        scene.capsule(medial, lateral, 8, bone + 300)
        scene.capsule(medial, lateral, 5.5, marrow)
        scene.ellipsoid((side * (sa - 30), 0.05 * sb, -45), (24, 24, 24), bone)  # humeral head
        scene.ellipsoid((side * (sa - 30), 0.05 * sb, -45), (21.5, 21.5, 21.5), marrow, texture=10.0)
        angle = side * 0.35
        scene.ellipsoid((side * 0.5 * sa, 0.62 * sb, -70), (55, 4.5, 70), bone * 0.8, angle=angle)  # scapula


def _table(scene: Scene, nk: NeckAnatomy, xrng: np.random.Generator) -> None:
    radius = u(xrng, 450, 650)
    center = (0.0, 0.08 * nk.sb + nk.sb + u(xrng, 3, 12) + 6 - radius)
    half = math.asin(min(0.95, (nk.sa * 0.95) / radius))
    arc = (math.pi / 2 - half, math.pi / 2 + half)
    scene.ring(center, (radius, radius), 3.0, 0.0, arc, u(xrng, 150, 350), extrude=True)
    scene.ring(center, (radius + 14, radius + 14), 6.0, 0.0, arc, u(xrng, -400, -200), extrude=True)
