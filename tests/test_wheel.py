"""The runtime as a user installs it: build the sdist and the wheel from this tree (``python -m build``), install
the wheel into a fresh virtual environment without the ``train`` and ``dev`` extras, and segment a synthetic
DICOM series with ``litseg-run`` and the bundled model, from outside the source tree.

This proves what an editable install hides: the bundled models are package data of the wheel, the console
scripts resolve, and the runtime needs no torch (nor h5py). pip resolves the runtime's dependencies with its own
configuration (the wheels cached on a development machine serve offline). The slowest test, most of
it installing onnxruntime and numba into the new environment: run it alone with ``make test-wheel``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from litseg.runtime.errors import EXIT_MISSING_EXTRA
from tests.factories import SeriesGeometry, make_series, write_series

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.wheel


def _run(command: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done.stdout + done.stderr


@pytest.fixture
def venv(tmp_path: Path) -> Iterator[Path]:
    """An empty virtual environment, removed afterwards: a runtime install takes about 0.9 GB, and pytest keeps
    the temporary folders of the last three runs."""
    folder = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(folder)], cwd=tmp_path, timeout=120)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_wheel_installs_and_segments_without_training_extras(tmp_path: Path, venv: Path) -> None:
    dist = tmp_path / "dist"
    log = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], cwd=tmp_path, timeout=600)
    assert "absent from the `packages` configuration" not in log, "a folder of the package is not declared"
    (wheel,) = dist.glob("litseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"litseg/runtime/models/liver-tumor.onnx", "litseg/runtime/models/liver.onnx"} <= set(names)
    assert "litseg/runtime/py.typed" in names

    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(REPO / "constraints.txt"), str(wheel)],
        cwd=tmp_path,
        timeout=600,
    )

    write_series(
        make_series(SeriesGeometry(rows=96, columns=96, slices=8, pixel_spacing_mm=(3.0, 3.0))), tmp_path / "ct"
    )
    # A clean environment: nothing of this tree (or of the test venv) on the path, a numba cache of its own.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": os.environ.get("LANG", "C.UTF-8")}
    out = tmp_path / "result"
    printed = _run(
        [str(venv / "bin" / "litseg-run"), "ct", "--out", str(out), "--json", "--formats", "seg,nifti,json,overlay"],
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    report = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
    assert report["litseg_version"] == metadata.version("litseg")  # this tree's version (its editable install)
    assert report["model"]["name"] == "litseg-liver-tumor"
    assert report["slices"] == 8 and report["liver_volume_ml"] > 0  # the bundled model found the liver
    for name in ("segmentation.dcm", "labels.nii.gz", "report.json", "overlay.png"):
        assert (out / name).stat().st_size > 0, name

    where = _run(
        [
            str(python),
            "-c",
            "import importlib.util as u, litseg.runtime as r; "
            "print(r.__file__); print([m for m in ('torch', 'h5py') if u.find_spec(m)])",
        ],
        cwd=tmp_path,
        timeout=120,
        env=env,
    ).splitlines()
    assert Path(where[0]).is_relative_to(venv), f"litseg.runtime imported from {where[0]}, not the wheel"
    assert where[1] == "[]", f"a runtime-only install pulled in {where[1]}"

    # The training tools are installed as commands but say which extra they need instead of a traceback.
    trainer = subprocess.run(
        [str(venv / "bin" / "litseg-train"), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert trainer.returncode == EXIT_MISSING_EXTRA, trainer.stdout + trainer.stderr
    assert "train" in trainer.stderr and "Traceback" not in trainer.stderr
