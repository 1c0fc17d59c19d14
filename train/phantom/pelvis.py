"""The pelvis (full plan only): bones, bladder, uterus or prostate, rectum, iliac vessels, gluteal muscle,
and large pelvic or ovarian masses, all labelled background.

Landmarks come from the :class:`~litseg.train.phantom.torso.TorsoPlan` (iliac crest at L4, top of the pubic
symphysis); the bones are rigid (not deformed), the soft organs follow the elastic deformation. The masses
(10-20 cm, cystic, solid or mixed) enhance like liver when solid: the false positive a liver model must
learn to reject. Sizes and HU in docs/phantom.md.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

from .scene import Anatomy, Scene, u
from .torso import TorsoPlan, Vessels


def soft_tissue(scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan) -> None:
    """Gluteal muscles behind the iliac wings, drawn early: the organs and bones drawn later lie over them."""
    if not plan.full:
        return
    inner_a, inner_b = an.inner
    top, floor = plan.crest_z - 30, plan.symphysis_z - 90
    for side in (-1, 1):
        scene.ellipsoid(
            (side * 0.6 * inner_a, 0.6 * inner_b, (top + floor) / 2),
            (0.4 * inner_a, 0.36 * inner_b, (top - floor) / 2),
            u(xrng, 45, 60),
            angle=side * 0.5,
            texture=5.0,
        )


def pelvis(
    scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan, vessels: Vessels, liver_bottom: float
) -> dict[str, object]:
    """Pelvic organs, iliac vessels, a mass if the plan has one, then the bones; returns the mass's info."""
    if not plan.full:
        return {}
    con = an.contrast
    inner_a, inner_b = an.inner
    sym = plan.symphysis_z
    # rectum and sigmoid: wall, stool, sometimes gas
    rect = [
        (0.25 * inner_a, 0.2 * inner_b, plan.crest_z - 50),
        (0.05 * inner_a, 0.55 * inner_b, sym + 40),
        (0, 0.5 * inner_b, sym - 40),
    ]
    r_rect = u(xrng, 15, 22)
    for p0, p1 in itertools.pairwise(rect):
        scene.capsule(p0, p1, r_rect, u(xrng, 30, 50), deform=True)
        scene.capsule(p0, p1, r_rect - 3, u(xrng, -80, 30), deform=True, texture=30.0)
    if xrng.random() < 0.4:
        scene.capsule(rect[0], rect[1], r_rect * 0.5, -1000.0, deform=True)
    # bladder (urine 0-20 HU, wall), behind the symphysis
    bladder_c = np.array([0.0, -0.45 * inner_b, sym + u(xrng, 20, 40)])
    bladder_r = np.array([u(xrng, 35, 60), u(xrng, 28, 45), u(xrng, 28, 50)])
    scene.ellipsoid(bladder_c, bladder_r + 3, u(xrng, 30, 45), deform=True)
    scene.ellipsoid(bladder_c, bladder_r, u(xrng, 0, 20), deform=True, texture=2.0)
    organ = "uterus" if plan.female else "prostate"
    if plan.female:  # uterus above and behind the bladder; myometrium enhances strongly
        uterus_c = bladder_c + np.array([u(xrng, -10, 10), 35.0, bladder_r[2] + u(xrng, 10, 25)])
        scene.ellipsoid(
            uterus_c,
            (u(xrng, 25, 40), u(xrng, 20, 30), u(xrng, 30, 45)),
            u(xrng, 90, 150) if con else u(xrng, 40, 60),
            angle=u(xrng, -0.3, 0.3),
            deform=True,
            texture=6.0,
            core=(0.3, u(xrng, 60, 90) if con else u(xrng, 35, 50)),
        )
        for side in (-1, 1):  # ovaries with a follicle
            oc = uterus_c + np.array([side * u(xrng, 38, 50), 10.0, u(xrng, -10, 10)])
            scene.ellipsoid(oc, (12, 9, 16), u(xrng, 30, 50), deform=True, texture=4.0)
            scene.ellipsoid(oc, (5, 5, 5), u(xrng, 0, 15), deform=True)
    else:  # prostate below the bladder, seminal vesicles above it
        scene.ellipsoid(
            (0.0, -0.35 * inner_b, sym - u(xrng, 5, 20)),
            (u(xrng, 18, 25), u(xrng, 15, 20), u(xrng, 15, 22)),
            u(xrng, 60, 90) if con else u(xrng, 35, 50),
            deform=True,
            texture=5.0,
        )
        for side in (-1, 1):
            scene.ellipsoid(
                bladder_c + np.array([side * 22, bladder_r[1] + 6, 5]),
                (20, 6, 8),
                u(xrng, 25, 45),
                angle=side * 0.4,
                deform=True,
            )
    _wall_muscles(scene, an, xrng, plan)
    _iliac_vessels(scene, an, xrng, plan, vessels)
    mass = _mass(scene, an, xrng, plan, liver_bottom)
    _bones(scene, an, xrng, plan)
    return {"pelvic_organ": organ, **mass}


def _wall_muscles(scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan) -> None:
    """Iliopsoas from the lumbar spine over the front of the hip joints; obturator internus on the side walls."""
    inner_a, inner_b = an.inner
    muscle = u(xrng, 45, 60)
    for side in (-1, 1):
        top = (side * 45.0, 0.45 * an.b, plan.crest_z + 20)
        mid = (side * 0.5 * inner_a, 0.1 * inner_b, plan.crest_z - 70)
        low = (side * 0.6 * inner_a, -0.3 * inner_b, plan.symphysis_z + 5)
        r = u(xrng, 16, 22)
        scene.capsule(top, mid, r, muscle, deform=True, texture=4.0)
        scene.capsule(mid, low, r * 0.9, muscle, deform=True, texture=4.0)
        scene.ellipsoid((side * 0.45 * inner_a, 0.05 * inner_b, plan.symphysis_z + 5), (9, 35, 35), muscle, deform=True)


def _iliac_vessels(scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan, vessels: Vessels) -> None:
    """Common iliac arteries and veins from the bifurcation to the external iliacs over the femoral heads."""
    inner_a = an.inner[0]
    ax, ay = vessels.aorta_xy
    vx, vy = vessels.ivc_xy
    for side in (-1, 1):
        mid = (side * 0.3 * inner_a, ay - 10, plan.crest_z - 55)
        groin = (side * 0.62 * inner_a, -0.35 * an.b, plan.symphysis_z + 20)
        r = u(xrng, 5, 7)
        scene.capsule((ax, ay, plan.crest_z), mid, r, vessels.aorta_hu, deform=True)
        scene.capsule(mid, groin, r * 0.85, vessels.aorta_hu, deform=True)
        vein_mid = (side * 0.3 * inner_a + side * 6, vy + 15, plan.crest_z - 60)
        vein_groin = (side * 0.62 * inner_a + side * 10, -0.3 * an.b, plan.symphysis_z + 15)
        scene.capsule((vx, vy, plan.crest_z - 15), vein_mid, r * 1.3, vessels.vein_hu, deform=True)
        scene.capsule(vein_mid, vein_groin, r * 1.15, vessels.vein_hu, deform=True)


def _mass(
    scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan, liver_bottom: float
) -> dict[str, object]:
    """A 10-20 cm pelvic or ovarian mass rising from the pelvis: cystic (septated), solid (liver-like
    enhancement, sometimes necrotic) or mixed (cyst with solid mural nodules)."""
    kind = plan.findings.pelvic_mass
    if kind == "none":
        return {}
    inner_a, inner_b = an.inner
    diameter = u(xrng, 100, 200)
    rz = min(diameter / 2 * u(xrng, 0.8, 1.0), 0.5 * (liver_bottom - plan.symphysis_z - 20))
    rx = min(diameter / 2 * u(xrng, 0.65, 0.95), 0.7 * inner_a)
    ry = min(diameter / 2 * u(xrng, 0.5, 0.75), 0.62 * inner_b)
    center = np.array(
        [u(xrng, -0.25, 0.25) * inner_a, -inner_b + ry + u(xrng, 8, 20), plan.symphysis_z + u(xrng, 20, 50) + rz]
    )
    center[2] = min(center[2], liver_bottom - 10 - rz)
    radii = np.array([rx, ry, rz])
    angle = u(xrng, -0.5, 0.5)
    solid_hu = an.liver_hu + u(xrng, -15, 10)  # enhances like liver: what fools a liver model
    if kind == "solid":
        necrotic = xrng.random() < 0.4
        core = (0.45, u(xrng, 10, 30)) if necrotic else (0.0, 0.0)
        scene.ellipsoid(center, radii, solid_hu, angle=angle, deform=True, texture=12.0, core=core, soft=1.0)
    else:
        wall = solid_hu
        scene.ellipsoid(center, radii, u(xrng, 0, 20), angle=angle, deform=True, texture=3.0, rim=(0.96, wall))
        for _ in range(int(xrng.integers(1, 4))):  # loculi: their rims are the septa
            offset = xrng.uniform(-0.45, 0.45, 3) * radii
            scene.ellipsoid(center + offset, radii * u(xrng, 0.35, 0.55), u(xrng, 5, 25), deform=True, rim=(0.93, wall))
        if kind == "mixed":
            for _ in range(int(xrng.integers(1, 4))):  # solid mural nodules
                direction = xrng.normal(size=3)
                direction /= np.linalg.norm(direction)
                size = u(xrng, 15, 35)
                point = center + direction * (radii - size * 0.6)
                scene.ellipsoid(point, (size, size * 0.8, size), solid_hu, deform=True, texture=10.0)
    volume_ml = 4.0 / 3.0 * math.pi * rx * ry * rz / 1000.0
    return {"pelvic_mass_ml": round(volume_ml, 1), "pelvic_mass_center_z_mm": round(float(center[2]), 1)}


def _bones(scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan) -> None:
    """Sacrum and coccyx, iliac wings, acetabula, femoral heads and shafts, pubic and ischial rami."""
    inner_a, inner_b = an.inner
    vy = 0.68 * an.b
    sym = plan.symphysis_z
    cortex, marrow = u(xrng, 500, 900), u(xrng, 150, 300)
    # sacrum: segments narrowing and curving backwards from S1 to the coccyx
    top = plan.sacrum_top_z
    for k in range(5):
        t = k / 4
        z = top - 10 - t * (top - sym + 10)
        y = vy + 4 + 32 * t**1.5
        width = 48 * (1 - 0.75 * t)
        scene.bone((0, y, z), (width, 17 * (1 - 0.45 * t), 16), cortex, marrow, shell_mm=2.0)
    scene.ellipsoid((0, vy + 20, top - 30), (8, 5, 30), u(xrng, 0, 20))  # sacral canal
    # hips: iliac wings from the sacroiliac joints to the anterior iliac spines, acetabula, femoral heads
    head_x = min(u(xrng, 0.6, 0.68) * inner_a, 100.0)
    head_y, head_z = -0.05 * an.b, sym + 15
    head_r = u(xrng, 21, 25)
    for side in (-1, 1):
        si = np.array([side * 40.0, vy + 6])
        asis = np.array([side * 0.78 * inner_a, -0.2 * inner_b])
        mid = (si + asis) / 2
        half = float(np.linalg.norm(asis - si)) / 2
        angle = math.atan2(float(asis[1] - si[1]), float(asis[0] - si[0]))
        wing_z = plan.crest_z - 60
        scene.bone((mid[0], mid[1], wing_z), (half, u(xrng, 6, 9), 62), cortex, marrow, shell_mm=2.0, angle=angle)
        # the wing's lower body joins the acetabulum
        body = ((mid[0] + side * head_x) / 2, (mid[1] + head_y) / 2, (wing_z - 40 + head_z) / 2)
        scene.bone(body, (22, 18, 45), cortex, marrow)
        cup = (side * (head_x - 5), head_y, head_z + 5)
        scene.bone(cup, (head_r + 5, head_r + 5, head_r + 5), cortex, marrow, shell_mm=2.0)
        scene.ellipsoid((side * head_x, head_y, head_z), (head_r + 2.5,) * 3, u(xrng, 30, 50))  # joint space
        hx = side * head_x
        scene.bone((hx, head_y, head_z), (head_r,) * 3, cortex, u(xrng, 200, 350), shell_mm=2.0)
        # neck and shaft, fatty marrow in the shaft
        trochanter = np.array([side * (head_x + 32), head_y + 8, head_z - 28])
        scene.capsule((hx, head_y, head_z), trochanter, 15, cortex)
        scene.capsule((hx, head_y, head_z), trochanter, 11, marrow)
        scene.bone(trochanter, (20, 18, 22), cortex, marrow)
        shaft_top = trochanter + np.array([-side * 8.0, 0.0, -15.0])
        shaft_end = shaft_top + np.array([-side * 10.0, 0.0, -400.0])
        scene.capsule(shaft_top, shaft_end, u(xrng, 13, 15), u(xrng, 1000, 1500))
        scene.capsule(shaft_top, shaft_end, 8, u(xrng, -60, 40))
        # pubic ramus to the symphysis, ischial ramus to the tuberosity
        pubis = np.array([side * 9.0, -0.72 * inner_b, sym - 8])
        tuber = np.array([side * (head_x - 30), 0.15 * an.b, sym - 40])
        _rod(scene, np.array([side * (head_x - 12), head_y - 10, head_z - 5]), pubis, 9.0, cortex, marrow)
        _rod(scene, np.array([side * (head_x - 10), head_y + 10, head_z - 10]), tuber, 11.0, cortex, marrow)
        scene.bone(tuber, (16, 14, 14), cortex, marrow)


def _rod(
    scene: Scene, p0: npt.NDArray[np.float64], p1: npt.NDArray[np.float64], r: float, cortex: float, marrow: float
) -> None:
    scene.capsule(p0, p1, r, cortex)
    scene.capsule(p0, p1, r - 3, marrow)
