from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litseg.runtime.errors import InputError
from litseg.runtime.geometry import Reorientation, canonical_reorientation, resampled_affine
from litseg.runtime.volume import Volume, lps_to_ras
from tests.factories import SeriesGeometry

IN_PLANE = [
    ((1, 0, 0), (0, 1, 0)),
    ((-1, 0, 0), (0, 1, 0)),
    ((1, 0, 0), (0, -1, 0)),
    ((-1, 0, 0), (0, -1, 0)),
    ((0, 1, 0), (1, 0, 0)),
    ((0, -1, 0), (1, 0, 0)),
    ((0, 1, 0), (-1, 0, 0)),
    ((0, -1, 0), (-1, 0, 0)),
]


def test_volume_derives_spacing_origin_direction_from_the_affine() -> None:
    geo = SeriesGeometry(rows=5, columns=7, slices=3, pixel_spacing_mm=(0.7, 0.6), slice_spacing_mm=2.5)
    vol = Volume(np.zeros((3, 5, 7), np.float32), geo.affine_lps())
    assert vol.spacing_mm == pytest.approx((0.6, 0.7, 2.5))
    assert vol.voxel_volume_ml == pytest.approx(0.6 * 0.7 * 2.5 / 1000)
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(vol.index_to_lps([0, 0, 0]), vol.origin_lps)
    np.testing.assert_allclose(vol.lps_to_index(vol.index_to_lps([3, 2, 1])), [3, 2, 1], atol=1e-9)


def test_volume_is_immutable_and_checks_its_inputs() -> None:
    vol = Volume(np.zeros((2, 3, 4), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="read-only"):
        vol.array[0, 0, 0] = 1
    with pytest.raises(ValueError, match="3-D"):
        Volume(np.zeros((3, 4), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 3, 4), np.float32), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="one per slice"):
        Volume(np.zeros((2, 3, 4), np.float32), np.eye(4), source_sop_uids=("1",))


def test_lps_to_ras_flips_x_and_y_only() -> None:
    affine = np.eye(4)
    affine[:3, 3] = [10.0, 20.0, 30.0]
    ras = lps_to_ras(affine)
    np.testing.assert_allclose(ras[:3, 3], [-10.0, -20.0, 30.0])
    np.testing.assert_allclose(lps_to_ras(ras), affine)


@pytest.mark.parametrize(("row_dir", "col_dir"), IN_PLANE)
@pytest.mark.parametrize("slice_sign", [1.0, -1.0])
def test_canonical_reorientation_keeps_every_voxel_in_place(row_dir, col_dir, slice_sign) -> None:  # type: ignore[no-untyped-def]
    geo = SeriesGeometry(
        rows=6,
        columns=9,
        slices=4,
        row_direction=row_dir,
        column_direction=col_dir,
        pixel_spacing_mm=(1.5, 1.0),
        slice_spacing_mm=2.0 * slice_sign,
        center_lps=(3.0, -7.0, 11.0),
    )
    world = geo.world_grid()
    vol = Volume(world[..., 0].astype(np.float32), geo.affine_lps(), source_sop_uids=tuple("abcd"))
    reo = canonical_reorientation(vol.affine_lps)
    canon = reo.apply(vol)
    # canonical: columns +L, rows +P, slices +S
    assert np.all(np.diag(canon.direction) > 0.99)
    # each voxel's value (its own world x) sits at the same world position after reorientation
    k, j, i = np.meshgrid(*(np.arange(n) for n in canon.shape_zyx), indexing="ij")
    xyz = canon.index_to_lps(np.stack([i, j, k], -1))
    np.testing.assert_allclose(canon.array, xyz[..., 0], atol=1e-4)
    # slice UIDs travel with their slices
    z_of_uid = {uid: canon.index_to_lps([0, 0, n])[2] for n, uid in enumerate(canon.source_sop_uids)}
    z_orig = {uid: vol.index_to_lps([0, 0, n])[2] for n, uid in enumerate(vol.source_sop_uids)}
    assert z_of_uid == pytest.approx(z_orig)
    back = reo.inverse().apply(canon)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine_lps, vol.affine_lps, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
)
def test_reorientation_inverse_is_identity(flags: tuple[bool, bool, bool, bool], shape: tuple[int, int, int]) -> None:
    array = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    reo = Reorientation(*flags)
    np.testing.assert_array_equal(reo.inverse().apply_array(reo.apply_array(array)), array)


def test_flipping_twice_is_identity() -> None:
    array = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    for flags in itertools.product([False, True], repeat=3):
        reo = Reorientation(False, *flags)
        np.testing.assert_array_equal(reo.apply_array(reo.apply_array(array)), array)


@pytest.mark.parametrize(
    ("row_dir", "col_dir", "plane"),
    [((0, 1, 0), (0, 0, -1), "sagittal"), ((1, 0, 0), (0, 0, -1), "coronal")],
)
def test_non_axial_series_is_refused_with_the_reason(row_dir, col_dir, plane) -> None:  # type: ignore[no-untyped-def]
    geo = SeriesGeometry(row_direction=row_dir, column_direction=col_dir)
    with pytest.raises(InputError, match="not axial") as info:
        canonical_reorientation(geo.affine_lps())
    assert "90 degrees" in str(info.value), plane


def test_resampled_affine_keeps_the_field_of_view() -> None:
    geo = SeriesGeometry(rows=512, columns=400, slices=2, pixel_spacing_mm=(0.8, 0.9))
    affine = geo.affine_lps()
    new = resampled_affine(affine, (512, 400), (256, 256))
    # outer pixel edges (index -0.5 and n-0.5) map to the same world points before and after
    for old_idx, new_idx in (([-0.5, -0.5, 0], [-0.5, -0.5, 0]), ([399.5, 511.5, 1], [255.5, 255.5, 1])):
        np.testing.assert_allclose(new[:3, :3] @ new_idx + new[:3, 3], affine[:3, :3] @ old_idx + affine[:3, 3])


@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 4, 6), (40, 33, 17)])
def test_nifti_gz_holds_exactly_what_nibabel_writes(tmp_path, shape: tuple[int, int, int]) -> None:  # type: ignore[no-untyped-def]
    """write_nifti compresses in its own large zlib calls: the file inflates to nibabel's own .nii, bytes
    and all (header, affine, data order), and reads back to the same volume."""
    import gzip

    from litseg.runtime.nifti import read_nifti, write_nifti

    rng = np.random.default_rng(7)
    affine = np.array([[-0.7, 0, 0, 10.0], [0, 0.8, 0, -20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    volume = Volume(rng.integers(0, 3, size=shape, dtype=np.uint8), affine)
    write_nifti(volume, tmp_path / "labels.nii.gz")
    write_nifti(volume, tmp_path / "labels.nii")  # nibabel's own writer
    assert gzip.decompress((tmp_path / "labels.nii.gz").read_bytes()) == (tmp_path / "labels.nii").read_bytes()
    back = read_nifti(tmp_path / "labels.nii.gz")
    assert np.array_equal(back.array, volume.array) and np.allclose(back.affine_lps, affine)
