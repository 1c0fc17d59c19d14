"""Reading a 64-slice 512x512 CT series, uncompressed (from the page cache and from disk) and JPEG-LS: litseg's
reader vs a bare pydicom loop (no checks, pydicom's default decoders)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from litseg.runtime.series import read_series
from tests.factories import SeriesGeometry, evict_from_page_cache, make_series, write_series

GEO = SeriesGeometry(rows=512, columns=512, slices=64, pixel_spacing_mm=(0.7, 0.7), slice_spacing_mm=2.0)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench_series")
    hu = np.random.default_rng(0).normal(40, 200, (GEO.slices, GEO.rows, GEO.columns))
    write_series(make_series(GEO, hu=hu), folder)
    return folder


def _bare_pydicom(folder: Path) -> np.ndarray:
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack(
        [d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets]
    )


@pytest.mark.benchmark(group="read 64x512x512 series")
def test_bench_read_series(benchmark, series_dir: Path) -> None:  # type: ignore[no-untyped-def]
    series = benchmark(read_series, series_dir)
    assert series.volume.shape_zyx == (64, 512, 512)


@pytest.mark.benchmark(group="read 64x512x512 series")
def test_bench_read_bare_pydicom_baseline(benchmark, series_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert benchmark(_bare_pydicom, series_dir).shape == (64, 512, 512)


# ----- the same series from a cold page cache (after a reboot, evicted, or on a share first mounted) --------
COLD_GROUP = "read 64x512x512 series, cold page cache"


def _evict(folder: Path) -> None:
    """The folder's files out of the page cache (on tmpfs they stay: then both sides read warm)."""
    evict_from_page_cache(folder.iterdir())


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs posix_fadvise to evict the page cache")
@pytest.mark.benchmark(group=COLD_GROUP)
def test_bench_read_cold_series(benchmark, series_dir: Path) -> None:  # type: ignore[no-untyped-def]
    series = benchmark.pedantic(read_series, args=(series_dir,), setup=lambda: _evict(series_dir), rounds=8)
    assert series.volume.shape_zyx == (64, 512, 512)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs posix_fadvise to evict the page cache")
@pytest.mark.benchmark(group=COLD_GROUP)
def test_bench_read_cold_bare_pydicom_baseline(benchmark, series_dir: Path) -> None:  # type: ignore[no-untyped-def]
    volume = benchmark.pedantic(_bare_pydicom, args=(series_dir,), setup=lambda: _evict(series_dir), rounds=8)
    assert volume.shape == (64, 512, 512)


# ----- a compressed series: JPEG-LS lossless, as PACS archives hold many (the reader asks imagecodecs first) --
JPEG_LS_GROUP = "read 64x512x512 JPEG-LS series"


@pytest.fixture(scope="module")
def jpegls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dcmcjpls") is None:
        pytest.skip("needs Debian dcmtk (dcmcjpls) to encode the series")
    plain = tmp_path_factory.mktemp("bench_plain")
    write_series(make_series(GEO), plain)  # the phantom's anatomy: compresses as CT does
    folder = tmp_path_factory.mktemp("bench_jpegls")
    for path in sorted(plain.iterdir()):
        subprocess.run(["dcmcjpls", str(path), str(folder / path.name)], check=True, capture_output=True)
    return folder


@pytest.mark.benchmark(group=JPEG_LS_GROUP)
def test_bench_read_jpegls_series(benchmark, jpegls_dir: Path) -> None:  # type: ignore[no-untyped-def]
    series = benchmark(read_series, jpegls_dir)
    assert series.volume.shape_zyx == (64, 512, 512)


@pytest.mark.benchmark(group=JPEG_LS_GROUP)
def test_bench_read_jpegls_bare_pydicom_baseline(benchmark, jpegls_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert benchmark(_bare_pydicom, jpegls_dir).shape == (64, 512, 512)
