"""Preprocessing of a 512x512x64 CT block: numba kernels vs PIL / numpy baselines."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from litseg.runtime import kernels
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
    out = benchmark(preprocess, vol, PreprocessSpec())
    assert out.image.shape_zyx == (64, 256, 256)
