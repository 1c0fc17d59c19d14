"""Validation Dice per set, with liver-or-tumor (merged) masks scored as one foreground."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.h5set import LIVER_OR_TUMOR
from .unet import UNet

MERGED_NAME = "liver-or-tumor"


@torch.no_grad()
def evaluate_dice(
    model: UNet, loader: DataLoader[Any], class_names: tuple[str, ...], device: torch.device
) -> dict[str, float]:
    """Global Dice of the argmax prediction over a loader, per class name.

    Background is scored on every slice (merged masks know it exactly); liver and tumor on the slices
    whose masks are exact (no liver-or-tumor pixel); slices with liver-or-tumor pixels give
    ``liver-or-tumor``: the predicted liver plus tumor against the merged foreground. A class without
    reference or prediction in any scored slice is NaN.
    """
    model.eval()
    n = len(class_names)
    inter = torch.zeros(n + 1, dtype=torch.float64)
    total = torch.zeros(n + 1, dtype=torch.float64)
    for image, mask in loader:
        pred = model.logits(image.to(device, memory_format=torch.channels_last)).argmax(1).cpu()
        partial = (mask == LIVER_OR_TUMOR).flatten(1).any(1)
        exact_pred, exact_mask = pred[~partial], mask[~partial]
        for c in range(n):
            p, t = (pred == 0, mask == 0) if c == 0 else (exact_pred == c, exact_mask == c)
            inter[c] += (p & t).sum()
            total[c] += p.sum() + t.sum()
        if bool(partial.any()):
            p, t = pred[partial] > 0, mask[partial] > 0
            inter[n] += (p & t).sum()
            total[n] += p.sum() + t.sum()
    dice = [float(2 * i / t) if t > 0 else float("nan") for i, t in zip(inter, total, strict=True)]
    out = dict(zip(class_names, dice[:n], strict=True))
    if total[n] > 0:
        out[MERGED_NAME] = dice[n]
    return out


def set_score(dice: dict[str, float], class_names: tuple[str, ...]) -> float:
    """One number per set for choosing the best epoch: the mean foreground Dice of its exact slices and,
    where it has merged slices, their liver-or-tumor Dice (NaN parts left out)."""
    parts = [dice[name] for name in class_names[1:]] + ([dice[MERGED_NAME]] if MERGED_NAME in dice else [])
    finite = [v for v in parts if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")
