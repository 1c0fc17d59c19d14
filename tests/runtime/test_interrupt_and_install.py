"""litseg-run as a real process: Ctrl-C (SIGINT) at any moment gives one line and exit 130, and a broken or
doubled onnxruntime install gives exit 4 and one line naming the packages to reinstall.

The SIGINT tests run the real console script (start-up) or the real launcher behind a few lines that make one
stage announce itself on stderr and wait, so that the signal lands inside that stage (reading, inference,
writing) every time; the stage itself then runs as usual if no signal came.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from litseg.runtime.errors import EXIT_INTERRUPTED, EXIT_MODEL
from tests.factories import SeriesGeometry, make_series, write_series

SCRIPTS = Path(sys.executable).parent
INTERRUPTED_IN_RUN = "litseg-run: interrupted; nothing was written"
REPO = Path(__file__).resolve().parents[2]

#: ``python -c`` prelude: ``stage`` (api.read_input, Model.predict, api.result_seg) prints a marker and waits.
PAUSE = textwrap.dedent(
    """
    import sys, time
    import litseg.runtime.api as api
    import litseg.runtime.model as model

    def pausing(original, name):
        def wrapper(*args, **kwargs):
            print(f"STAGE {name}", file=sys.stderr, flush=True)
            time.sleep(60)
            return original(*args, **kwargs)
        return wrapper

    stage = sys.argv.pop(1)
    if stage == "read":
        api.read_input = pausing(api.read_input, stage)
    elif stage == "inference":
        model.Model.predict = pausing(model.Model.predict, stage)
    elif stage == "write":
        api.result_seg = pausing(api.result_seg, stage)
    from litseg.runtime.launch import litseg_run
    litseg_run()
    """
)


@pytest.fixture
def series(tmp_path: Path) -> Path:
    folder = tmp_path / "series"
    write_series(make_series(SeriesGeometry(rows=64, columns=64, slices=6)), folder)
    return folder


def _finish(proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("STAGE ")]
    return proc.returncode, lines


def _wait_for_stage(proc: subprocess.Popen[str], stage: str) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith(f"STAGE {stage}"):
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the run never reached {stage}: {proc.communicate()}")


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(series: Path, tmp_path: Path, tumor_model: Path) -> None:
    cmd = [str(SCRIPTS / "litseg-run"), str(series), "--model", str(tumor_model), "--out", str(tmp_path / "out")]
    # while numba, onnxruntime and highdicom are imported (0.7-2 s on 2 cores, warm or cold page cache); on a
    # fast machine the later delay may land in the run itself, which must answer with one line too
    seen = set()
    for delay_s in (0.25, 0.5):
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGINT)
        code, lines = _finish(proc)
        assert code == EXIT_INTERRUPTED, lines
        assert len(lines) == 1 and lines[0] in ("litseg-run: interrupted", INTERRUPTED_IN_RUN), lines
        seen.add(lines[0])
        assert not (tmp_path / "out").exists()
    assert "litseg-run: interrupted" in seen  # the launcher's guard, around the imports, answered at least once


@pytest.mark.parametrize("stage", ["read", "inference", "write"])
def test_ctrl_c_while_reading_inferring_or_writing_is_one_line_and_exit_130(
    stage: str, series: Path, tmp_path: Path, tumor_model: Path
) -> None:
    out = tmp_path / "out"
    args = [str(series), "--model", str(tumor_model), "--out", str(out), "--formats", "seg,nifti,json", "--no-tta"]
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSE, stage, *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    _wait_for_stage(proc, stage)
    proc.send_signal(signal.SIGINT)
    code, lines = _finish(proc)
    assert code == EXIT_INTERRUPTED, lines
    assert lines == [INTERRUPTED_IN_RUN], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # no output, no temporary folder


@pytest.mark.parametrize(
    "init",
    [
        # what `pip uninstall onnxruntime` beside onnxruntime-gpu leaves: a package without its API
        "__version__ = '1.22.0'\n",
        # a native library that does not load (a doubled install mixing the two builds' files)
        "raise ImportError('libonnxruntime_providers_shared.so: cannot open shared object file')\n",
    ],
    ids=["half-removed", "native-library-missing"],
)
def test_a_broken_onnxruntime_is_one_line_and_exit_4(
    init: str, series: Path, tmp_path: Path, tumor_model: Path
) -> None:
    fake = tmp_path / "site"
    (fake / "onnxruntime").mkdir(parents=True)
    (fake / "onnxruntime" / "__init__.py").write_text(init)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}
    cmd = [str(SCRIPTS / "litseg-run"), str(series), "--model", str(tumor_model), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == EXIT_MODEL, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("litseg-run: error: onnxruntime is installed but broken")
    assert "pip uninstall -y" in lines[0] and "pip install --force-reinstall onnxruntime" in lines[0]
    assert not (tmp_path / "out").exists()
    # the node says the same at start
    node = [str(SCRIPTS / "litseg-serve"), "--spool", str(tmp_path / "spool"), "--out", str(tmp_path / "o")]
    proc = subprocess.run([*node, "--port", "0"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == EXIT_MODEL and "onnxruntime is installed but broken" in proc.stderr, proc.stderr
