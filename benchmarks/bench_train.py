"""One training step of the base-16 U-Net (batch 8 of 160x160 patches, 3 classes, ce+dice): the trainer's
setting (channels-last, bf16 autocast where the CPU computes bf16 natively) against plain fp32."""

from __future__ import annotations

import pytest
import torch

from litseg.train.fit.trainer import _Logits, autocast_dtype, training_step
from litseg.train.fit.unet import UNet

WEIGHTS = torch.tensor([0.3, 1.4, 1.4])


def _step(precision: torch.dtype | None, channels_last: bool):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = _Logits(UNet(3, base=16))
    net.to(memory_format=fmt)  # type: ignore[call-overload]
    image = torch.rand(8, 1, 160, 160).contiguous(memory_format=fmt)
    mask = torch.randint(0, 3, (8, 160, 160))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return lambda: training_step(net, optimizer, scaler, precision, image, mask, "ce+dice", WEIGHTS)


@pytest.mark.benchmark(group="train step base16 8x160x160")
def test_bench_train_step_trainer_setting(benchmark) -> None:  # type: ignore[no-untyped-def]
    loss = benchmark(_step(autocast_dtype(torch.device("cpu"), True), channels_last=True))
    assert torch.isfinite(loss)


@pytest.mark.benchmark(group="train step base16 8x160x160")
def test_bench_train_step_fp32_baseline(benchmark) -> None:  # type: ignore[no-untyped-def]
    loss = benchmark(_step(None, channels_last=False))
    assert torch.isfinite(loss)
