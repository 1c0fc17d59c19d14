from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from litseg.runtime.nifti import read_nifti
from litseg.train.phantom.case import (
    REGIONS,
    PhantomCase,
    PhantomOptions,
    generate_case,
    main,
    parse_region_mix,
    region_for_seed,
    stored_volumes,
)

SMALL = PhantomOptions(slices=40, rows=256, tumors=3)


@pytest.fixture(scope="module")
def case():  # type: ignore[no-untyped-def]
    return generate_case(7, SMALL)


def test_generation_is_deterministic_per_seed(case) -> None:  # type: ignore[no-untyped-def]
    again = generate_case(7, SMALL)
    np.testing.assert_array_equal(case.hu.array, again.hu.array)
    np.testing.assert_array_equal(case.labels.array, again.labels.array)
    other = generate_case(8, SMALL)
    assert not np.array_equal(case.hu.array, other.hu.array)


def test_anatomy_is_where_it_belongs(case) -> None:  # type: ignore[no-untyped-def]
    hu, labels = np.asarray(case.hu.array), np.asarray(case.labels.array)
    assert hu.dtype == np.int16 and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}
    liver = np.argwhere(labels > 0)
    body = np.argwhere(hu > -500)
    # canonical array: columns to the patient's left, rows to posterior
    assert liver[:, 2].mean() < body[:, 2].mean()  # liver on the patient's right
    bone = np.argwhere(hu > 400)
    assert bone[:, 1].mean() > liver[:, 1].mean()  # bone (spine, ribs, table) mostly behind the liver
    parenchyma = hu[labels == 1]
    assert 40 < float(np.median(parenchyma)) < 125
    assert (labels == 2).sum() > 0
    assert float(np.median(hu[labels == 2])) < float(np.median(parenchyma))  # tumors darker than liver


def test_every_tumor_is_darker_than_its_liver() -> None:
    """Rims are thin: a lesion stays hypodense overall, as the issue's hypodense metastases are."""
    from scipy import ndimage

    lesions = 0
    for seed in range(3):
        case = generate_case(seed, PhantomOptions(slices=120, rows=192, tumors=4))
        hu, labels = np.asarray(case.hu.array), np.asarray(case.labels.array)
        parenchyma = float(np.median(hu[labels == 1]))
        components, count = ndimage.label(labels == 2)
        for k in range(1, count + 1):
            voxels = hu[components == k]
            if voxels.size >= 50:
                lesions += 1
                assert float(voxels.mean()) < parenchyma - 5, (seed, k, float(voxels.mean()), parenchyma)
    assert lesions >= 6


def test_realistic_ranges_over_a_few_cases() -> None:
    infos = [generate_case(seed, PhantomOptions(slices=8)).info for seed in range(4)]
    for info in infos:
        assert 0.56 <= float(info["pixel_spacing_mm"]) <= 1.0
        assert 0.7 <= float(info["slice_thickness_mm"]) <= 5.0
        assert 10 <= float(info["noise_sd_hu"]) <= 20
        assert info["padding_hu"] in (-1024.0, -2048.0, -3024.0)
        assert 0 <= len(info["tumors"]) <= 12  # type: ignore[arg-type]


@pytest.mark.parametrize("quirk", ["none", "ras-array", "flipped-z", "fake-spacing"])
def test_stored_quirks_keep_image_and_mask_aligned(case, quirk: str) -> None:  # type: ignore[no-untyped-def]
    quirky = replace(case, info={**case.info, "quirk": quirk})
    image, mask = stored_volumes(quirky)
    assert np.allclose(image.affine_lps, mask.affine_lps)
    if quirk in ("ras-array", "flipped-z"):
        # same world, other array order: a voxel's world position carries the same value
        k, j, i = 5, 40, 30
        world = case.hu.index_to_lps([i, j, k])
        idx = np.round(image.lps_to_index(world)).astype(int)
        assert image.array[idx[2], idx[1], idx[0]] == case.hu.array[k, j, i]


def test_cli_writes_lits_layout(tmp_path: Path) -> None:
    code = main(
        [
            "--out",
            str(tmp_path),
            "--cases",
            "2",
            "--seed",
            "3",
            "--slices",
            "12",
            "--size",
            "64",
            "--dicom",
            "--start-index",
            "5",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "dicom",
        "phantom-manifest.json",
        "segmentation-5.nii.gz",
        "segmentation-6.nii.gz",
        "volume-5.nii.gz",
        "volume-6.nii.gz",
    ]
    vol = read_nifti(tmp_path / "volume-5.nii.gz")
    assert vol.shape_zyx == (12, 64, 64) and vol.array.dtype == np.int16
    assert len(list((tmp_path / "dicom" / "case-5").iterdir())) == 12


# ----- regions and hard negatives --------------------------------------------------------------------
REGION_FAST = PhantomOptions(rows=128, slice_thickness_mm=5.0)


def test_the_default_abdomen_is_the_04_phantom(case) -> None:  # type: ignore[no-untyped-def]
    """The recipe's numbers were measured on the 0.4 phantom: its default cases must not drift."""
    labels, hu = np.asarray(case.labels.array), np.asarray(case.hu.array)
    assert int((labels == 1).sum()) == pytest.approx(137542, rel=0.005)
    assert int((labels == 2).sum()) == pytest.approx(5685, rel=0.02)
    assert float(hu.mean()) == pytest.approx(-768.25, abs=0.5)
    assert case.info["region"] == "abdomen" and case.info["hard_negatives"] is False


@pytest.fixture(scope="module")
def regions():  # type: ignore[no-untyped-def]
    return {region: generate_case(5, replace(REGION_FAST, region=region)) for region in REGIONS}


def test_every_region_renders_and_only_trunk_regions_hold_liver(regions) -> None:  # type: ignore[no-untyped-def]
    for region, case in regions.items():
        hu, labels = np.asarray(case.hu.array), np.asarray(case.labels.array)
        assert hu.dtype == np.int16 and labels.dtype == np.uint8 and hu.shape == labels.shape, region
        assert case.info["region"] == region
        assert 24 <= hu.shape[0] <= 300
        assert (hu > 300).sum() > 0  # every region has bone
        if region in ("abdomen", "chest-abdomen-pelvis"):
            assert (labels == 1).sum() > 0, region
        else:
            assert not labels.any(), region  # liver-free regions are all background
            assert case.info["liver_volume_ml"] == 0.0 and case.info["tumors"] == []


def test_whole_trunk_covers_chest_to_pelvis(regions) -> None:  # type: ignore[no-untyped-def]
    cap, abdomen = regions["chest-abdomen-pelvis"], regions["abdomen"]
    z = lambda case, k: float(case.hu.index_to_lps([0, 0, k])[2])  # noqa: E731
    length = z(cap, cap.hu.shape_zyx[0] - 1) - z(cap, 0)
    assert length > 600  # apex to below the symphysis
    liver_slices = np.nonzero(np.asarray(cap.labels.array).any(axis=(1, 2)))[0]
    # the liver sits in the upper part: well above the middle of the scan, below its top
    assert liver_slices.mean() > 0.5 * cap.hu.shape_zyx[0]
    assert liver_slices.max() < cap.hu.shape_zyx[0] - 10
    assert abdomen.hu.shape_zyx[0] < cap.hu.shape_zyx[0] * cap.hu.spacing_mm[2] / abdomen.hu.spacing_mm[2]


def test_regions_have_realistic_ct_numbers(regions) -> None:  # type: ignore[no-untyped-def]
    def body(case):  # type: ignore[no-untyped-def]
        hu = np.asarray(case.hu.array)
        return hu[hu > -1010]

    chest = np.asarray(regions["chest"].hu.array)
    lung = chest[(chest > -950) & (chest < -700)]
    assert lung.size > 0.1 * (chest > -950).sum()  # the lungs fill the chest
    assert -900 < float(np.median(lung)) < -790
    head = np.asarray(regions["head"].hu.array)
    brain = head[(head > 15) & (head < 60)]
    assert 28 < float(np.median(brain)) < 45  # brain 25-45 HU
    assert (head > 700).sum() > 0.03 * (head > -300).sum()  # the skull
    assert float(np.percentile(body(regions["neck"]), 99.5)) > 700  # cervical spine, mandible
    neck_area = (np.asarray(regions["neck"].hu.array) > -300).sum(axis=(1, 2)) * regions["neck"].hu.spacing_mm[0] ** 2
    assert float(np.median(neck_area)) / 100 < 250  # a neck is much smaller than an abdomen (cm^2)


def _seed_with(finding: str, value: object) -> int:
    for seed in range(200):
        info = generate_case(seed, PhantomOptions(slices=8, rows=32, region="pelvis")).info
        if info["findings"][finding] == value:  # type: ignore[index]
            return seed
    raise AssertionError(f"no seed with {finding}={value}")


def test_a_solid_pelvic_mass_enhances_like_liver_and_is_background() -> None:
    seed = _seed_with("pelvic_mass", "solid")
    options = PhantomOptions(rows=160, slice_thickness_mm=3.0, region="pelvis", contrast=True)
    case = generate_case(seed, options)
    assert case.info["findings"]["pelvic_mass"] == "solid"  # type: ignore[index]
    assert not np.asarray(case.labels.array).any()
    k = round(float(case.hu.lps_to_index([0.0, 0.0, float(case.info["pelvic_mass_center_z_mm"])])[2]))  # type: ignore[arg-type]
    hu = np.asarray(case.hu.array)[k]
    liver_like = (hu > 80) & (hu < 140)  # the portal-venous liver band
    assert liver_like.sum() * case.hu.spacing_mm[0] ** 2 > 2000  # > 20 cm^2 of liver-like tissue in the pelvis
    assert 0.1 <= float(case.info["pelvic_mass_ml"]) / 1000 <= 4.5  # type: ignore[arg-type]


def test_hard_negatives_never_change_the_liver_labels() -> None:
    """Ascites, splenomegaly, food and the full trunk are drawn behind the liver and labelled background."""
    options = PhantomOptions(rows=128, slices=60, slice_thickness_mm=3.0, contrast=True)
    seed = _seed_with("ascites", "large")
    plain = generate_case(seed, options)
    hard = generate_case(seed, replace(options, hard_negatives=True))
    np.testing.assert_array_equal(plain.labels.array, hard.labels.array)
    assert hard.info["findings"]["ascites"] == "large"  # type: ignore[index]
    # fluid (0-20 HU before noise) around the liver: many more background voxels near water density
    liver_slices = np.asarray(plain.labels.array).any(axis=(1, 2))

    def fluid(case):  # type: ignore[no-untyped-def]
        hu, labels = np.asarray(case.hu.array)[liver_slices], np.asarray(case.labels.array)[liver_slices]
        return int(((hu > -5) & (hu < 25) & (labels == 0)).sum())

    assert fluid(hard) > 2 * fluid(plain)


def test_splenomegaly_grows_a_liver_like_organ_on_the_left() -> None:
    """The same patient with and without splenomegaly (17-21 cm): more liver-like background on the left."""
    seed = next(
        s
        for s in range(200)
        if generate_case(s, PhantomOptions(slices=8, rows=32, region="pelvis")).info["findings"]["splenomegaly_mm"]  # type: ignore[index]
        > 170
    )
    options = PhantomOptions(rows=128, slice_thickness_mm=3.0, contrast=True)
    plain, hard = generate_case(seed, options), generate_case(seed, replace(options, hard_negatives=True))
    liver_slices = np.nonzero(np.asarray(plain.labels.array).any(axis=(1, 2)))[0]
    upper = np.arange(plain.hu.shape_zyx[0]) >= liver_slices[0] - 80 / plain.hu.spacing_mm[2]  # above the pelvis

    def left_liver_like_ml(case: PhantomCase) -> float:
        hu, labels = np.asarray(case.hu.array)[upper], np.asarray(case.labels.array)[upper]
        left = round(float(case.hu.lps_to_index([40.0, 0.0, 0.0])[0]))  # LPS x > 40 mm: the patient's left
        tissue = (hu[:, :, left:] > 90) & (hu[:, :, left:] < 145) & (labels[:, :, left:] == 0)
        return float(tissue.sum() * case.hu.voxel_volume_ml)

    assert left_liver_like_ml(hard) > left_liver_like_ml(plain) + 150


@pytest.mark.parametrize("region", ["chest", "pelvis", "head", "neck"])
def test_regions_are_deterministic(region: str) -> None:
    options = PhantomOptions(rows=64, slices=12, region=region)
    a, b = generate_case(11, options), generate_case(11, options)
    np.testing.assert_array_equal(a.hu.array, b.hu.array)
    assert not np.array_equal(a.hu.array, generate_case(12, options).hu.array)


def test_region_mix_is_seeded_and_weighted() -> None:
    mix = parse_region_mix("abdomen:0.6,chest-abdomen-pelvis:0.2,pelvis:0.07,chest:0.05,head:0.04,neck:0.04")
    assert sum(w for _, w in mix) == pytest.approx(1.0)
    drawn = [region_for_seed(s, mix) for s in range(3000)]
    assert drawn == [region_for_seed(s, mix) for s in range(3000)]
    assert drawn.count("abdomen") / 3000 == pytest.approx(0.6, abs=0.04)
    assert drawn.count("head") / 3000 == pytest.approx(0.04, abs=0.015)
    for bad in ("abdomen", "lungs:1", "abdomen:0", "abdomen:x", "abdomen:1,abdomen:2"):
        with pytest.raises(ValueError, match="region mix"):
            parse_region_mix(bad)
    with pytest.raises(ValueError, match="region must be one of"):
        PhantomOptions(region="legs")


def test_cli_draws_regions_from_a_mix(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--cases", "3", "--seed", "40", "--slices", "8", "--size", "48"]
    assert main([*args, "--region-mix", "head:1,neck:1", "--hard-negatives"]) == 0
    manifest = json.loads((tmp_path / "phantom-manifest.json").read_text())
    assert [entry["region"] for entry in manifest] == [
        region_for_seed(s, parse_region_mix("head:1,neck:1")) for s in (40, 41, 42)
    ]
    assert all(entry["hard_negatives"] is True and entry["liver_volume_ml"] == 0.0 for entry in manifest)
    seg = read_nifti(tmp_path / "segmentation-0.nii.gz")
    assert not np.asarray(seg.array).any()
    assert main(["--out", str(tmp_path / "p"), "--slices", "8", "--size", "48", "--region", "pelvis"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--region-mix", "abdomen:1", "--region", "head"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main([*args, "--region-mix", "liver:1"])
