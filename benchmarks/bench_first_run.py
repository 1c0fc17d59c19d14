"""The first run after install: ``litseg-run`` in a fresh process with an empty numba cache (cold) against the
same run again (warm, cache filled), on the real 3-slice GE series and on a synthetic 512x512x100 series.

Targets (issue 12): cold <= 5 s on the 3-slice series; cold <= 1.5x warm on 100 slices. The ratios and the
seconds are in ``extra_info`` of the JSON (``make bench``); the test run checks only that both runs work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data
from tests.factories import SeriesGeometry, make_series, phantom_hu, write_series


def _run(series: Path, out: Path, cache: Path) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "litseg.runtime.cli", str(series), "--out", str(out), "--overwrite", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    return seconds


def _cold_and_warm(benchmark, series: Path, tmp_path: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    cache = tmp_path / "numba-cache"  # empty: every kernel compiles
    cold = benchmark.pedantic(_run, args=(series, tmp_path / "out", cache), rounds=1, iterations=1)
    warm = _run(series, tmp_path / "out", cache)
    benchmark.extra_info.update(
        {"cold_s": round(cold, 2), "warm_s": round(warm, 2), "cold_over_warm": round(cold / warm, 2)}
    )
    return {"cold": cold, "warm": warm}


@pytest.mark.benchmark(group="first run (fresh process, empty numba cache)")
def test_bench_first_run_real_3_slices(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    series = shared_data("dcmqi-ct-3slice") / "dicom"
    times = _cold_and_warm(benchmark, series, tmp_path)
    assert times["cold"] > 0 and times["warm"] > 0


@pytest.mark.benchmark(group="first run (fresh process, empty numba cache)")
def test_bench_first_run_100_slices(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    geo = SeriesGeometry(rows=512, columns=512, slices=100, pixel_spacing_mm=(0.75, 0.75), slice_spacing_mm=2.0)
    hu = phantom_hu(geo.world_grid()) + np.random.default_rng(0).normal(0, 10, (100, 512, 512))
    write_series(make_series(geo, hu=hu), tmp_path / "series")
    times = _cold_and_warm(benchmark, tmp_path / "series", tmp_path)
    assert times["cold"] > 0 and times["warm"] > 0
