"""Post-processing of a 512x512x64 label volume: numba components vs scipy baseline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from litseg.runtime import kernels
from litseg.runtime.postprocess import clean_labels

LABELS = np.zeros((64, 512, 512), np.uint8)
LABELS[8:56, 100:330, 60:260] = 1
LABELS[20:30, 150:180, 100:130] = 2
LABELS[40:44, 400:420, 400:430] = 1  # a false-positive island
PROBS = np.random.default_rng(1).random((16, 3, 256, 256)).astype(np.float32)


@pytest.mark.benchmark(group="connected components 64x512x512")
def test_bench_label_numba(benchmark) -> None:  # type: ignore[no-untyped-def]
    organ = benchmark(kernels.find_components, LABELS, (1, 255), 1)
    assert organ.count == 2


@pytest.mark.benchmark(group="connected components 64x512x512")
def test_bench_label_scipy_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    _, count = benchmark(ndimage.label, LABELS > 0)
    assert count == 2


@pytest.mark.benchmark(group="clean labels 64x512x512")
def test_bench_clean_labels(benchmark) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(clean_labels, LABELS)
    assert out[40:44, 400:420, 400:430].max() == 0


@pytest.mark.benchmark(group="probabilities 16x3x256x256 -> labels 512x512")
def test_bench_resample_argmax_numba(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(kernels.resample_argmax, PROBS, (512, 512))


@pytest.mark.benchmark(group="probabilities 16x3x256x256 -> labels 512x512")
def test_bench_resample_then_argmax_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    def baseline() -> np.ndarray:
        up = ndimage.zoom(PROBS, (1, 1, 2, 2), order=1, grid_mode=True, mode="nearest")
        return up.argmax(1).astype(np.uint8)

    benchmark(baseline)


def _grow_scipy(labels: np.ndarray, radius_mm: float, spacing_yx_mm: tuple[float, float]) -> np.ndarray:
    """The reference the kernel was checked against: per-slice Euclidean distance to the tumor."""
    out = labels.copy()
    tumor = labels == 2
    for k in np.nonzero(tumor.any((1, 2)))[0]:
        near = ndimage.distance_transform_edt(~tumor[k], sampling=spacing_yx_mm) <= radius_mm
        out[k][near & (labels[k] == 1)] = 2
    return out


@pytest.mark.benchmark(group="tumor margin 2 mm 64x512x512")
def test_bench_grow_label_numba(benchmark) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(kernels.grow_label, LABELS, 2, 1, 2.0, (0.7, 0.7))
    assert np.array_equal(out, _grow_scipy(LABELS, 2.0, (0.7, 0.7)))


@pytest.mark.benchmark(group="tumor margin 2 mm 64x512x512")
def test_bench_grow_scipy_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(_grow_scipy, LABELS, 2.0, (0.7, 0.7))
