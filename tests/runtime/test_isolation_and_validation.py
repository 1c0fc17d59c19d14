"""The runtime stays lean (no torch, no h5py) and its DICOM output passes the standard's validator."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from litseg.runtime import RunConfig, segment, write_results
from tests.factories import SeriesGeometry, make_series, write_series

HIDE_AND_RUN = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "h5py", "scipy"}:
                raise ImportError(f"{name} is hidden for this test")
    sys.meta_path.insert(0, Block())
    from litseg.runtime.cli import main
    code = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "h5py", "scipy"})
    print("LEAKED", leaked)
    sys.exit(code)
    """
)


def test_runtime_runs_end_to_end_with_torch_hidden(tmp_path: Path, tumor_model: Path) -> None:
    write_series(make_series(SeriesGeometry(rows=32, columns=32, slices=4)), tmp_path / "in")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            HIDE_AND_RUN,
            str(tmp_path / "in"),
            "--model",
            str(tumor_model),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "LEAKED []" in proc.stdout
    assert (tmp_path / "out" / "segmentation.dcm").is_file()


@pytest.fixture(scope="module")
def dciodvfy() -> str:
    path = shutil.which("dciodvfy")
    if path is None:
        pytest.fail("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
    return path


def test_seg_passes_dciodvfy(tmp_path: Path, tumor_model: Path, dciodvfy: str) -> None:
    datasets = make_series(SeriesGeometry(rows=48, columns=48, slices=6, row_direction=(-1, 0, 0)))
    result = segment(datasets, RunConfig(model=tumor_model))
    paths = write_results(result, tmp_path / "out", formats=("seg",))
    proc = subprocess.run([dciodvfy, str(paths["seg"])], capture_output=True, text=True, timeout=120, check=False)
    report = proc.stdout + proc.stderr
    assert "Segmentation" in report
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report
