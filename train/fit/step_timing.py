"""``python -m litseg.train.fit.step_timing``: how long a training recipe will take on this machine.

Times a few real optimisation steps of the U-Net (the trainer's own step, precision and memory layout) on
random data and scales them to the recipe's number of samples, so that a run sized for one machine (the
bundled models' hour was measured on a CPU with native bf16) does not surprise on another: CPUs without
AVX512-BF16 / AMX train in fp32 at a fraction of the speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import torch

from .loop import _Logits, autocast_dtype, hardware, training_step
from .unet import UNet


def seconds_per_sample(base: int, patch: int, batch: int, classes: int = 3, steps: int = 3) -> tuple[float, str]:
    """Seconds per training sample of the U-Net at this width and patch size, and the precision used."""
    device = torch.device("cpu")
    model = UNet(classes, base)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit the argument
    net = _Logits(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    precision = autocast_dtype(device, True)
    image = torch.rand(batch, 1, patch, patch).to(memory_format=torch.channels_last)
    mask = torch.randint(0, classes, (batch, patch, patch))
    weights = torch.ones(classes)
    training_step(net, optimizer, scaler, precision, image, mask, "ce+dice", weights)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        training_step(net, optimizer, scaler, precision, image, mask, "ce+dice", weights)
    elapsed = (time.perf_counter() - start) / (steps * batch)
    return elapsed, str(precision or torch.float32).removeprefix("torch.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m litseg.train.fit.step_timing", description=__doc__)
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--samples",
        action="append",
        default=[],
        metavar="PATCH:COUNT",
        help="samples of one size the recipe trains on, e.g. 160:72000 (repeat for other sizes)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    total = 0.0
    parts: dict[int, float] = {}
    precision = "float32"
    for item in args.samples or ["160:1"]:
        try:
            patch, count = (int(v) for v in item.split(":"))
        except ValueError:
            parser.error(f"--samples: expected PATCH:COUNT such as 160:72000; got {item!r}")
        if patch not in parts:
            parts[patch], precision = seconds_per_sample(args.base, patch, args.batch)
        total += parts[patch] * count
    print(
        json.dumps(
            {
                "hardware": hardware(torch.device("cpu"), 1),
                "precision": precision,
                "seconds_per_sample": {k: round(v, 4) for k, v in parts.items()},
                "estimated_training_minutes": round(total / 60, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
