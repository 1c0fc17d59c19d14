"""Plausibility of a result (:func:`litseg.runtime.plausibility.assess`) on a 512x512 series of 432 slices,
against one pass over both volumes (counting the liver voxels and the body voxels at full resolution), the
least any check of the whole series costs. The test run (``--benchmark-disable``) uses 16 slices.

The series is drawn with numpy in a few lines: an elliptic trunk with fat, muscle and a table, lungs in
the upper quarter, a vertebral column, and a 1.6 L liver on the patient's right below the lungs.
"""

from __future__ import annotations

import numpy as np
import pytest

from litseg.runtime.plausibility import assess
from litseg.runtime.volume import Volume


def _series(slices: int) -> tuple[Volume, Volume]:
    pixel, thickness = 0.8, 1.25 if slices > 100 else 30.0
    y, x = (np.mgrid[:512, :512] - 255.5) * pixel
    trunk = (x / 170) ** 2 + (y / 125) ** 2
    plane = np.where(trunk < 1, 45.0, -1000.0) + np.where((trunk < 1) & (trunk > 0.8), -140.0, 0.0)
    plane[(np.abs(y - 140) < 2) & (np.abs(x) < 200)] = 250.0  # table
    plane[((x / 18) ** 2 + ((y - 80) / 16) ** 2) < 1] = 700.0  # vertebra
    hu = np.repeat(plane[None].astype(np.float32), slices, axis=0)
    z = (np.arange(slices) - slices * 0.75) * thickness  # the dome three quarters of the way up
    lungs = (((np.abs(x) - 75) / 60) ** 2 + (y / 90) ** 2) < 1
    hu[z > 0] = np.where(lungs, -850.0, hu[z > 0])
    labels = np.zeros(hu.shape, np.uint8)
    liver = (((x + 70) / 55) ** 2 + ((y + 10) / 55) ** 2 < 1)[None] & ((z > -170) & (z < 0))[:, None, None]
    labels[liver] = 1
    hu[liver] = 100.0
    affine = np.diag([pixel, pixel, thickness, 1.0])
    affine[:3, 3] = (-255.5 * pixel, -255.5 * pixel, z[0])
    return Volume(labels, affine), Volume(hu, affine)


@pytest.fixture(scope="module")
def series(request: pytest.FixtureRequest) -> tuple[Volume, Volume]:
    full = not request.config.getoption("benchmark_disable") or request.config.getoption("benchmark_enable")
    return _series(432 if full else 16)


@pytest.mark.benchmark(group="plausibility 512x512 series")
def test_bench_assess(benchmark, series: tuple[Volume, Volume]) -> None:  # type: ignore[no-untyped-def]
    labels, hu = series
    result = benchmark(assess, labels, hu)
    assert "liver_not_right" not in result.codes and "no_liver" not in result.codes


@pytest.mark.benchmark(group="plausibility 512x512 series")
def test_bench_one_pass_baseline(benchmark, series: tuple[Volume, Volume]) -> None:  # type: ignore[no-untyped-def]
    labels, hu = series

    def one_pass() -> tuple[int, int]:
        return int(np.count_nonzero(labels.array)), int(np.count_nonzero(np.asarray(hu.array) > -300))

    liver, body = benchmark(one_pass)
    assert 0 < liver < body
