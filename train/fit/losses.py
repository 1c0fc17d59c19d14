"""Weighted losses on softmax outputs: BCE (2 classes), categorical CE, soft Dice, and their sums.

Partial labels: in a liver-tumor target, the value :data:`~.h5set.LIVER_OR_TUMOR` (3) marks pixels known
to be liver or tumor without saying which (real slices whose source merged the two). There the losses
use the marginal probability ``p(liver) + p(tumor)`` (a region / marginal loss, as nnU-Net's region
training and the marginal loss of partially labelled data do): the network is rewarded for either class
and penalised for background, so it learns the liver's extent from those slices and tumor only from the
fully labelled ones.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from ..data.h5set import LIVER_OR_TUMOR

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


def _check_partial(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mask of liver-or-tumor pixels; refused unless the output has the 3 liver-tumor classes."""
    merged = target == LIVER_OR_TUMOR
    if logits.shape[1] != 3 and bool(merged.any()):
        raise ValueError(
            f"target value {LIVER_OR_TUMOR} (liver-or-tumor) needs the 3 liver-tumor classes; the output has "
            f"{logits.shape[1]} (prepare the set for the liver task, where such pixels are liver)"
        )
    return merged


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on the foreground channel of a 2-class output, weighted per class."""
    if logits.shape[1] != 2:
        raise ValueError(f"weighted BCE needs 2 classes; got {logits.shape[1]} (use 'ce' for more)")
    _check_partial(logits, target)
    fg = logits[:, 1] - logits[:, 0]  # log-odds of foreground under the 2-way softmax
    y = (target == 1).float()
    per_pixel = F.binary_cross_entropy_with_logits(fg, y, reduction="none")
    w = torch.where(target == 1, weights[1], weights[0])
    return (per_pixel * w).sum() / w.sum()


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Categorical cross-entropy with per-class weights (weighted mean over pixels); a liver-or-tumor
    pixel scores ``-log(p_liver + p_tumor)`` with the liver's weight."""
    merged = _check_partial(logits, target)
    w = weights.to(logits.device)
    if not bool(merged.any()):
        return F.cross_entropy(logits, target.long(), weight=w)
    logp = F.log_softmax(logits, dim=1)
    index = torch.where(merged, 1, target.long())
    nll = -logp.gather(1, index[:, None])[:, 0]
    nll = torch.where(merged, -torch.logsumexp(logp[:, 1:3], dim=1), nll)
    pixel_w = w[index]
    return (nll * pixel_w).sum() / pixel_w.sum()


def _soft_dice(probs: torch.Tensor, onehot: torch.Tensor, eps: float) -> torch.Tensor:
    """Soft Dice per channel over the batch: ``probs`` and ``onehot`` ``(n, c, h, w)`` -> ``(c,)``."""
    dims = (0, 2, 3)
    return (2 * (probs * onehot).sum(dims) + eps) / (probs.sum(dims) + onehot.sum(dims) + eps)


def weighted_dice(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - weighted mean of per-class soft Dice over the batch (background included with its weight).

    Samples holding liver-or-tumor pixels give the background term and one liver-or-tumor term
    (``p_liver + p_tumor`` against the merged foreground, with the liver's weight); the liver and tumor
    terms come from the fully labelled samples only.
    """
    merged = _check_partial(logits, target)
    probs = torch.softmax(logits, dim=1)
    w = weights.to(probs.device)
    if not bool(merged.any()):
        onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
        dice = _soft_dice(probs, onehot, eps)
        return 1.0 - (dice * w).sum() / w.sum()
    partial = merged.flatten(1).any(1)
    target_bg = (target == 0).to(probs.dtype)[:, None]
    terms = [_soft_dice(probs[:, :1], target_bg, eps)[0] * w[0]]
    weight_sum = [w[0]]
    if bool((~partial).any()):
        exact = target[~partial].long()
        onehot = F.one_hot(exact, 3).permute(0, 3, 1, 2).to(probs.dtype)
        dice = _soft_dice(probs[~partial][:, 1:], onehot[:, 1:], eps)
        terms += [dice[0] * w[1], dice[1] * w[2]]
        weight_sum += [w[1], w[2]]
    fg_probs = probs[partial][:, 1:3].sum(1, keepdim=True)
    fg_target = (target[partial] > 0).to(probs.dtype)[:, None]
    terms.append(_soft_dice(fg_probs, fg_target, eps)[0] * w[1])
    weight_sum.append(w[1])
    return 1.0 - torch.stack(terms).sum() / torch.stack(weight_sum).sum()


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
