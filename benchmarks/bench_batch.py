"""litseg-batch against a plain loop, on the same fixed series in the same run: series per minute with one
worker (2 threads) and two workers (1 thread each) on a local Ray, Ray's fixed start-up and its overhead per
series, and the peak memory of each worker.

- ``loop``: :mod:`benchmarks.batch_loop`, one process, one model, ``segment()`` + ``write_results()`` per
  series (the shell-script user's best case, without even a process per series);
- ``batch 1x2`` / ``batch 2x1``: the ``litseg-batch`` CLI on a manifest of the same series, starting its own
  local Ray (``--workers 1 --threads-per-worker 2`` and ``--workers 2``).

Every command runs as a child process timed from launch to exit (:mod:`benchmarks.child_process`). From the
batch's ``summary.json`` and ledger: ``startup_s`` (Ray and the workers' models up, before the first series),
the steady seconds per series after it, and each worker's peak RSS (``peak_rss_mb``, from the worker itself).
Ray's overhead per series is the batch's steady seconds per series minus the worker's own seconds; the
dispatch alone is measured on a manifest of inputs that do not exist (each refused at once by its worker:
the Ray round trip, the ledger append with its fsync, the status file).

``make bench``: 6 series of 512x512x100, 500 missing inputs. The test run (``--benchmark-disable``): 2 series
of 512x512x8, 20 missing inputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.child_process import ChildRun, run_measured
from benchmarks.series_cache import REPO, cached_series
from litseg.runtime import default_model_path


def _require_ray() -> None:
    """A failure, not a skip: ``make install`` puts Ray in (the 'batch' extra), so its absence is a broken
    install."""
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.fail("Ray is not installed: bench_batch needs the 'batch' extra (make install puts it in)")


VARIANTS = {"batch 1x2": ("--workers", "1", "--threads-per-worker", "2"), "batch 2x1": ("--workers", "2")}


def _full(config: pytest.Config) -> bool:
    return bool(not config.getoption("benchmark_disable") or config.getoption("benchmark_enable"))


@pytest.fixture(scope="module")
def archive(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The same cached series behind several folder names (links): distinct inputs, identical work."""
    _require_ray()
    full = _full(request.config)
    series = cached_series(100 if full else 8)
    root = tmp_path_factory.mktemp("batch-archive")
    folders = []
    for n in range(6 if full else 2):
        (root / f"s{n}").symlink_to(series.folder, target_is_directory=True)
        folders.append(root / f"s{n}")
    (root / "manifest.csv").write_text("path,id\n" + "".join(f"{f},s{n}\n" for n, f in enumerate(folders)))
    return folders


def _batch_command() -> list[str]:
    script = Path(sys.executable).parent / "litseg-batch"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "litseg.runtime.batch.cli"]


def _measure(benchmark, command: list[str]) -> ChildRun:  # type: ignore[no-untyped-def]
    run: ChildRun = benchmark.pedantic(run_measured, args=(command,), kwargs={"cwd": REPO}, rounds=1, iterations=1)
    assert run.returncode == 0, f"{' '.join(run.command)} exited {run.returncode}: {run.stderr[-3000:]}"
    return run


def test_bench_batch_loop_baseline(benchmark, archive: list[Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"batch {len(archive)} series"
    command = [sys.executable, "-m", "benchmarks.batch_loop", str(tmp_path / "out"), str(default_model_path())]
    run = _measure(benchmark, [*command, *map(str, archive)])
    report = json.loads(run.stdout)
    assert report["series"] == len(archive)
    assert all((tmp_path / "out" / f"s{n}" / "segmentation.dcm").is_file() for n in range(len(archive)))
    benchmark.extra_info.update(
        {
            "variant": "loop",
            "series": len(archive),
            "wall_s": round(run.wall_s, 3),
            "series_per_min": round(len(archive) / run.wall_s * 60, 2),
            "startup_s": round(report["load_s"], 3),
            "steady_s_per_series": round(report["loop_s"] / len(archive), 3),
            "peak_rss_mb": round(run.peak_rss_bytes / 2**20, 1),
        }
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bench_batch_litseg_batch(benchmark, archive: list[Path], variant: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"batch {len(archive)} series"
    command = _batch_command()
    out = tmp_path / "out"
    manifest = archive[0].parent / "manifest.csv"
    run = _measure(
        benchmark, [*command, str(manifest), "--out", str(out), "--device", "cpu", "--quiet", *VARIANTS[variant]]
    )
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    assert summary["done"] == len(archive) and len(records) == len(archive)
    workers: dict[int, float] = {}
    for record in records:
        pid = record["worker"]["pid"]
        workers[pid] = max(workers.get(pid, 0.0), record["worker"]["peak_rss_mb"])
    steady = (summary["seconds"] - summary["startup_s"]) / len(archive)
    benchmark.extra_info.update(
        {
            "variant": variant,
            "series": len(archive),
            "wall_s": round(run.wall_s, 3),
            "series_per_min": round(len(archive) / run.wall_s * 60, 2),
            "startup_s": summary["startup_s"],
            "steady_s_per_series": round(steady, 3),
            "worker_s_per_series": round(sum(r["seconds"] for r in records) / len(records), 3),
            "worker_peak_rss_mb": sorted(workers.values()),
            "tree_peak_rss_mb": round(run.tree_peak_rss_bytes / 2**20, 1),
        }
    )


def test_bench_batch_dispatch_overhead(benchmark, request: pytest.FixtureRequest, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _require_ray()
    count = 500 if _full(request.config) else 20
    benchmark.group = "batch dispatch"
    manifest = tmp_path / "missing.csv"
    manifest.write_text("path,id\n" + "".join(f"{tmp_path / 'nowhere' / str(n)},m{n}\n" for n in range(count)))
    command = _batch_command()
    out = tmp_path / "out"
    run = _measure(
        benchmark, [*command, str(manifest), "--out", str(out), "--device", "cpu", "--quiet", "--workers", "2"]
    )
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["refused"] == {"InputError": count}
    benchmark.extra_info.update(
        {
            "variant": "dispatch",
            "series": count,
            "wall_s": round(run.wall_s, 3),
            "startup_s": summary["startup_s"],
            "steady_s_per_series": round((summary["seconds"] - summary["startup_s"]) / count, 4),
        }
    )
