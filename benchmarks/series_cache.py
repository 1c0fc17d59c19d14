"""Fixed synthetic CT series for the benchmarks, written once into ``build/bench-data/`` and reused.

A series is a litseg phantom (abdomen, contrast, 3 tumors, 0.75 mm pixels at 512) of 512x512 pixels and the asked
number of slices, written as one DICOM file per slice (int16 HU, slope 1, intercept 0). The folder name
carries every choice, so a cached series is the same series on every run; a series being written lives in a
hidden temporary folder and is renamed into place when complete, so an interrupted run never leaves a
partial series behind.

Sizes: ``make bench`` (``--benchmark-enable``) uses the issue's 100 and 432 slices; the test run
(``--benchmark-disable``) uses 8 slices so each benchmark runs once, quickly. ``LITSEG_BENCH_SLICES``
(comma-separated, e.g. ``100`` or ``16,100``) overrides both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "build" / "bench-data"
FULL_SLICES = (100, 432)
QUICK_SLICES = (8,)
SLICES_ENV = "LITSEG_BENCH_SLICES"
SEED = 4242
VERSION = 1  # bump when the recipe below changes, so stale caches are not reused
#: slice spacing per series length: the 432-slice series at 1 mm (the LiTS median), the others at 2.5 mm
THIN_FROM_SLICES = 300


@dataclass(frozen=True)
class BenchSeries:
    """A cached series: the folder of its DICOM files (nothing else in it), shape and int16 bytes."""

    folder: Path
    shape_zyx: tuple[int, int, int]

    @property
    def int16_bytes(self) -> int:
        z, y, x = self.shape_zyx
        return z * y * x * 2


def slice_counts(full: bool) -> tuple[int, ...]:
    """Series lengths to benchmark: the issue's sizes when timing, a small one in the test run."""
    raw = os.environ.get(SLICES_ENV, "").strip()
    if raw:
        return tuple(int(v) for v in raw.split(",") if v.strip())
    return FULL_SLICES if full else QUICK_SLICES


def series_name(slices: int, rows: int = 512) -> str:
    return f"phantom-v{VERSION}-seed{SEED}-{rows}x{rows}x{slices}"


def cached_series(slices: int, rows: int = 512, cache: Path = CACHE) -> BenchSeries:
    """The cached series of ``slices`` slices, generated and written on first use."""
    folder = cache / series_name(slices, rows)
    if not (folder / "complete").is_file():
        _generate(slices, rows, folder)
    return BenchSeries(folder / "dicom", (slices, rows, rows))


def _generate(slices: int, rows: int, folder: Path) -> None:
    # Imported here: only a cache miss needs the phantom (litseg.train, scipy); a hit needs nothing.
    from litseg.runtime.dicom_images import SeriesIdentity, ct_datasets, write_datasets
    from litseg.train.phantom.case import PhantomOptions, generate_case

    start = time.perf_counter()
    print(f"[bench-data] generating {folder.name} (once; cached in {folder.parent}) ...", flush=True)
    thickness = 1.0 if slices >= THIN_FROM_SLICES else 2.5
    pixel_mm = 0.75 * 512 / rows  # the same field of view at any matrix size (small ones for dry runs)
    options = PhantomOptions(
        slices=slices, rows=rows, contrast=True, tumors=3, pixel_spacing_mm=pixel_mm, slice_thickness_mm=thickness
    )
    case = generate_case(SEED, options)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        identity = SeriesIdentity.derived(folder.name, description="litseg benchmark phantom CT")
        (tmp / "dicom").mkdir()
        write_datasets(ct_datasets(case.hu, identity), tmp / "dicom")
        (tmp / "complete").write_text(f"{np.asarray(case.hu.array).shape}\n")  # beside the series, not in it
        if folder.exists():  # an older partial copy, or another process won the race: keep one
            shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[bench-data] {folder.name} ready in {time.perf_counter() - start:.1f} s", flush=True)
