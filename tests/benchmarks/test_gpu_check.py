"""benchmarks/gpu_check.sh runs end to end here as a CPU dry run, and degrades, saying why, on a machine
without the runtime's DICOM packages (as the GPU machine's image is without carried wheels)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.gpu_check import dice

REPO = Path(__file__).resolve().parents[2]

#: Hides the runtime's DICOM/NIfTI packages from a child Python, as they are missing on the GPU image.
HIDE_PACKAGES = """
import sys
HIDDEN = {"pydicom", "highdicom", "nibabel"}

class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None

sys.meta_path.insert(0, _Hide())
"""


def _env(out: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "OUT": str(out), "LITSEG_PYTHON": sys.executable, **extra}


def test_dry_run_on_the_cpu_runs_every_section(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {results[k]["status"] for k in ("environment", "standin_model", "throughput", "end_to_end")} == {"ok"}
    assert results["standin_model"]["parity_ok"]
    assert results["throughput"]["best"]["slices_per_s"] > 0
    run = results["end_to_end"]["pytorch_cpu_fp32"]
    assert run["agree"] and min(run["dice"].values()) >= 0.999 and run["model_s"] > 0
    assert "DRY RUN ON THE CPU" in (tmp_path / "gpu_check.txt").read_text()
    assert "[gpu-check" in (tmp_path / "gpu_check.log").read_text()  # progress, as it went


def test_without_the_dicom_packages_it_measures_the_model_and_says_why(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_PACKAGES)
    pythonpath = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--cpu"],
        env=_env(tmp_path / "out", PYTHONPATH=pythonpath),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert results["environment"]["packages"]["pydicom"].startswith("missing")
    assert "not importable" in results["environment"]["litseg_runtime"]
    assert results["throughput"]["status"] == "ok"
    assert results["end_to_end"]["status"] == "skipped"
    assert "model throughput only" in results["end_to_end"]["reason"]
    assert "end_to_end: skipped" in (tmp_path / "out" / "gpu_check.txt").read_text()


def test_dice() -> None:
    a = np.array([0, 1, 1, 2, 2, 0])
    b = np.array([0, 1, 0, 2, 2, 2])
    assert dice(a, b, 1) == 2 / 3 and dice(a, b, 2) == 0.8 and dice(a, b, 3) == 1.0
