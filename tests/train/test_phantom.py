from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from litseg.runtime.nifti import read_nifti
from litseg.train.phantom import PhantomOptions, generate_case, main, stored_volumes

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
    from dataclasses import replace

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
