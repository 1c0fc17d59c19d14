"""The GPU check's stand-in: litseg's U-Net rebuilt in PyTorch from an ONNX export reproduces onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from benchmarks import gpu_standin
from litseg.export.onnx_export import MeanProbabilities, export_onnx
from litseg.export.onnx_unet import unet_from_onnx
from litseg.runtime import Model, PreprocessSpec, default_model_path
from litseg.train.fit.unet import UNet
from tests.factories import make_intensity_model


def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    return np.asarray(out)


def test_bundled_model_rebuilt_in_pytorch_matches_onnxruntime() -> None:
    rebuilt = unet_from_onnx(default_model_path())
    assert (rebuilt.base, rebuilt.num_classes, rebuilt.members) == (16, 3, 1)
    x = np.random.default_rng(1).random((2, 1, 256, 256), dtype=np.float32)
    with torch.inference_mode():
        mine = rebuilt.network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mine, _onnxruntime(default_model_path(), x), atol=1e-4, rtol=0)


def test_standin_volume_prediction_matches_the_runtime_with_test_time_shifts() -> None:
    """The stand-in's volume arithmetic (shifts, padding of the last batch) is the runtime's."""
    rebuilt = unet_from_onnx(default_model_path())
    image = np.random.default_rng(2).random((3, 256, 256), dtype=np.float32)
    shifts = ((0, 0), (8, 8))
    mine = gpu_standin.predict_volume(rebuilt.network, image, shifts, "cpu", "fp32", batch=2)
    theirs = Model(default_model_path(), device="cpu").predict_volume(image, 8, None, shifts)
    np.testing.assert_allclose(mine, theirs, atol=1e-4, rtol=0)


def test_ensemble_export_rebuilt_with_its_members(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ensemble = MeanProbabilities([UNet(3, base=4), UNet(3, base=4)])
    spec = PreprocessSpec(target_shape_yx=(64, 64))
    export_onnx(ensemble, spec, tmp_path / "ensemble.onnx", "ensemble", "0.0.1")  # no architecture metadata
    rebuilt = unet_from_onnx(tmp_path / "ensemble.onnx")
    assert (rebuilt.base, rebuilt.members) == (4, 2)
    x = np.random.default_rng(3).random((2, 1, 64, 64), dtype=np.float32)
    with torch.inference_mode():
        mine = rebuilt.network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mine, _onnxruntime(tmp_path / "ensemble.onnx", x), atol=1e-5, rtol=0)


def test_a_model_that_is_not_a_litseg_unet_is_refused(tmp_path: Path) -> None:
    path = make_intensity_model(tmp_path / "intensity.onnx")
    with pytest.raises(ValueError, match=r"intensity\.onnx: no initializer enc1\.0\.weight; not a litseg U-Net"):
        unet_from_onnx(path)
