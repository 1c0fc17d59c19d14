"""Weighted losses on softmax outputs: BCE (2 classes), categorical CE, soft Dice, and their sums."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

LOSSES = ("bce", "ce", "dice", "bce+dice", "ce+dice")


def class_weights(class_voxels: npt.ArrayLike, max_ratio: float = 1000.0) -> torch.Tensor:
    """Inverse-frequency class weights normalised to mean 1, capped at ``max_ratio`` x the smallest.

    ``class_voxels`` is the voxel count of each class in the training set (HDF5 ``class_voxels``).
    """
    counts = np.asarray(class_voxels, dtype=np.float64)
    if counts.ndim != 1 or (counts <= 0).any():
        raise ValueError(f"class_voxels must be positive counts per class; got {counts.tolist()}")
    w = counts.sum() / counts
    w = np.minimum(w, w.min() * max_ratio)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on the foreground channel of a 2-class output, weighted per class."""
    if logits.shape[1] != 2:
        raise ValueError(f"weighted BCE needs 2 classes; got {logits.shape[1]} (use 'ce' for more)")
    fg = logits[:, 1] - logits[:, 0]  # log-odds of foreground under the 2-way softmax
    y = (target == 1).float()
    per_pixel = F.binary_cross_entropy_with_logits(fg, y, reduction="none")
    w = torch.where(target == 1, weights[1], weights[0])
    return (per_pixel * w).sum() / w.sum()


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Categorical cross-entropy with per-class weights (weighted mean over pixels)."""
    return F.cross_entropy(logits, target.long(), weight=weights.to(logits.device))


def weighted_dice(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - weighted mean of per-class soft Dice over the batch (background included with its weight)."""
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    w = weights.to(probs.device)
    return 1.0 - (dice * w).sum() / w.sum()


def compute_loss(name: str, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {name!r}")
    total = logits.new_zeros(())
    for part in name.split("+"):
        if part == "bce":
            total = total + weighted_bce(logits, target, weights)
        elif part == "ce":
            total = total + weighted_ce(logits, target, weights)
        else:
            total = total + weighted_dice(logits, target, weights)
    return total
