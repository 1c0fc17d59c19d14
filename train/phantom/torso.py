"""The trunk's frame: body wall, table, spine, ribs and great vessels, plus the plan of a whole-trunk case.

All positions are LPS millimetres with the liver dome at z = 0. A :class:`TorsoPlan` holds what a case
draws beyond the 0.4 phantom: the landmarks that place the chest and the pelvis (lung apex, iliac crest,
pubic symphysis) and the hard negatives (ascites, splenomegaly, a full stomach, a pelvic mass). Its draws
come from their own random stream, so that a plan with ``full=False`` leaves the 0.4 case untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .scene import BIG_MM, Anatomy, Scene, u

ASCITES = ("none", "perihepatic", "large")
PELVIC_MASSES = ("none", "cystic", "solid", "mixed")


@dataclass(frozen=True)
class Findings:
    """Hard negatives of one case: all labelled background (see docs/phantom.md for sizes and HU)."""

    ascites: str = "none"
    spleen_length_mm: float = 0.0  # 0: the normal spleen of the 0.4 phantom (9-12 cm)
    full_stomach: bool = False
    pelvic_mass: str = "none"

    def __post_init__(self) -> None:
        if self.ascites not in ASCITES:
            raise ValueError(f"ascites must be one of {ASCITES}; got {self.ascites!r}")
        if self.pelvic_mass not in PELVIC_MASSES:
            raise ValueError(f"pelvic_mass must be one of {PELVIC_MASSES}; got {self.pelvic_mass!r}")

    def summary(self) -> dict[str, object]:
        return {
            "ascites": self.ascites,
            "splenomegaly_mm": round(self.spleen_length_mm, 1) if self.spleen_length_mm else 0.0,
            "full_stomach": self.full_stomach,
            "pelvic_mass": self.pelvic_mass,
        }


@dataclass(frozen=True)
class Vessels:
    """HU and positions of the great vessels, shared by the chest, abdomen and pelvis builders."""

    aorta_hu: float
    vein_hu: float
    ivc_xy: tuple[float, float]
    aorta_xy: tuple[float, float]


@dataclass(frozen=True)
class TorsoPlan:
    """What a trunk case draws beyond the 0.4 abdomen (``full=False``: nothing; the 0.4 case exactly)."""

    full: bool
    apex_z: float  # lung apex
    arch_z: float  # top of the aortic arch
    crest_z: float  # iliac crest (L4): the aortic bifurcation
    symphysis_z: float  # top of the pubic symphysis
    female: bool
    findings: Findings

    @property
    def sacrum_top_z(self) -> float:
        return self.crest_z - 35.0


def draw_plan(xrng: np.random.Generator, full: bool, hard_negatives: bool) -> TorsoPlan:
    """Landmarks from adult trunk proportions and, with ``hard_negatives``, enriched pathology draws.

    Dome (T10) to lung apex 22-27 cm, dome to iliac crest (L4) 21-26 cm, crest to symphysis 15-18 cm.
    The draws are made whatever the flags, so every flag combination sees the same patient.
    """
    apex = u(xrng, 220, 270)
    crest = -u(xrng, 210, 260)
    findings_draw = xrng.random(4)
    plan_findings = Findings(
        ascites=("large" if findings_draw[0] < 0.12 else "perihepatic" if findings_draw[0] < 0.3 else "none"),
        spleen_length_mm=u(xrng, 130, 210) if findings_draw[1] < 0.25 else 0.0,
        full_stomach=bool(findings_draw[2] < 0.3),
        pelvic_mass=(
            "cystic"
            if findings_draw[3] < 0.2
            else "solid"
            if findings_draw[3] < 0.3
            else "mixed"
            if findings_draw[3] < 0.4
            else "none"
        ),
    )
    return TorsoPlan(
        full=full,
        apex_z=apex,
        arch_z=apex - u(xrng, 45, 65),
        crest_z=crest,
        symphysis_z=crest - u(xrng, 150, 180),
        female=bool(xrng.random() < 0.5),
        findings=plan_findings if hard_negatives else Findings(),
    )


def body_wall(scene: Scene, an: Anatomy, rng: np.random.Generator) -> None:
    """Subcutaneous fat, muscle ring, abdominal cavity (visceral fat), extruded along z."""
    a, b = an.a, an.b
    scene.ellipsoid((0, 0, 0), (a, b, BIG_MM), u(rng, -120, -80), texture=4.0)
    scene.ellipsoid((0, 0, 0), (a - an.fat, b - an.fat, BIG_MM), u(rng, 40, 65), texture=4.0)
    inner_a, inner_b = an.inner
    scene.ellipsoid((0, 0.03 * b, 0), (inner_a, inner_b, BIG_MM), u(rng, -100, -60), texture=8.0)


def table(scene: Scene, an: Anatomy, rng: np.random.Generator) -> None:
    """A curved carbon-fibre tray under the patient, with a foam layer."""
    a, b = an.a, an.b
    radius = u(rng, 450, 650)
    gap = u(rng, 3, 12)
    center = (0.0, b + gap + 6 - radius)
    half = math.asin(min(0.95, (a * 0.95) / radius))
    arc = (math.pi / 2 - half, math.pi / 2 + half)
    scene.ring(center, (radius, radius), 3.0, 0.0, arc, u(rng, 150, 350), extrude=True)
    scene.ring(center, (radius + 14, radius + 14), 6.0, 0.0, arc, u(rng, -400, -200), extrude=True)


def spine(scene: Scene, an: Anatomy, rng: np.random.Generator, zlo: float, plan: TorsoPlan) -> None:
    """Vertebral body (cortical shell, trabecular core), canal, posterior elements, paraspinal muscle.

    The 0.4 phantom extrudes the column through the whole scan; a full plan ends it at the sacrum.
    """
    b, h = an.b, an.liver_height
    vy = 0.68 * b
    for side in (-1, 1):
        scene.ellipsoid((side * 32, 0.86 * b, 0), (24, 0.14 * b, BIG_MM), u(rng, 45, 60), texture=4.0)
        if zlo < -h - 20:
            scene.ellipsoid((side * 42, 0.5 * b, -h - 120), (18, 16, 110), u(rng, 45, 60), texture=4.0)
    column = (plan.sacrum_top_z, 1e9) if plan.full else None
    scene.ellipsoid((0, vy, 0), (19, 16, BIG_MM), u(rng, 500, 1200), z_limits=column)
    scene.ellipsoid((0, vy, 0), (16.5, 13.5, BIG_MM), u(rng, 150, 300), texture=10.0, z_limits=column)
    scene.ellipsoid((0, vy + 22, 0), (9, 7, BIG_MM), u(rng, 0, 20), z_limits=column)  # spinal canal
    scene.ellipsoid((0, vy + 33, 0), (22, 5, BIG_MM), u(rng, 350, 700), z_limits=column)


def ribs(scene: Scene, an: Anatomy, rng: np.random.Generator, zhi: float) -> None:
    """Intermittent arcs in the body wall, sloping down anteriorly, from above the scan to below the liver."""
    rib_a, rib_b = an.a - an.fat - an.muscle * 0.5, an.b - an.fat - an.muscle * 0.5
    z = zhi + 90.0  # ribs start high at the back and slope down to the front
    while z > -an.liver_height - 20:
        for lo_t, hi_t in (
            (math.pi / 2 + 0.35, 3 * math.pi / 2 - 0.25),
            (-math.pi / 2 + 0.25, math.pi / 2 - 0.35),
        ):
            scene.ring(
                (0, 0),
                (rib_a, rib_b),
                u(rng, 3.5, 5.5),
                z + u(rng, -5, 5),
                (lo_t, hi_t),
                u(rng, 400, 800),
                slope=u(rng, 70, 110),
            )
        z -= u(rng, 24, 34)


def great_vessels(
    scene: Scene, an: Anatomy, rng: np.random.Generator, z_range: tuple[float, float], plan: TorsoPlan
) -> Vessels:
    """Aorta and inferior vena cava.

    A full plan ends the aorta at its bifurcation (iliac crest) and at the arch, and the IVC at the
    iliac confluence; the 0.4 phantom runs both through the scan.
    """
    a, b, con = an.a, an.b, an.contrast
    zlo, zhi = z_range
    vy = 0.68 * b
    aorta_lo, aorta_hi = (plan.crest_z, plan.arch_z) if plan.full else (zlo - 50, zhi + 50)
    aorta_r = u(rng, 10, 13)
    aorta_hu = u(rng, 140, 190) if con else u(rng, 35, 50)
    scene.capsule((0.06 * a, vy - 30, aorta_lo), (0.06 * a, vy - 30, aorta_hi), aorta_r, aorta_hu)
    ivc = (-0.13 * a, 0.32 * b)
    vessel_hu = u(rng, 130, 180) if con else u(rng, 30, 42)
    ivc_lo = plan.crest_z - 15 if plan.full else zlo - 50
    scene.capsule((ivc[0], ivc[1], ivc_lo), (ivc[0], ivc[1], 20), u(rng, 9, 12), vessel_hu)
    return Vessels(aorta_hu, vessel_hu, ivc, (0.06 * a, vy - 30))
