"""The runtime where integrators put it: several threads on one Model (every numba threading layer), and a
read-only install with no writable home (a locked-down container). Both run in fresh processes."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.factories import SeriesGeometry, make_series, write_series

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime"

THREADS_SCRIPT = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    import numba
    import numpy as np
    from litseg.runtime import Model, RunConfig, segment
    series, model_path = sys.argv[1], sys.argv[2]
    model = Model(model_path, device="cpu")
    config = RunConfig(model=model_path)
    single = segment(series, config, model=model).labels.array
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: segment(series, config, model=model).labels.array, range(8)))
    assert all(np.array_equal(r, single) for r in results), "threads disagree with one thread"
    assert single.any(), "nothing segmented: the comparison would be empty"
    print("layer", numba.config.THREADING_LAYER, "ok", int(single.sum()))
    """
)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # large enough that every kernel splits its slices over threads (kernels.MIN_PARALLEL_VOXELS)
    folder = tmp_path_factory.mktemp("series")
    geo = SeriesGeometry(rows=128, columns=128, slices=24, pixel_spacing_mm=(2.0, 2.0), slice_spacing_mm=3.0)
    write_series(make_series(geo), folder)
    return folder


@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_one_model_serves_four_threads_with_identical_results(layer: str, series: Path, tumor_model: Path) -> None:
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer, "LITSEG_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, str(series), str(tumor_model)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " ok " in proc.stdout


def test_read_only_install_without_a_writable_home_still_runs(tmp_path: Path, series: Path, tumor_model: Path) -> None:
    """The package folder and HOME mounted read-only (a private mount namespace), no NUMBA_CACHE_DIR:
    numba has nowhere to cache, and litseg must compile in memory instead of failing at import."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux unshare to mount the package read-only (CI runs as root)")
    home = tmp_path / "home"
    home.mkdir()
    script = (
        f"mount --bind {RUNTIME_DIR} {RUNTIME_DIR} && mount -o remount,bind,ro {RUNTIME_DIR} && "
        f"mount --bind {home} {home} && mount -o remount,bind,ro {home} && "
        f"! touch {RUNTIME_DIR}/.probe 2>/dev/null && "
        f"{sys.executable} -m litseg.runtime.cli {series} --model {tumor_model} --out {tmp_path / 'out'} --quiet"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    if proc.returncode != 0 and "unshare failed" in proc.stderr:
        pytest.skip(f"mount namespaces are not allowed here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "segmentation.dcm").is_file()


def test_after_warmup_a_run_compiles_nothing(tmp_path: Path, series: Path) -> None:
    """``litseg-run --warmup`` (a container image's build step) compiles every kernel signature a run uses,
    read-only arrays included (numba compiles per writability): the run after it adds nothing to the cache."""
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    cli = [sys.executable, "-m", "litseg.runtime.cli"]
    warm = subprocess.run([*cli, "--warmup"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert warm.returncode == 0, warm.stderr[-3000:]
    compiled = sorted(p.name for p in cache.rglob("*.nbc"))
    assert compiled
    proc = subprocess.run(
        [*cli, str(series), "--out", str(tmp_path / "out"), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in cache.rglob("*.nbc")) == compiled


def test_the_command_runs_main_in_a_process_of_its_own(tmp_path: Path, series: Path) -> None:
    """``litseg-run`` is ``cli.entry`` (main, then ``os._exit`` for a fast exit) behind the launcher that turns
    Ctrl-C into one line: its exit codes and messages are main's, its stdout is flushed whole, and a run's
    outputs are complete when the process ends."""
    from importlib.metadata import entry_points

    from litseg.runtime import launch

    (script,) = entry_points(group="console_scripts", name="litseg-run")
    assert script.value == "litseg.runtime.launch:litseg_run"
    assert "litseg.runtime.cli" in inspect.getsource(launch.litseg_run)
    cli = [sys.executable, "-m", "litseg.runtime.cli"]
    missing = subprocess.run([*cli, str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 3 and "litseg-run: error:" in missing.stderr, missing.stderr[-2000:]
    out = tmp_path / "out"
    proc = subprocess.run([*cli, str(series), "--out", str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["outputs"]["json"] == str(out / "report.json")  # stdout flushed whole
    assert json.loads((out / "report.json").read_text())["litseg_version"]


def test_background_compilation_is_waited_for_at_exit() -> None:
    """The thread that compiles the later kernels is not a daemon: the interpreter joins it before it tears
    down numba and llvmlite. As a daemon it kept calling into LLVM while a fast exit freed LLVM's objects
    (cold runs that found no liver ended while it compiled: 4 crashes in 18, none in 32 after the change)."""
    from litseg.runtime import kernels

    thread = kernels.warm_in_background()
    assert not thread.daemon
    thread.join(timeout=600)
