"""The int8 evaluation of issue 15 quantises a real ONNX model, calibrates on training cases only and
compares its labels with the fp32 model's on validation cases."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from benchmarks import int8_eval
from litseg.runtime.spec import PreprocessSpec
from tests.factories import LIVER_HU, TUMOR_HU, make_intensity_model


def _unit(hu: float, spec: PreprocessSpec) -> float:
    lo, hi = spec.window_hu
    return (hu - lo) / (hi - lo)


def _write_set(path: Path, spec: PreprocessSpec) -> None:
    """16 slices of 4 cases (2 train, 2 val): background, a liver disc, a tumor inside; each case's slices
    carry its index in a corner pixel, so a draw can be traced back to its case."""
    yy, xx = np.mgrid[:64, :64]
    images = np.full((16, 64, 64), _unit(-100.0, spec), np.float32)
    for n in range(16):
        images[n][(yy - 32) ** 2 + (xx - 32) ** 2 < (18 + n % 4) ** 2] = _unit(LIVER_HU, spec)
        images[n][(yy - 30) ** 2 + (xx - 36) ** 2 < 25] = _unit(TUMOR_HU, spec)
    case_index = np.repeat(np.arange(4), 4).astype(np.int32)
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["case_index"] = case_index
        f["case_split"] = np.array([b"train", b"val", b"train", b"val"])


def test_draws_keep_training_and_validation_cases_apart(tmp_path: Path) -> None:
    spec = PreprocessSpec()
    _write_set(tmp_path / "set.h5", spec)
    with h5py.File(tmp_path / "set.h5", "r") as f:
        by_case = {int(c): f["images"][np.flatnonzero(f["case_index"][:] == c)] for c in range(4)}
    drawn = int8_eval.draw([tmp_path / "set.h5"], 8, "val")
    assert drawn.shape == (8, 1, 64, 64)
    val = np.concatenate([by_case[1], by_case[3]])
    for image in drawn[:, 0]:
        assert any(np.array_equal(image, v) for v in val)


def test_int8_variant_is_measured_against_fp32(tmp_path: Path) -> None:
    spec = PreprocessSpec()
    model = make_intensity_model(tmp_path / "model.onnx", spec)
    _write_set(tmp_path / "set.h5", spec)
    out = tmp_path / "int8.json"
    argv = [str(model), "--calibration", str(tmp_path / "set.h5"), "--held-out", str(tmp_path / "set.h5")]
    argv += ["--calibration-slices", "8", "--held-out-slices", "8", "--repeats", "1", "--variant", "minmax"]
    assert int8_eval.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"fp32", "minmax"}
    assert result["variants"]["fp32"]["foreground_dice_vs_fp32"] == 1.0
    int8 = result["variants"]["minmax"]
    assert 0.9 < int8["foreground_dice_vs_fp32"] <= 1.0 and int8["ms_per_slice"] > 0
