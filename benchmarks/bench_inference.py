"""Inference of the bundled liver-tumor model on 16 slices of 256x256: the CPU's default batch (2) and 8 slices per
call vs one slice per call, two test-time shifts vs one pass, and (on a machine with a CUDA GPU, `make test-gpu`
/ `make bench`; skipped without one) GPU vs CPU."""

from __future__ import annotations

import numpy as np
import pytest

from litseg.runtime import Model, default_model_path
from litseg.runtime.model import cuda_device_count

SLICES = np.random.default_rng(0).random((16, 256, 256)).astype(np.float32)


@pytest.fixture(scope="module")
def cpu_model() -> Model:
    return Model(default_model_path(), device="cpu")


@pytest.mark.benchmark(group="inference 16x256x256 cpu")
def test_bench_inference_batched(benchmark, cpu_model: Model) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(cpu_model.predict_volume, SLICES, cpu_model.default_batch_size)
    assert out.shape == (16, 3, 256, 256)


@pytest.mark.benchmark(group="inference 16x256x256 cpu")
def test_bench_inference_batch_of_8(benchmark, cpu_model: Model) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(cpu_model.predict_volume, SLICES, 8)
    assert out.shape == (16, 3, 256, 256)


@pytest.mark.benchmark(group="inference 16x256x256 cpu")
def test_bench_inference_one_slice_per_call_baseline(benchmark, cpu_model: Model) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(cpu_model.predict_volume, SLICES, 1)
    assert out.shape == (16, 3, 256, 256)


@pytest.mark.gpu
@pytest.mark.benchmark(group="inference 16x256x256 gpu vs cpu")
def test_bench_inference_gpu(benchmark, cpu_model: Model) -> None:  # type: ignore[no-untyped-def]
    if cuda_device_count() == 0:
        pytest.skip("no CUDA GPU on this machine")
    gpu = Model(default_model_path(), device="gpu")
    out = benchmark(gpu.predict_volume, SLICES, 8)
    np.testing.assert_allclose(out, cpu_model.predict_volume(SLICES, 8), atol=1e-3)


@pytest.mark.benchmark(group="inference 16x256x256 cpu: test-time shifts")
def test_bench_inference_two_shifts(benchmark, cpu_model: Model) -> None:  # type: ignore[no-untyped-def]
    # test-time augmentation as the 0.4 and 0.5 models were calibrated (0.6.0 runs one pass): about 2x
    out = benchmark(cpu_model.predict_volume, SLICES, 8, None, ((0, 0), (8, 8)))
    assert out.shape == (16, 3, 256, 256)


@pytest.mark.benchmark(group="inference 16x256x256 cpu: test-time shifts")
def test_bench_inference_one_pass_baseline(benchmark, cpu_model: Model) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(cpu_model.predict_volume, SLICES, 8)
    assert out.shape == (16, 3, 256, 256)
