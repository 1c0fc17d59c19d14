"""The abdomen: liver with vessels, gallbladder and tumors, and its neighbours, including hard negatives.

The 0.4 draws (kidneys, spleen, stomach, pancreas, bowel loops, liver) come from the case stream ``rng`` in
their original order. A full plan adds, from its own stream ``xrng``: ascites (perihepatic and
perisplenic, or large with pelvic fluid), splenomegaly, a stomach full of food, the colon, more small
bowel and positive oral contrast. Everything but the liver (1) and its tumors (2) is background.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

from . import render as pr
from .scene import Anatomy, Scene, fit_inside, u
from .torso import TorsoPlan, Vessels

Shapes = list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]


def liver_shapes(scene: Scene, an: Anatomy) -> Shapes:
    """Right lobe (dome under the diaphragm), left lobe over the midline, caudate; returns the ellipsoids."""
    rng = np.random.default_rng(an.liver_seed)
    a, b, s, h = an.a, an.b, an.liver_scale, an.liver_height
    zc = -h / 2
    lobes = [
        (np.array([-0.42 * a, 0.02 * b, zc]), np.array([0.34 * a, 0.55 * b, 0.5 * h]), u(rng, -0.3, 0.1)),
        (
            np.array([0.02 * a, -0.42 * b, zc + 0.18 * h]),
            np.array([0.30 * a, 0.26 * b, 0.28 * h]),
            u(rng, -0.4, 0.1),
        ),
        (np.array([-0.10 * a, 0.22 * b, zc + 0.12 * h]), np.array([0.10 * a, 0.13 * b, 0.22 * h]), 0.0),
    ]
    liver_anchor = lobes[0][0]
    shapes = []
    for center, radii, angle in lobes:
        c = liver_anchor + (center - liver_anchor) * s
        r = radii * s * np.array([u(rng, 0.92, 1.08) for _ in range(3)])
        scene.ellipsoid(c, r, an.liver_hu, angle=angle, label=pr.LIVER, deform=True, texture=6.0)
        shapes.append((c, r))
    return shapes


def liver_z_range(an: Anatomy, deform_mm: float) -> tuple[float, float]:
    """Lowest and highest z (mm) any liver voxel can reach, deformation included."""
    shapes = liver_shapes(Scene(0.0, 0.0), an)
    lo = min(float(c[2] - r[2]) for c, r in shapes) - deform_mm
    hi = max(float(c[2] + r[2]) for c, r in shapes) + deform_mm
    return lo, hi


def _inside_liver(point: npt.NDArray[np.float64], shapes: Shapes, margin: float) -> bool:
    return any(float((((point - c) / np.maximum(r - margin, 1.0)) ** 2).sum()) <= 1.0 for c, r in shapes)


def ascites(
    scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan, liver_z: tuple[float, float]
) -> None:
    """Free fluid (0-20 HU) drawn right after the body wall: the organs drawn later cover it, so it fills
    the spaces between them and the wall, as ascites does. Kept inside the cavity by construction."""
    kind = plan.findings.ascites
    if kind == "none":
        return
    inner_a, inner_b = an.inner
    cavity_c = 0.03 * an.b
    fluid = u(xrng, 0, 20)
    z_lo, z_hi = liver_z
    if kind == "large":  # the whole cavity from the dome to the pelvic floor
        radii = fit_inside((0.0, 0.0), (inner_a, inner_b), (inner_a, inner_b), u(xrng, 1.5, 4.0))
        top, bottom = z_hi - 5, plan.symphysis_z + 10
        scene.ellipsoid((0, cavity_c, (top + bottom) / 2), (*radii, (top - bottom) / 2), fluid, texture=3.0)
        return
    # perihepatic (right) and perisplenic (left, smaller) collections beside the organs
    for side, scale in ((-1, 1.0), (1, 0.6)):
        cx = side * 0.4 * inner_a
        radii = fit_inside((cx, 0.0), (0.62 * inner_a, 0.95 * inner_b), (inner_a, inner_b), u(xrng, 1.5, 4.0))
        zc = (z_lo + z_hi) / 2 + (0 if side < 0 else 20)
        scene.ellipsoid((cx, cavity_c, zc), (*radii, scale * (z_hi - z_lo) / 2 + 10), fluid, texture=3.0)
    # a little in the pouch of Douglas
    pelvic = fit_inside((0.0, 0.2 * inner_b), (0.45 * inner_a, 0.5 * inner_b), (inner_a, inner_b), 3.0)
    scene.ellipsoid((0, 0.2 * inner_b, plan.symphysis_z + 45), (*pelvic, u(xrng, 20, 35)), fluid, texture=3.0)


def organs(
    scene: Scene,
    an: Anatomy,
    rng: np.random.Generator,
    xrng: np.random.Generator,
    plan: TorsoPlan,
    z_range: tuple[float, float],
) -> None:
    """Kidneys (cortex, medulla, sinus fat), spleen, stomach (wall, contents, gas cap), pancreas, bowel."""
    a, b, h, con = an.a, an.b, an.liver_height, an.contrast
    inner_a, inner_b = an.inner
    zlo = z_range[0]
    findings = plan.findings
    for side, dz in ((-1, 0.0), (1, 15.0)):
        kc = (side * 0.45 * a, 0.5 * b, -0.62 * h + dz - u(rng, 0, 25))
        kr = (u(rng, 26, 32), u(rng, 22, 27), u(rng, 50, 60))
        ang = side * u(rng, 0.2, 0.5)
        scene.ellipsoid(kc, kr, u(rng, 150, 200) if con else u(rng, 30, 40), angle=ang, texture=5.0, deform=True)
        scene.ellipsoid(
            kc,
            (kr[0] * 0.6, kr[1] * 0.6, kr[2] * 0.75),
            u(rng, 90, 120) if con else u(rng, 25, 35),
            angle=ang,
            deform=True,
        )
        scene.ellipsoid(
            (kc[0] * 0.8, kc[1] * 0.9, kc[2]),
            (kr[0] * 0.3, kr[1] * 0.3, kr[2] * 0.4),
            u(rng, -80, -30),
            angle=ang,
            deform=True,
        )
    # spleen; splenomegaly grows it downward, forward and towards the midline (liver-like HU)
    spleen_c = np.array([0.55 * inner_a, 0.38 * inner_b, -0.3 * h])
    spleen_r = np.array([0.2 * a, 0.34 * b, u(rng, 45, 60)])
    spleen_hu = u(rng, 100, 130) if con else u(rng, 40, 50)
    spleen_angle = u(rng, -0.6, -0.2)
    if findings.spleen_length_mm > 2 * spleen_r[2]:
        grow = findings.spleen_length_mm / (2 * spleen_r[2])
        bigger = spleen_r * np.array([grow**0.55, grow**0.45, grow])
        spleen_c = spleen_c - (bigger - spleen_r) * np.array([0.85, 0.5, 0.8])
        spleen_r = bigger
    scene.ellipsoid(spleen_c, spleen_r, spleen_hu, angle=spleen_angle, deform=True, texture=5.0)
    # stomach: fluid, or (full plan) food of mixed density with gas
    stomach = np.array([0.35 * a, -0.28 * b, -0.3 * h])
    sr = np.array([0.22 * a, 0.28 * b, u(rng, 45, 65)])
    if findings.full_stomach:
        sr = sr * u(xrng, 1.1, 1.3)
    scene.ellipsoid(stomach, sr, u(rng, 30, 50), deform=True, texture=4.0)  # wall
    lumen_hu = u(rng, 0, 25)
    if findings.full_stomach:
        scene.ellipsoid(stomach, sr - 5, u(xrng, 25, 55), deform=True, texture=22.0)  # food
        _food(scene, xrng, stomach, sr)
    else:
        scene.ellipsoid(stomach, sr - 5, lumen_hu, deform=True)  # fluid
    if rng.random() < 0.6:
        scene.ellipsoid(stomach - (0, sr[1] * 0.55, 0), sr * (0.75, 0.4, 0.7), -1000.0, deform=True)
    zp = -0.55 * h
    scene.capsule(
        (-0.15 * a, 0.12 * b, zp - 10),
        (0.45 * a, 0.28 * b, zp + 12),
        u(rng, 10, 14),
        u(rng, 60, 100) if con else u(rng, 35, 50),
        deform=True,
        texture=5.0,
    )
    oral = u(xrng, 150, 350) if plan.full and xrng.random() < 0.25 else None
    loop_bottom = min(zlo, -0.8 * h - 60)
    if plan.full:
        loop_bottom = max(loop_bottom, plan.symphysis_z + 30)
    for _ in range(int(rng.integers(10, 22))):
        c = np.array([u(rng, -0.6, 0.6) * inner_a, u(rng, -0.7, 0.2) * inner_b, u(rng, loop_bottom, -0.8 * h)])
        r = np.array([u(rng, 12, 28), u(rng, 12, 28), u(rng, 15, 35)])
        scene.ellipsoid(c, r, u(rng, 20, 45), deform=True, texture=4.0)
        if rng.random() < 0.35:
            scene.ellipsoid(c, r * 0.5, -1000.0, deform=True)
        elif oral is not None:
            scene.ellipsoid(c, r * 0.6, oral, deform=True)
    if plan.full:
        _colon_and_small_bowel(scene, an, xrng, plan, oral)


def _food(
    scene: Scene, xrng: np.random.Generator, center: npt.NDArray[np.float64], radii: npt.NDArray[np.float64]
) -> None:
    """Food particles (0-110 HU) settled in the dependent (posterior) stomach, and trapped gas bubbles."""
    for k in range(int(xrng.integers(8, 16))):
        direction = xrng.normal(size=3)
        direction /= np.linalg.norm(direction)
        direction[1] = abs(direction[1]) * 0.8  # posterior half
        point = center + (radii - 12) * direction * u(xrng, 0.1, 0.85)
        gas = k % 5 == 4
        size = (u(xrng, 2, 5),) * 3 if gas else (u(xrng, 5, 15), u(xrng, 5, 15), u(xrng, 5, 15))
        scene.ellipsoid(point, size, -1000.0 if gas else u(xrng, 0, 110), deform=True, texture=8.0)


def _colon_and_small_bowel(
    scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan, oral: float | None
) -> None:
    """Ascending, transverse and descending colon with stool and gas; more small bowel down to the pelvis."""
    inner_a, inner_b = an.inner
    h = an.liver_height
    path = [
        (-0.62 * inner_a, 0.1 * inner_b, plan.crest_z - 30),
        (-0.6 * inner_a, -0.1 * inner_b, -0.75 * h),
        (0.0, -0.45 * inner_b, -0.8 * h + u(xrng, -30, 10)),
        (0.62 * inner_a, -0.15 * inner_b, -0.6 * h),
        (0.64 * inner_a, 0.15 * inner_b, plan.crest_z - 30),
    ]
    radius = u(xrng, 20, 28)
    wall, stool = u(xrng, 30, 50), u(xrng, -60, 30)
    for p0, p1 in itertools.pairwise(path):
        scene.capsule(p0, p1, radius, wall, deform=True, texture=4.0)
        scene.capsule(p0, p1, radius - 3, stool, deform=True, texture=35.0)
        if xrng.random() < 0.5:  # gas rises to the anterior wall
            lift = np.array([0.0, -0.45 * radius, 0.0])
            scene.capsule(np.add(p0, lift), np.add(p1, lift), radius * 0.45, -1000.0, deform=True)
    for _ in range(int(xrng.integers(8, 16))):
        c = np.array(
            [u(xrng, -0.55, 0.55) * inner_a, u(xrng, -0.75, 0.25) * inner_b, u(xrng, plan.symphysis_z + 50, -0.8 * h)]
        )
        r = np.array([u(xrng, 12, 25), u(xrng, 12, 25), u(xrng, 15, 30)])
        scene.ellipsoid(c, r, u(xrng, 20, 45), deform=True, texture=4.0)
        content = oral if oral is not None and xrng.random() < 0.7 else (-1000.0 if xrng.random() < 0.3 else None)
        if content is not None:
            scene.ellipsoid(c, r * 0.55, content, deform=True)


def liver(scene: Scene, an: Anatomy, rng: np.random.Generator, n_tumors: int, vessels: Vessels) -> dict[str, object]:
    """Liver lobes, portal and hepatic veins, IVC (cleared), gallbladder (cleared), tumors; returns info."""
    a, b, h = an.a, an.b, an.liver_height
    vessel_hu, ivc = vessels.vein_hu, vessels.ivc_xy
    shapes = liver_shapes(scene, an)
    anchor = shapes[0][0]
    hilum = anchor + np.array([0.28 * a, 0.05 * b, 0.05 * h]) * an.liver_scale
    targets = [
        anchor + np.array([-0.25 * a, u(rng, -0.2, 0.2) * b, u(rng, -0.2, 0.2) * h]) * an.liver_scale for _ in range(3)
    ]
    targets.append(shapes[1][0] + np.array([0.05 * a, 0, 0]))
    for t in targets:
        scene.capsule(hilum, t, u(rng, 3, 6), vessel_hu, deform=True, soft=0.5)
    top = np.array([ivc[0], ivc[1], -0.08 * h])
    for _ in range(3):
        end = anchor + np.array([u(rng, -0.5, 0.6) * a, u(rng, -0.5, 0.0) * b, u(rng, 0.0, 0.3) * h]) * an.liver_scale
        scene.capsule(top, end, u(rng, 3, 5), vessel_hu, deform=True, soft=0.5)
    scene.capsule((ivc[0], ivc[1], -0.75 * h), (ivc[0], ivc[1], -0.02 * h), u(rng, 9, 12), vessel_hu, label=pr.CLEAR)
    if rng.random() < 0.8:
        gb = anchor + np.array([0.2 * a, -0.4 * b, -0.25 * h]) * an.liver_scale
        scene.ellipsoid(
            gb,
            (u(rng, 12, 18), u(rng, 16, 24), u(rng, 25, 40)),
            u(rng, 0, 20),
            label=pr.CLEAR,
            deform=True,
        )
    tumors = []
    for _ in range(n_tumors):
        d = (
            math.exp(u(rng, math.log(5), math.log(11)))
            if rng.random() < 0.5
            else math.exp(u(rng, math.log(11), math.log(80)))
        )
        for _attempt in range(50):
            c, r = shapes[int(rng.choice(len(shapes), p=[0.7, 0.2, 0.1]))]
            point = c + r * rng.uniform(-1, 1, 3)
            if _inside_liver(point, shapes, margin=d * 0.35):
                break
        radii = d / 2 * rng.uniform(0.8, 1.2, 3)
        hu = an.liver_hu - u(rng, 20, 80)
        # a thin enhancing rim (outer ~10 % of the radius): the lesion stays hypodense overall
        rim = (0.9, an.liver_hu + u(rng, 10, 40)) if rng.random() < 0.3 else (0.0, 0.0)
        core = (0.5, u(rng, 5, 25)) if d > 30 and rng.random() < 0.5 else (0.0, 0.0)
        scene.ellipsoid(
            point,
            radii,
            max(hu, -10.0),
            angle=u(rng, 0, math.pi),
            label=pr.TUMOR,
            deform=True,
            soft=u(rng, 0.5, 2.5),
            rim=rim,
            core=core,
            texture=6.0,
        )
        tumors.append({"diameter_mm": round(d, 1), "rim": bool(rim[0]), "necrotic": bool(core[0])})
    return {"tumors": tumors}
