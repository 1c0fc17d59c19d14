from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from litseg.runtime import kernels


def _pil_resize(array: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    return np.stack(
        [
            np.asarray(Image.fromarray(s.astype(np.float32), mode="F").resize(shape_yx[::-1], Image.BILINEAR))
            for s in array
        ]
    )


@pytest.mark.parametrize(
    ("shape_in", "shape_out"),
    [((512, 512), (256, 256)), ((300, 417), (256, 256)), ((77, 64), (256, 256)), ((50, 60), (50, 60))],
)
def test_resample_matches_pil_antialiased_bilinear(shape_in, shape_out) -> None:  # type: ignore[no-untyped-def]
    array = np.random.default_rng(1).normal(0, 100, (2, *shape_in)).astype(np.float32)
    out = kernels.resample_slices(array, shape_out)
    assert out.shape == (2, *shape_out)
    np.testing.assert_allclose(out, _pil_resize(array, shape_out), atol=1e-3)


def test_resample_up_matches_scipy_zoom_with_grid_mode() -> None:
    array = np.random.default_rng(2).normal(size=(3, 40, 30)).astype(np.float32)
    out = kernels.resample_slices(array, (100, 90))
    ref = ndimage.zoom(array, (1, 100 / 40, 90 / 30), order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_resample_accepts_int16_and_uint8_as_float() -> None:
    array = np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8)
    np.testing.assert_allclose(
        kernels.resample_slices(array, (4, 4)), kernels.resample_slices(array.astype(np.float32), (4, 4))
    )


def test_resample_argmax_equals_resampling_each_class_then_argmax() -> None:
    rng = np.random.default_rng(3)
    probs = rng.random((4, 3, 64, 64)).astype(np.float32)
    out = kernels.resample_argmax(probs, (150, 170))
    ref = np.stack([np.argmax(kernels.resample_slices(p, (150, 170)), axis=0) for p in probs]).astype(np.uint8)
    assert out.dtype == np.uint8
    assert (out == ref).mean() > 0.9999  # float summation order may break exact ties


def test_window_matches_numpy() -> None:
    hu = np.random.default_rng(4).uniform(-1500, 2000, (3, 16, 16)).astype(np.float32)
    ref = (np.clip(hu, -200, 300) + 200) / 500
    np.testing.assert_allclose(kernels.window(hu, (-200, 300)), ref, atol=1e-6)
    with pytest.raises(ValueError, match="hi > lo"):
        kernels.window(hu, (300, -200))


@settings(max_examples=25, deadline=None)
@given(st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_reorient_matches_numpy_views(transpose: bool, fz: bool, fy: bool, fx: bool) -> None:
    array = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    ref = np.swapaxes(array, 1, 2) if transpose else array
    ref = ref[:: -1 if fz else 1, :: -1 if fy else 1, :: -1 if fx else 1]
    np.testing.assert_array_equal(kernels.reorient(array, transpose, fz, fy, fx), ref)


def test_wrappers_reject_wrong_dtype_shape_and_layout() -> None:
    with pytest.raises(TypeError, match="dtype"):
        kernels.resample_slices(np.zeros((2, 4, 4), np.float64), (2, 2))
    with pytest.raises(ValueError, match="3-D"):
        kernels.resample_slices(np.zeros((4, 4), np.float32), (2, 2))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.resample_slices(np.zeros((2, 4, 4), np.float32)[:, :, ::2], (2, 2))
    with pytest.raises(TypeError, match="uint8"):
        kernels.find_components(np.zeros((2, 2, 2), np.int32), (1, 2), 1)
    with pytest.raises(ValueError, match="sizes"):
        kernels.resample_weights(0, 4)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize(
    "flips",
    [
        (False, False, False, False),
        (True, True, False, True),
        (False, True, True, False),
        (False, False, True, True),
        (False, True, False, True),  # mirrored, not upside down: the 2:1 rows' streamed path with flip_x
    ],
)
@pytest.mark.parametrize("grid", ["up", "half", "odd"])  # enlarge; exactly 2:1 (its own vectorised path); 5:3
def test_fused_preprocessing_equals_the_separate_steps_bit_for_bit(
    dtype: type, flips: tuple[bool, bool, bool, bool], grid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # several threads over uneven chunks, and a partial z range: each chunk must land in its own slices
    monkeypatch.setenv("LITSEG_THREADS", "3")
    monkeypatch.setattr(kernels.threads, "MIN_PARALLEL_VOXELS", 1)
    native = np.random.default_rng(3).normal(-100, 500, (7, 48, 40)).astype(dtype)  # some below -1024
    canonical = (40, 48) if flips[0] else (48, 40)
    shape = {"up": (64, 56), "half": (canonical[0] // 2, canonical[1] // 2), "odd": (30, 24)}[grid]
    separate = kernels.window(
        kernels.resample_slices(
            np.maximum(kernels.reorient(native, *flips).astype(np.float32), np.float32(-1024)), shape
        ),
        (-200.0, 300.0),
    )
    fused = kernels.preprocess_slices(native, flips, shape, (-200.0, 300.0), -1024.0)
    np.testing.assert_array_equal(fused, separate)
    part = kernels.preprocess_slices(native, flips, shape, (-200.0, 300.0), -1024.0, z_range=(2, 6))
    np.testing.assert_array_equal(part, separate[2:6])


@pytest.mark.parametrize("shape_in", [(64, 48), (64, 47), (3, 2)])
def test_exact_half_resampling_equals_the_general_taps(shape_in: tuple[int, int]) -> None:
    # the 2:1 path against a direct evaluation of the sparse weights (float64, so only float32 rounding differs)
    array = np.random.default_rng(8).normal(0, 300, (2, *shape_in)).astype(np.float32)
    shape_out = (shape_in[0] // 2, max(shape_in[1] // 2, 1))
    ys, yw = kernels.resample_weights(shape_in[0], shape_out[0])
    xs, xw = kernels.resample_weights(shape_in[1], shape_out[1])

    def dense(starts: np.ndarray, weights: np.ndarray, n_in: int) -> np.ndarray:
        matrix = np.zeros((len(starts), n_in))
        for o, (s, w) in enumerate(zip(starts, weights, strict=True)):
            taps = [t for t in range(len(w)) if s + t < n_in]
            matrix[o, [s + t for t in taps]] = w[taps]
        return matrix

    ref = dense(ys, yw, shape_in[0]) @ array.astype(np.float64) @ dense(xs, xw, shape_in[1]).T
    np.testing.assert_allclose(kernels.resample_slices(array, shape_out), ref, rtol=1e-5, atol=1e-3)


def test_resample_argmax_in_a_region_equals_the_full_result_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels.threads, "MIN_PARALLEL_VOXELS", 1)
    probs = np.random.default_rng(4).random((5, 3, 16, 16)).astype(np.float32)
    full = kernels.resample_argmax(probs, (40, 50))
    out = np.full((5, 40, 50), 9, np.uint8)
    kernels.resample_argmax(probs, (40, 50), out=out, region_yx=(5, 30, 10, 45))
    np.testing.assert_array_equal(out[:, 5:30, 10:45], full[:, 5:30, 10:45])
    assert (out[:, :5] == 9).all() and (out[:, :, :10] == 9).all()  # outside the region: untouched


def test_find_and_relabel_components_match_scipy_on_a_view() -> None:
    # the post-processing's two-slice scan against scipy's whole-volume labelling, on a bounding-box view
    rng = np.random.default_rng(6)
    volume = np.zeros((12, 40, 50), np.uint8)
    volume[1:11, 3:37, 4:46] = rng.choice([0, 1, 2], size=(10, 34, 42), p=[0.4, 0.4, 0.2])
    view = volume[1:11, 3:37, 4:46]
    assert not view.flags.c_contiguous
    ref, ref_count = ndimage.label(view > 0)
    organ = kernels.find_components(view, (1, 255), 1)
    assert organ.count == ref_count > 50
    np.testing.assert_array_equal(organ.sizes[1:], np.bincount(ref.ravel(), minlength=ref_count + 1)[1:])
    np.testing.assert_array_equal(organ.hits[1:], np.bincount(ref[view == 1], minlength=ref_count + 1)[1:])
    new_values = np.full(ref_count + 1, 255, np.uint8)
    new_values[1::3] = 0  # drop every third component, keep the others as they are
    expected = np.where(np.isin(ref, np.arange(1, ref_count + 1, 3)), 0, view)
    outside = volume.copy()
    kernels.relabel_components(view, organ, new_values)
    np.testing.assert_array_equal(view, expected)
    outside[1:11, 3:37, 4:46] = expected
    np.testing.assert_array_equal(volume, outside)  # nothing outside the view changed
    with pytest.raises(ValueError, match="new_values"):
        kernels.relabel_components(view, organ, new_values[:-1])


def test_find_components_grows_past_its_first_table() -> None:
    # 10240 isolated voxels: more provisional labels than the scan's first table holds (4096)
    labels = np.zeros((20, 64, 64), np.uint8)
    labels[::2, ::2, ::2] = 2
    tumors = kernels.find_components(labels, (2, 2), 2)
    assert tumors.count == 10240
    assert (tumors.sizes[1:] == 1).all() and (tumors.hits[1:] == 1).all()
    kernels.relabel_components(labels, tumors, np.where(np.arange(10241) % 2 == 1, np.uint8(1), np.uint8(255)))
    assert np.count_nonzero(labels == 1) == 5120 and np.count_nonzero(labels == 2) == 5120


@pytest.mark.parametrize(
    ("stored", "slope", "intercept", "padding"),
    [(np.uint16, 1, -1024, None), (np.uint16, 1, -1024, 0), (np.int16, 2, -1000, -2000), (np.uint8, 10, -1024, None)],
)
def test_rescale_to_hu_matches_numpy(stored: type, slope: int, intercept: int, padding: int | None) -> None:
    info = np.iinfo(stored)
    raw = np.random.default_rng(9).integers(info.min, info.max, (64, 48), endpoint=True).astype(stored)
    if padding is not None:
        raw[:5] = padding
    out = np.empty(raw.shape, np.int16)
    kernels.rescale_to_hu(raw, out, slope, intercept, -1024, padding)
    ref = np.clip(raw.astype(np.int64) * slope + intercept, -1024, 32767)
    if padding is not None:
        ref[raw == padding] = -1024
    np.testing.assert_array_equal(out, ref)
    if raw.itemsize > 1:  # bytes in the file's order (Explicit VR Big Endian) are the caller's to swap
        with pytest.raises(TypeError, match="native-endian"):
            kernels.rescale_to_hu(raw.astype(raw.dtype.newbyteorder(">")), out, slope, intercept, -1024, padding)
