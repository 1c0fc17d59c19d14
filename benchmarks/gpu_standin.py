"""The exported network through PyTorch: a stand-in for onnxruntime's CUDA provider in the GPU check.

Where the GPU machine's onnxruntime has no CUDA provider, :mod:`benchmarks.gpu_check` rebuilds the bundled
model in PyTorch (:mod:`litseg.export.onnx_unet`) and measures it here: the model's throughput on resident
data (:func:`throughput`), and whole volumes with litseg's test-time shifts (:func:`predict_volume`, the
same arithmetic as ``litseg.runtime.Model.predict_volume``, on the device, fixed batch shape with the last
batch padded). :class:`TorchModel` lets ``litseg.runtime.segment`` run end to end with the model on the
GPU and everything else as litseg does it. Everything measured here is PyTorch's, not onnxruntime's, and
is labelled so.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

#: precision modes: (autocast dtype or None, TF32 allowed)
MODES: dict[str, tuple[torch.dtype | None, bool]] = {
    "fp32": (None, False),
    "tf32": (None, True),
    "fp16-autocast": (torch.float16, True),
    "bf16-autocast": (torch.bfloat16, True),
}


def modes_for(device: str) -> list[str]:
    """The modes worth measuring on ``device`` (the CPU dry run: fp32 only; bf16 convolutions on a CPU
    without AMX run at a hundredth of fp32's speed)."""
    return list(MODES) if device.startswith("cuda") else ["fp32"]


def _precision(device: str, mode: str) -> AbstractContextManager[Any]:
    dtype, tf32 = MODES[mode]
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prepare(network: torch.nn.Module, device: str) -> torch.nn.Module:
    """The network on ``device`` in eval mode (channels-last on CUDA, where cuDNN's tensor-core kernels
    want it)."""
    network = network.to(device).eval()
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: plan once, reuse
        network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return network


def throughput(
    network: torch.nn.Module, device: str, mode: str, batch: int, shape_yx: tuple[int, int], seconds: float = 1.0
) -> dict[str, float]:
    """Slices per second of the model alone on data already on ``device`` (random input, fixed batch)."""
    x = torch.rand(batch, 1, *shape_yx, device=device)
    if device.startswith("cuda"):
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), _precision(device, mode):
        for _ in range(3 if device.startswith("cuda") else 1):  # warm-up: cuDNN plans, autocast caches
            network(x)
        _sync(device)
        start = time.perf_counter()
        network(x)
        _sync(device)
        floor = 3 if seconds > 0 else 1  # seconds=0: one timed call (dry runs)
        iterations = int(min(200, max(floor, seconds / max(time.perf_counter() - start, 1e-6))))
        start = time.perf_counter()
        for _ in range(iterations):
            network(x)
        _sync(device)
        elapsed = time.perf_counter() - start
    return {"slices_per_s": batch * iterations / elapsed, "ms_per_batch": 1e3 * elapsed / iterations}


def _moves(n: int, d: int) -> tuple[slice, slice]:
    """(destination, source) slices moving ``n`` samples by ``d``, as litseg.runtime.model._axis_slices."""
    return (slice(d, n), slice(0, n - d)) if d >= 0 else (slice(0, n + d), slice(-d, n))


def predict_volume(
    network: torch.nn.Module,
    image: np.ndarray,
    shifts: tuple[tuple[int, int], ...],
    device: str,
    mode: str,
    batch: int = 64,
) -> np.ndarray:
    """Probabilities ``(z, classes, h, w)`` float32 of a ``(z, h, w)`` float32 volume, averaged over the
    test-time ``shifts`` as litseg's runtime does (uncovered pixels 0; each pixel divided by the passes
    that saw it). Every batch has ``batch`` slices (the last one zero-padded), so the device plans once."""
    nz, ny, nx = image.shape
    source = torch.from_numpy(np.array(image, dtype=np.float32))  # a copy: the runtime's arrays are read-only
    seen = torch.zeros((ny, nx), dtype=torch.float32, device=device)
    plans = [((dy, dx), _moves(ny, dy), _moves(nx, dx)) for dy, dx in shifts]
    for _, (_, ysrc), (_, xsrc) in plans:
        seen[ysrc, xsrc] += 1.0
    cuda = device.startswith("cuda")
    out: torch.Tensor | None = None
    with torch.inference_mode(), _precision(device, mode):
        for start in range(0, nz, batch):
            stop = min(start + batch, nz)
            x = torch.zeros((batch, 1, ny, nx), dtype=torch.float32, device=device)
            x[: stop - start, 0] = source[start:stop].to(device, non_blocking=cuda)
            acc: torch.Tensor | None = None
            for (dy, dx), (ydst, ysrc), (xdst, xsrc) in plans:
                if (dy, dx) == (0, 0):
                    moved = x
                else:
                    moved = torch.zeros_like(x)
                    moved[:, :, ydst, xdst] = x[:, :, ysrc, xsrc]
                if cuda:
                    moved = moved.contiguous(memory_format=torch.channels_last)
                probs = network(moved).float()
                if acc is None:
                    acc = torch.zeros_like(probs)
                acc[:, :, ysrc, xsrc] += probs[:, :, ydst, xdst]
            assert acc is not None  # at least one shift, checked by the caller's model
            if len(plans) > 1:
                acc /= seen
            if out is None:
                out = torch.empty((nz, acc.shape[1], ny, nx), dtype=torch.float32, pin_memory=cuda)
            out[start:stop].copy_(acc[: stop - start], non_blocking=cuda)
        _sync(device)
    assert out is not None
    return out.numpy()


class TorchModel:
    """A ``litseg.runtime.Model`` whose model runs in PyTorch on ``device`` (the GPU check's stand-in).

    ``info`` and ``spec`` come from the real model (loaded on the CPU), so ``segment`` reads the same
    metadata; ``predict_volume`` and ``predict`` run the rebuilt network. Anything else is delegated to
    the real model: ``calls`` tells whether ``segment`` actually went through this class (if the runtime
    stops calling ``predict_volume``, calls stays 0 and the check reports the stand-in end to end as
    not measured rather than timing onnxruntime on the CPU under a GPU label).
    """

    def __init__(self, cpu_model: Any, network: torch.nn.Module, device: str, mode: str, batch: int = 64) -> None:
        self._model = cpu_model
        self.network, self.device, self.mode, self.batch = network, device, mode, batch
        self.info = cpu_model.info
        self.provider = f"PyTorch {device} {mode} (stand-in for onnxruntime CUDA)"
        self.calls = 0
        self.seconds = 0.0

    @property
    def spec(self) -> Any:
        return self.info.spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict_volume(
        self,
        image: np.ndarray,
        batch_size: int = 8,
        progress: Any = None,
        shifts: tuple[tuple[int, int], ...] = ((0, 0),),
    ) -> np.ndarray:
        self.calls += 1
        start = time.perf_counter()
        probs = predict_volume(self.network, np.asarray(image), tuple(shifts), self.device, self.mode, self.batch)
        self.seconds += time.perf_counter() - start
        if progress is not None:
            progress(image.shape[0], image.shape[0])
        return probs

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_volume(np.asarray(batch)[:, 0])
