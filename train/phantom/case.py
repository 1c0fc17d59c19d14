"""A realistic synthetic CT phantom in the LiTS17 layout, from the head to the pelvis.

``litseg-phantom --out DIR --cases N --seed S`` writes ``volume-<n>.nii.gz`` (int16 HU) and
``segmentation-<n>.nii.gz`` (0 background, 1 liver, 2 tumor), deterministic per seed, optionally also
as DICOM series. A case covers one body region (``--region``, or a seeded draw from ``--region-mix``):
the abdomen (the default, unchanged since 0.4), chest to pelvis, or the liver-free chest, pelvis, head
and neck, whose labels are all background. Hard negatives (``--hard-negatives``: ascites, splenomegaly,
a full stomach, pelvic and ovarian masses) are labelled background too. The anatomy lives in one module
per body part (``torso``, ``thorax``, ``abdomen``, ``pelvis``,
``head``, ``neck``), drawn with analytic shapes, elastically deformed, with partial volume
over the slice thickness, scanner blur, correlated noise and low-frequency texture (``render``).
See docs/phantom.md for the numbers and their sources.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from litseg.runtime.volume import Volume

from . import abdomen as abdomen
from . import head as head
from . import neck as neck
from . import pelvis as pelvis
from . import render as pr
from . import thorax as thorax
from . import torso as torso
from .regions import (
    LIVER_REGIONS,
    MAX_SLICES,
    REGIONS,
    THICKNESSES_MM,
    Scan,
    fit_scan,
    parse_region_mix,
    region_for_seed,
    trunk_range,
)
from .scene import Anatomy, Scene, deform_field, max_shift_mm, render, u

log = logging.getLogger(__name__)

#: LiTS header quirks a case can carry (see docs/phantom.md).
QUIRKS = ("none", "ras-array", "flipped-z", "mask-affine-mismatch", "fake-spacing")
_PLAN_STREAM = 0x6C697473  # the random stream of everything drawn beyond the 0.4 abdomen


@dataclass(frozen=True)
class PhantomOptions:
    """Case-level choices; ``None`` means drawn at random from the realistic range.

    ``region`` picks the body part scanned (:data:`REGIONS`). ``hard_negatives`` adds ascites,
    splenomegaly, a full stomach and pelvic masses where the scan reaches them, and the full trunk
    anatomy (pelvic organs and bones, mediastinum) to abdomen cases; ``None`` means on for every region
    but ``abdomen``, whose default stays the 0.4 phantom exactly (the same arrays for the same seed).
    """

    contrast: bool | None = None
    slices: int | None = None
    pixel_spacing_mm: float | None = None
    slice_thickness_mm: float | None = None
    tumors: int | None = None
    quirk: str = "none"
    rows: int = 512
    region: str = "abdomen"
    hard_negatives: bool | None = None

    def __post_init__(self) -> None:
        if self.quirk not in QUIRKS:
            raise ValueError(f"quirk must be one of {QUIRKS}; got {self.quirk!r}")
        if self.region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}; got {self.region!r}")
        if self.slices is not None and not 8 <= self.slices <= 1000:
            raise ValueError(f"slices must be between 8 and 1000; got {self.slices}")
        if self.tumors is not None and not 0 <= self.tumors <= 30:
            raise ValueError(f"tumors must be between 0 and 30; got {self.tumors}")

    @property
    def with_hard_negatives(self) -> bool:
        return self.hard_negatives if self.hard_negatives is not None else self.region != "abdomen"

    @property
    def has_liver(self) -> bool:
        return self.region in LIVER_REGIONS


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """A generated case in canonical LPS orientation (columns +L, rows +P, slices +S)."""

    hu: Volume  # int16
    labels: Volume  # uint8, same geometry
    info: dict[str, object] = field(default_factory=dict)


def _liver_scale(an: Anatomy, deform: npt.NDArray[np.float64], max_shift: float, target_ml: float) -> None:
    """Measure the drawn liver on a coarse grid, rescale it to ``target_ml``, measure again."""
    for _ in range(2):
        scene = Scene(margin_mm=8.0, deform_mm=max_shift)
        abdomen.liver_shapes(scene, an)
        coarse = np.diag([4.0, 4.0, 4.0, 1.0])
        coarse[:3, 3] = (-an.a, -an.b, -an.liver_height * 1.6)
        shape = (int(an.liver_height * 1.8 / 4), int(2 * an.b / 4), int(2 * an.a / 4))
        _, lab = render(scene, deform, np.random.default_rng(0), shape, coarse, 4.0)
        volume_ml = float((lab > 0).sum()) * 64 / 1000
        an.liver_scale *= (target_ml / max(volume_ml, 1.0)) ** (1 / 3)


def _trunk_scene(
    an: Anatomy,
    rng: np.random.Generator,
    xrng: np.random.Generator,
    plan: torso.TorsoPlan,
    n_tumors: int,
    z_range: tuple[float, float],
    scene: Scene,
    liver_z: tuple[float, float],
    with_liver: bool,
) -> dict[str, object]:
    """Chest, abdomen and pelvis, back to front; the 0.4 draws of ``rng`` keep their order."""
    thorax.breasts(scene, an, xrng, plan)
    torso.body_wall(scene, an, rng)
    abdomen.ascites(scene, an, xrng, plan, liver_z)
    pelvis.soft_tissue(scene, an, xrng, plan)
    torso.table(scene, an, rng)
    thorax.lungs_and_heart(scene, an, rng, xrng, plan)
    torso.spine(scene, an, rng, z_range[0], plan)
    torso.ribs(scene, an, rng, z_range[1])
    vessels = torso.great_vessels(scene, an, rng, z_range, plan)
    thorax.chest_wall_bones(scene, an, xrng, plan)
    thorax.mediastinum(scene, an, xrng, plan, vessels)
    abdomen.organs(scene, an, rng, xrng, plan, z_range)
    info = pelvis.pelvis(scene, an, xrng, plan, vessels, liver_z[0])
    if with_liver:
        info.update(abdomen.liver(scene, an, rng, n_tumors, vessels))
    else:
        info["tumors"] = []
    return info


def _head_or_neck(
    region: str, xrng: np.random.Generator, contrast: bool, scan: Scan, max_shift: float, options: PhantomOptions
) -> tuple[Scene, Scan, bool, dict[str, object]]:
    """The liver-free head or neck: its own anatomy, field of view (22-30 cm) and contrast (mostly none)."""
    contrast = contrast and bool(xrng.random() < (0.2 if region == "head" else 0.7))
    if region == "head":
        hd = head.draw(xrng, contrast)
        z_lo, z_hi, focus = head.extent(hd, xrng)
        half, fov = hd.half_extent_mm, (0.42, 0.5)
    else:
        nk = neck.draw(xrng, contrast)
        z_lo, z_hi, focus = neck.extent(nk, xrng)
        half, fov = nk.half_extent_mm, (0.49, 0.63)
    scan.pixel = options.pixel_spacing_mm or max(u(xrng, *fov), (2 * half + 30) / options.rows)
    fixed = options.slice_thickness_mm is not None
    scan = fit_scan(scan, (z_lo, z_hi), focus, "centre", options.slices, fixed)
    scene = Scene(scan.thickness + 2 * scan.pixel, max_shift)
    info = head.build(scene, hd, xrng) if region == "head" else neck.build(scene, nk, xrng)
    return scene, scan, contrast, {**info, "tumors": []}


def generate_case(seed: int, options: PhantomOptions = PhantomOptions()) -> PhantomCase:
    """One phantom case, deterministic for ``(seed, options)``."""
    rng = np.random.default_rng(seed)
    xrng = np.random.default_rng([seed, _PLAN_STREAM])
    contrast = options.contrast if options.contrast is not None else bool(rng.random() > 0.2)
    an = Anatomy(
        a=u(rng, 145, 175),
        b=u(rng, 105, 130),
        fat=u(rng, 10, 30),
        muscle=u(rng, 8, 15),
        liver_height=u(rng, 140, 180),
        contrast=contrast,
        liver_hu=u(rng, 95, 120) if contrast else u(rng, 45, 65),
        liver_seed=int(rng.integers(2**31)),
    )
    target_ml = u(rng, 1200, 2000)
    pixel = options.pixel_spacing_mm or max(u(rng, 0.56, 1.0), (2 * an.a + 40) / options.rows)
    thickness = options.slice_thickness_mm or float(rng.choice(THICKNESSES_MM))
    spacing_z = thickness if rng.random() < 0.7 else thickness * 0.8
    n_tumors = options.tumors if options.tumors is not None else min(12, int(rng.poisson(3.2)))
    deform = deform_field(rng, u(rng, 4, 10))
    max_shift = max_shift_mm(deform)
    region = options.region
    scan = Scan(pixel, thickness, spacing_z, 0, 0.0)
    if region in ("head", "neck"):
        scene, scan, contrast, info = _head_or_neck(region, xrng, contrast, scan, max_shift, options)
    else:
        _liver_scale(an, deform, max_shift, target_ml)
        liver_z = abdomen.liver_z_range(an, max_shift)
        hard = options.with_hard_negatives
        plan = torso.draw_plan(xrng, full=hard or region != "abdomen", hard_negatives=hard)
        # scan range: the liver on about 30% of the slices of an abdomen scan (dome at z = 0)
        liver_extent = an.liver_height * an.liver_scale
        length = liver_extent / u(rng, 0.25, 0.38)
        scan.slices = options.slices or int(np.clip(round(length / spacing_z), 60, MAX_SLICES))
        length = scan.slices * spacing_z
        z_top = u(rng, 20, 60) if options.slices is None else min(40.0, length * 0.3)
        scan.z_bottom = z_top - (scan.slices - 1) * spacing_z
        if region != "abdomen" and not (region == "chest-abdomen-pelvis" and options.slices is not None):
            z_range, focus, anchor = trunk_range(region, plan, liver_z, xrng)
            fixed = options.slice_thickness_mm is not None
            scan = fit_scan(scan, z_range, focus, anchor, options.slices, fixed)
        scene = Scene(scan.thickness + 2 * scan.pixel, max_shift)
        z_range = (scan.z_bottom, scan.z_bottom + (scan.slices - 1) * scan.spacing_z)
        info = _trunk_scene(an, rng, xrng, plan, n_tumors, z_range, scene, liver_z, options.has_liver)
        info["findings"] = plan.findings.summary()
    n = options.rows
    shift_x, shift_y = u(rng, -10, 10), u(rng, 0, 25)
    if region in ("head", "neck"):  # centred: the head holder is small
        shift_y = 5.0 + (shift_y - 12.5) * 0.4
    affine = np.diag([scan.pixel, scan.pixel, scan.spacing_z, 1.0])
    affine[:3, 3] = (-(n - 1) / 2 * scan.pixel + shift_x, -(n - 1) / 2 * scan.pixel + shift_y, scan.z_bottom)
    hu, labels = render(scene, deform, rng, (scan.slices, n, n), affine, scan.thickness)
    # head CT is reconstructed smooth at a high dose (brain noise 3-7 HU); neck CT a little below the trunk
    hu_int, recon = _reconstruct(hu, rng, {"head": 0.35, "neck": 0.8}.get(region, 1.0))
    info = {
        "seed": seed,
        "region": region,
        "contrast": "portal-venous" if contrast else "non-contrast",
        "liver_volume_ml": round(float((labels > 0).sum()) * scan.pixel * scan.pixel * scan.spacing_z / 1000, 1),
        "tumor_voxels": int((labels == 2).sum()),
        "pixel_spacing_mm": round(scan.pixel, 4),
        "slice_thickness_mm": scan.thickness,
        "slice_spacing_mm": scan.spacing_z,
        "slices": scan.slices,
        **recon,
        "quirk": options.quirk,
        "hard_negatives": options.with_hard_negatives,
        **info,
    }
    return PhantomCase(Volume(hu_int, affine), Volume(labels, affine), info)


def _reconstruct(
    hu: npt.NDArray[np.float32], rng: np.random.Generator, noise_scale: float
) -> tuple[npt.NDArray[np.int16], dict[str, object]]:
    """Noise and scanner blur, padding outside the reconstruction circle, int16 HU."""
    # White noise and anatomy through one scanner blur, so the noise is correlated the way a
    # reconstruction kernel correlates it; scale the white noise for the wanted final sd.
    n = hu.shape[1]
    sigma_px = u(rng, 0.7, 1.0)
    gain = float((pr.gaussian_kernel(sigma_px) ** 2).sum())  # sd factor of the separable 2-D blur
    noise_sd = u(rng, 10, 20) * noise_scale
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_sd / gain)
    hu = pr.blur_slices(hu, sigma_px)
    j, i = np.mgrid[:n, :n]
    outside = ((j - (n - 1) / 2) ** 2 + (i - (n - 1) / 2) ** 2) > (n / 2) ** 2
    padding = float(rng.choice([-1024.0, -2048.0, -3024.0], p=[0.5, 0.2, 0.3]))
    hu[:, outside] = padding
    hu_int = np.clip(np.round(hu), -3024, 3071).astype(np.int16)
    return hu_int, {"padding_hu": padding, "noise_sd_hu": round(noise_sd, 1)}


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
        description="Generate synthetic CT cases in the LiTS17 layout (volume-N / segmentation-N).",
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
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--region", choices=REGIONS, default="abdomen", help="body region scanned (default abdomen)")
    where.add_argument(
        "--region-mix",
        default=None,
        help="draw each case's region from weights, deterministic per seed, e.g. "
        "abdomen:0.6,chest-abdomen-pelvis:0.2,pelvis:0.07,chest:0.05,head:0.04,neck:0.04",
    )
    parser.add_argument(
        "--hard-negatives",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ascites, splenomegaly, full stomach, pelvic masses and the full trunk anatomy, all background "
        "(default: on for every region but abdomen, which stays the 0.4 phantom)",
    )
    parser.add_argument("--dicom", action="store_true", help="also write each case as a DICOM CT series")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.cases < 1:
        parser.error(f"--cases must be >= 1; got {args.cases}")
    try:
        mix = parse_region_mix(args.region_mix) if args.region_mix else ((args.region, 1.0),)
    except ValueError as err:
        parser.error(str(err))
    contrast = None if args.contrast == "random" else args.contrast == "portal-venous"
    manifest = []
    for n in range(args.cases):
        start = time.perf_counter()
        seed = args.seed + n
        options = PhantomOptions(
            contrast=contrast,
            slices=args.slices,
            tumors=args.tumors,
            quirk=args.quirk,
            rows=args.size,
            region=region_for_seed(seed, mix),
            hard_negatives=args.hard_negatives,
        )
        case = generate_case(seed, options)
        index = args.start_index + n
        entry = write_case(case, args.out, index, dicom=args.dicom)
        entry["seconds"] = round(time.perf_counter() - start, 2)
        manifest.append(entry)
        print(
            f"[{n + 1}/{args.cases}] volume-{index}: {options.region}, {case.hu.shape_zyx[0]} slices, "
            f"liver {case.info['liver_volume_ml']} mL, {len(case.info['tumors'])} tumors "  # type: ignore[arg-type]
            f"({entry['seconds']} s)",
            file=sys.stderr,
        )
    (args.out / "phantom-manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
