"""The chest: lungs and heart above the liver dome (the 0.4 phantom), and for a full plan the whole thorax.

Full plan: lungs up to the apex with pulmonary vessels, mediastinal fat, ascending aorta and arch with the
supra-aortic arteries, pulmonary trunk and arteries, superior vena cava, trachea and main bronchi,
oesophagus, sternum, clavicles, scapulae and, in women, breasts. Sizes and HU in docs/phantom.md. All of it
is labelled background; draws other than the 0.4 ones come from the plan's stream ``xrng``.
"""

from __future__ import annotations

import math

import numpy as np

from .scene import Anatomy, Scene, u
from .torso import TorsoPlan, Vessels


def breasts(scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan) -> None:
    """Drawn before the body wall, so only the part in front of the chest wall shows (fat, glandular core)."""
    if not (plan.full and plan.female):
        return
    size = u(xrng, 0.7, 1.2)
    for side in (-1, 1):
        scene.ellipsoid(
            (side * 0.42 * an.a, -an.b + 8 * size, plan.apex_z - u(xrng, 120, 140)),
            (55 * size, 38 * size, 60 * size),
            u(xrng, -110, -90),
            core=(0.55, u(xrng, -10, 40)),
            texture=12.0,
            deform=True,
        )


def lungs_and_heart(
    scene: Scene, an: Anatomy, rng: np.random.Generator, xrng: np.random.Generator, plan: TorsoPlan
) -> None:
    """Lung bases and heart (0.4 draws); a full plan adds the upper lungs and their vessels before the heart."""
    a, b, con = an.a, an.b, an.contrast
    inner_a, inner_b = an.inner
    for side in (-1, 1):
        scene.ellipsoid(
            (side * 0.48 * inner_a, 0.18 * b, u(rng, 70, 90)),
            (0.42 * inner_a, 0.7 * inner_b, 120),
            u(rng, -880, -820),
            texture=15.0,
        )
    if plan.full:  # the lungs fill the thorax up to the ribs and the apex
        lung_hu = u(xrng, -880, -820)
        for side in (-1, 1):
            scene.ellipsoid(
                (side * 0.5 * inner_a, 0.08 * inner_b, plan.apex_z * 0.45 + 10),
                (0.52 * inner_a, 0.92 * inner_b, plan.apex_z * 0.55),
                lung_hu,
                texture=15.0,
            )
        blood = u(xrng, 120, 170) if con else u(xrng, 35, 45)
        for side in (-1, 1):
            hilum = np.array([side * 0.24 * inner_a, 0.05 * b, plan.arch_z - 45])
            for _ in range(9):
                tip = np.array(
                    [
                        side * u(xrng, 0.35, 0.8) * inner_a,
                        u(xrng, -0.45, 0.65) * inner_b,
                        u(xrng, 25, plan.apex_z - 30),
                    ]
                )
                mid = hilum + (tip - hilum) * 0.45
                scene.capsule(hilum, mid, u(xrng, 3.0, 5.0), blood, deform=True, soft=0.5)
                scene.capsule(mid, tip, u(xrng, 1.2, 2.5), blood, deform=True, soft=0.5)
    scene.ellipsoid((0.12 * a, -0.3 * b, u(rng, 55, 75)), (0.33 * a, 0.42 * b, 60), u(rng, 35, 50))
    scene.ellipsoid(
        (0.14 * a, -0.3 * b, u(rng, 55, 75)),
        (0.2 * a, 0.26 * b, 40),
        u(rng, 140, 190) if con else u(rng, 35, 50),
    )


def chest_wall_bones(scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan) -> None:
    """Sternum (manubrium and body), clavicles and scapulae; rigid, cortex around marrow."""
    if not plan.full:
        return
    a, b = an.a, an.b
    front = -(b - an.fat - 0.6 * an.muscle)
    cortex, marrow = u(xrng, 450, 800), u(xrng, 150, 260)
    body_top = plan.apex_z - 75
    scene.bone((0, front, plan.apex_z - 50), (24, 7, 24), cortex, marrow)  # manubrium
    scene.bone((0, front, (body_top + 15) / 2), (15, 6, (body_top - 15) / 2), cortex, marrow)
    for side in (-1, 1):
        medial = np.array([side * 22, front + 4, plan.apex_z - 32])
        lateral = np.array([side * 0.88 * a, -0.3 * b, plan.apex_z + 2])
        r = u(xrng, 7, 9)
        scene.capsule(medial, lateral, r, cortex + 300)
        scene.capsule(medial, lateral, r - 2.5, marrow)
        # the scapula lies flat on the posterior ribs, between the rib arc and the skin
        t = math.radians(u(xrng, 52, 62))
        x = side * (an.a - an.fat) * math.cos(t)
        y = (an.b - an.fat - an.muscle * 0.2) * math.sin(t)
        tangent = math.atan2((an.b - an.fat) * math.cos(t), -(an.a - an.fat) * math.sin(t) * side)
        scene.bone((x, y, plan.apex_z - 95), (55, 4.5, 75), u(xrng, 350, 650), marrow, shell_mm=1.5, angle=tangent)


def mediastinum(scene: Scene, an: Anatomy, xrng: np.random.Generator, plan: TorsoPlan, vessels: Vessels) -> None:
    """Mediastinal fat, aortic root and arch, pulmonary arteries, SVC, trachea, bronchi, oesophagus."""
    if not plan.full:
        return
    a, b = an.a, an.b
    vy = 0.68 * b
    arch = plan.arch_z
    scene.ellipsoid((0.02 * a, -0.08 * b, arch - 15), (0.13 * a, 0.5 * b, 95), u(xrng, -100, -60), texture=6.0)
    scene.ellipsoid((0.0, -0.3 * b, arch - 20), (0.12 * a, 0.18 * b, 45), u(xrng, -90, -40), texture=8.0)  # thymic fat
    # aorta: root -> ascending -> arch -> the descending aorta of the trunk frame
    root = np.array([-0.02 * a, -0.22 * b, 85.0])
    ascending_top = np.array([-0.05 * a, -0.26 * b, arch - 14])
    descending_top = np.array([vessels.aorta_xy[0], vessels.aorta_xy[1], arch])
    arch_mid = np.array([0.02 * a, 0.5 * (ascending_top[1] + descending_top[1]) - 4, arch + 4])
    r_aorta = u(xrng, 13, 17)
    scene.capsule(root, ascending_top, r_aorta, vessels.aorta_hu)
    scene.capsule(ascending_top, arch_mid, r_aorta * 0.9, vessels.aorta_hu)
    scene.capsule(arch_mid, descending_top, r_aorta * 0.85, vessels.aorta_hu)
    for dx, r in ((-0.07, 6.5), (0.0, 4.5), (0.06, 5.0)):  # brachiocephalic, left carotid, left subclavian
        start = arch_mid + np.array([dx * a, 0.0, 2.0])
        scene.capsule(start, start + np.array([dx * a * 0.8, -6.0, plan.apex_z + 60 - arch]), r, vessels.aorta_hu)
    # pulmonary trunk and arteries, SVC
    trunk0 = np.array([0.1 * a, -0.32 * b, 95.0])
    trunk1 = np.array([0.08 * a, -0.12 * b, arch - 40])
    scene.capsule(trunk0, trunk1, u(xrng, 12, 15), vessels.vein_hu)
    for side in (-1, 1):
        scene.capsule(trunk1, (side * 0.22 * an.inner[0], 0.04 * b, arch - 45), u(xrng, 8, 11), vessels.vein_hu)
    scene.capsule(
        (-0.13 * a, -0.18 * b, 95.0), (-0.13 * a, -0.18 * b, plan.apex_z - 10), u(xrng, 8, 11), vessels.vein_hu
    )
    # trachea (cartilage wall around air) from above the apex to the carina, main bronchi to the hila
    ty = vy - 50
    carina = np.array([0.0, ty, arch - 28])
    top = np.array([0.0, ty - 8, plan.apex_z + 80])
    r_trachea = u(xrng, 8, 11)
    wall_hu = u(xrng, 40, 90)
    scene.capsule(carina, top, r_trachea + 2, wall_hu)
    for side in (-1, 1):
        scene.capsule(carina, (side * 0.2 * an.inner[0], ty + 10, arch - 50), r_trachea * 0.7 + 2, wall_hu)
    scene.capsule(carina, top, r_trachea, -1000.0)
    for side in (-1, 1):
        scene.capsule(carina, (side * 0.2 * an.inner[0], ty + 10, arch - 50), r_trachea * 0.7, -1000.0)
    # oesophagus: behind the trachea, right of the descending aorta, through the hiatus to the stomach
    oy = vy - 28
    hiatus = np.array([0.05 * a, 0.15 * b, 0.0])
    r_oes = u(xrng, 6, 8)
    oes_hu = u(xrng, 35, 50)
    scene.capsule((-6.0, oy, plan.apex_z + 80), (-6.0, oy, 45.0), r_oes, oes_hu)
    scene.capsule((-6.0, oy, 45.0), hiatus, r_oes, oes_hu)
    scene.capsule((0.3 * a, -0.15 * b, -0.2 * an.liver_height), hiatus, r_oes, oes_hu, deform=True)
