"""End to end on fixed synthetic 512x512 series: ``litseg-run`` (default settings, and ``--no-tta``) against
the naive script (:mod:`benchmarks.naive_pipeline`) with the same default model, in the same run.

Each variant runs as its own process, timed from launch to exit (start-up included), with its peak memory
(see :mod:`benchmarks.child_process`) and litseg's per-stage ``timings_s`` from its JSON report. The series'
int16 bytes and the model's size go along, so the memory target (peak RSS <= 3x int16 bytes + model) can be
checked; ``python -m benchmarks.report build/benchmarks.json`` prints the ratios.

``make bench``: 512x512x100 and 512x512x432 (generated once into ``build/bench-data/``). The test run
(``--benchmark-disable``): 512x512x8, each variant once. ``LITSEG_BENCH_SLICES`` overrides the sizes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.child_process import ChildRun, run_measured
from benchmarks.series_cache import REPO, BenchSeries, cached_series, slice_counts
from litseg.runtime import default_model_path

VARIANTS = {
    "litseg": (),
    "litseg --no-tta": ("--no-tta",),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "slices" in metafunc.fixturenames:
        config = metafunc.config
        full = not config.getoption("benchmark_disable") or config.getoption("benchmark_enable")
        metafunc.parametrize("slices", slice_counts(bool(full)), scope="module")


@pytest.fixture(scope="module")
def series(slices: int) -> BenchSeries:
    return cached_series(slices)


@pytest.fixture(scope="session")
def litseg_run() -> list[str]:
    """The ``litseg-run`` command, with the numba kernels compiled into the cache once beforehand (the
    benchmark times warm runs; cold start is bench_first_run's subject)."""
    script = Path(sys.executable).parent / "litseg-run"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "litseg.runtime.cli"]
    warm = run_measured([*command, "--warmup", "--quiet"])
    assert warm.returncode == 0, warm.stderr[-2000:]
    return command


def _json_report(run: ChildRun) -> dict[str, Any]:
    assert run.returncode == 0, f"{' '.join(run.command)} exited {run.returncode}: {run.stderr[-3000:]}"
    text = run.stdout
    report: dict[str, Any] = json.loads(text[text.index("{") :])
    return report


def _record(benchmark, variant: str, series: BenchSeries, run: ChildRun, report: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    model = default_model_path()
    benchmark.extra_info.update(
        {
            "variant": variant,
            "slices": series.shape_zyx[0],
            "shape_zyx": list(series.shape_zyx),
            "series_int16_bytes": series.int16_bytes,
            "model_bytes": model.stat().st_size,
            "rss_budget_bytes": 3 * series.int16_bytes + model.stat().st_size,
            "wall_s": round(run.wall_s, 4),
            "peak_rss_bytes": run.peak_rss_bytes,
            "tree_peak_rss_bytes": run.tree_peak_rss_bytes,
            "timings_s": report.get("timings_s", {}),
            "provider": report.get("provider", "CPUExecutionProvider"),
            "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(run.command)),
        }
    )


def _measure(benchmark, command: list[str]) -> ChildRun:  # type: ignore[no-untyped-def]
    result: ChildRun = benchmark.pedantic(run_measured, args=(command,), kwargs={"cwd": REPO}, rounds=1, iterations=1)
    return result


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bench_end_to_end_litseg(
    benchmark, litseg_run: list[str], series: BenchSeries, variant: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"end-to-end 512x512x{series.shape_zyx[0]}"
    out = tmp_path / "out"
    run = _measure(
        benchmark, [*litseg_run, str(series.folder), "--out", str(out), "--overwrite", "--json", *VARIANTS[variant]]
    )
    report = _json_report(run)
    _record(benchmark, variant, series, run, report)
    assert report["outputs"] and all(Path(p).exists() for p in report["outputs"].values()), report.get("outputs")
    assert report["timings_s"], "litseg-run's report has no timings_s"


def test_bench_end_to_end_naive_baseline(benchmark, series: BenchSeries, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"end-to-end 512x512x{series.shape_zyx[0]}"
    out = tmp_path / "out"
    command = [sys.executable, "-m", "benchmarks.naive_pipeline", str(series.folder)]
    run = _measure(benchmark, [*command, "--model", str(default_model_path()), "--out", str(out)])
    report = _json_report(run)
    _record(benchmark, "naive", series, run, report)
    assert (out / "labels.nii.gz").is_file()
    assert set(report["timings_s"]) >= {"read", "preprocess", "inference"}
