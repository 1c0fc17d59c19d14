"""Preprocessing of a 512x512x64 CT block: numba kernels vs PIL / numpy baselines."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from litseg.runtime import kernels
from litseg.runtime.hu import AIR_HU
from litseg.runtime.preprocess import preprocess
from litseg.runtime.spec import PreprocessSpec
from litseg.runtime.volume import Volume

HU = np.random.default_rng(0).normal(40, 300, (64, 512, 512)).astype(np.float32)


def _pil_resample(array: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(s, mode="F").resize((256, 256), Image.BILINEAR)) for s in array])


@pytest.mark.benchmark(group="resample 64x512x512 -> 256x256")
def test_bench_resample_numba(benchmark) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(kernels.resample_slices, HU, (256, 256))
    assert out.shape == (64, 256, 256)


@pytest.mark.benchmark(group="resample 64x512x512 -> 256x256")
def test_bench_resample_pil_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(_pil_resample, HU)
    assert out.shape == (64, 256, 256)


@pytest.mark.benchmark(group="window 64x512x512")
def test_bench_window_numba(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(kernels.window, HU, (-200.0, 300.0))


@pytest.mark.benchmark(group="window 64x512x512")
def test_bench_window_numpy_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(lambda: (np.clip(HU, -200, 300) + 200) / 500)


@pytest.mark.benchmark(group="preprocess 64x512x512 (mirrored)")
def test_bench_preprocess_full(benchmark) -> None:  # type: ignore[no-untyped-def]
    affine = np.diag([-0.7, 0.7, 1.5, 1.0])
    vol = Volume(HU, affine)
    preprocess(vol, PreprocessSpec())  # loads the kernel first: a first call would cut the rounds to 5
    out = benchmark(preprocess, vol, PreprocessSpec())
    assert out.image.shape_zyx == (64, 256, 256)


# ----- baselines of the whole preprocessing (issue 15): the same input, the same work, the same run ---------
# litseg's preprocess above: padding read as air, reorient (this affine mirrors x), anti-aliased bilinear
# resample to 256x256, window to [0, 1]. Target: numba >= 20x scipy.ndimage.zoom, >= 1.2x OpenCV, and within
# 1.5x of a plain copy of the same bytes (``python -m benchmarks.report``).
PREPROCESS_GROUP = "preprocess 64x512x512 (mirrored)"
SPEC = PreprocessSpec()


def _window(array: np.ndarray) -> np.ndarray:
    lo, hi = SPEC.window_hu
    return (np.clip(array, lo, hi) - np.float32(lo)) * np.float32(1.0 / (hi - lo))


def _opencv_pipeline(hu: np.ndarray, interpolation: int) -> np.ndarray:
    import cv2

    h, w = SPEC.target_shape_yx
    out = np.empty((hu.shape[0], h, w), dtype=np.float32)
    for k, hu_slice in enumerate(hu):
        # resize, then mirror the small result (the filter is symmetric, so the order does not matter)
        out[k] = cv2.resize(np.maximum(hu_slice, np.float32(AIR_HU)), (w, h), interpolation=interpolation)[:, ::-1]
    return _window(out)


def _scipy_zoom_pipeline(hu: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    h, w = SPEC.target_shape_yx
    canonical = np.maximum(hu, np.float32(AIR_HU))[:, :, ::-1]
    zoomed = ndimage.zoom(canonical, (1.0, h / hu.shape[1], w / hu.shape[2]), order=1, prefilter=False)
    return _window(zoomed)


def _agrees_with_litseg(pipeline: Callable[[np.ndarray], np.ndarray]) -> float:
    """Largest difference to litseg's preprocess on a smooth ramp (random HU differ by filter shape alone),
    away from the border; a wrong mirror or window shows as ~1."""
    ramp = np.broadcast_to(np.linspace(-400.0, 500.0, 512, dtype=np.float32), (2, 512, 512)).copy()
    reference = np.asarray(preprocess(Volume(ramp, np.diag([-0.7, 0.7, 1.5, 1.0])), SPEC).image.array)
    return float(np.abs(pipeline(ramp) - reference)[:, 4:-4, 4:-4].max())


@pytest.mark.benchmark(group=PREPROCESS_GROUP)
def test_bench_preprocess_opencv_area_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    import cv2  # opencv-python-headless, dev extra

    out = benchmark(_opencv_pipeline, HU, cv2.INTER_AREA)
    assert out.shape == (64, 256, 256)
    assert _agrees_with_litseg(lambda hu: _opencv_pipeline(hu, cv2.INTER_AREA)) < 1e-3


@pytest.mark.benchmark(group=PREPROCESS_GROUP)
def test_bench_preprocess_opencv_linear_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    import cv2  # opencv-python-headless, dev extra

    out = benchmark(_opencv_pipeline, HU, cv2.INTER_LINEAR)
    assert out.shape == (64, 256, 256)
    assert _agrees_with_litseg(lambda hu: _opencv_pipeline(hu, cv2.INTER_LINEAR)) < 1e-3


@pytest.mark.benchmark(group=PREPROCESS_GROUP)
def test_bench_preprocess_scipy_zoom_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(_scipy_zoom_pipeline, HU)
    assert out.shape == (64, 256, 256)
    assert _agrees_with_litseg(_scipy_zoom_pipeline) < 0.01  # zoom maps corners to corners: a slight stretch


@pytest.mark.benchmark(group=PREPROCESS_GROUP)
def test_bench_preprocess_memcopy_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    destination = np.empty_like(HU)
    np.copyto(destination, HU)  # the destination's pages exist before timing, as the kernel's output's do
    benchmark(np.copyto, destination, HU)
    assert np.array_equal(destination, HU)
