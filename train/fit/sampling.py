"""Which training slices an epoch draws: several sets at a ratio, rare-class boost, and DDP shards.

An epoch's sample is a pure function of ``(seed, epoch)``: every process draws the same list and keeps
every ``world``-th entry from its ``rank``, so under ``torchrun`` the processes together see exactly the
sample one process would (``slices_per_epoch``, the mix and the boost hold under DDP too).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from torch.utils.data import Sampler


def draws_per_set(train_slices: Sequence[int], total: int, mix: Sequence[float] | None) -> tuple[int, ...]:
    """How many of an epoch's ``total`` samples come from each set: by ``mix`` (normalised), else in
    proportion to the sets' training slices; rounded by largest remainder so they sum to ``total``."""
    shares = np.asarray(mix if mix is not None else train_slices, dtype=np.float64)
    if shares.size != len(train_slices) or (shares < 0).any() or not shares.sum() > 0:
        raise ValueError(f"need one non-negative share per set with a positive sum; got {shares.tolist()}")
    for share, n in zip(shares, train_slices, strict=True):
        if share > 0 and n == 0:
            raise ValueError("a set given a share of the epoch has no training slices")
    exact = total * shares / shares.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    return tuple(int(c) for c in counts)


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """The recipe of every epoch's sample.

    Attributes
    ----------
    offsets
        Position of each set's first training slice in the concatenated training data.
    rare
        Per set, a flag per training slice: it shows the rarest class (tumor).
    draws
        Samples drawn from each set per epoch.
    boost
        Sampling weight of a flagged slice against 1 for the others.
    seed
        The run's seed.
    """

    offsets: tuple[int, ...]
    rare: tuple[npt.NDArray[np.bool_], ...]
    draws: tuple[int, ...]
    boost: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not len(self.offsets) == len(self.rare) == len(self.draws):
            raise ValueError("offsets, rare and draws need one entry per set")
        if self.boost < 1.0:
            raise ValueError(f"boost must be >= 1; got {self.boost}")

    @property
    def total(self) -> int:
        return sum(self.draws)

    @property
    def slices(self) -> int:
        """Training slices of all sets together (the length of the concatenated training data)."""
        return sum(r.size for r in self.rare)

    def indices(self, epoch: int) -> npt.NDArray[np.int64]:
        """The epoch's sample: positions in the concatenated training data, shuffled across sets."""
        rng = np.random.default_rng([self.seed, epoch])
        parts = []
        for offset, rare, n in zip(self.offsets, self.rare, self.draws, strict=True):
            if n == 0:
                continue
            if self.boost > 1.0 and rare.any():
                weights = 1.0 + (self.boost - 1.0) * rare.astype(np.float64)
                picked = rng.choice(rare.size, size=n, replace=True, p=weights / weights.sum())
            else:  # without replacement within each pass over the set (every slice once per pass)
                passes = [rng.permutation(rare.size) for _ in range(math.ceil(n / rare.size))]
                picked = np.concatenate(passes)[:n]
            parts.append(offset + picked.astype(np.int64))
        order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return order[rng.permutation(order.size)]


class EpochSampler(Sampler[int]):
    """This process's share of each epoch's sample (all of it when ``world`` is 1).

    The list is padded by wrapping around to a multiple of ``world`` (as ``DistributedSampler`` does), so
    every process runs the same number of steps. With ``encode_draws`` a position drawn again within the
    epoch comes as ``position + draw * plan.slices`` (its ``draw``-th copy), so the dataset can give each
    copy its own augmentation.
    """

    def __init__(self, plan: EpochPlan, rank: int = 0, world: int = 1, encode_draws: bool = False) -> None:
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world; got rank {rank}, world {world}")
        self.plan = plan
        self.rank = rank
        self.world = world
        self.encode_draws = encode_draws
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.plan.total / self.world)

    def __iter__(self) -> Iterator[int]:
        order = self.plan.indices(self.epoch)
        padded = len(self) * self.world
        if order.size and padded > order.size:
            order = np.concatenate([order, order[: padded - order.size]])
        if self.encode_draws and order.size:
            order = order + self.plan.slices * _draw_numbers(order)
        return iter(order[self.rank :: self.world].tolist())


def _draw_numbers(order: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For each entry, how many times its value occurred before it (0 for a first draw)."""
    sort = np.argsort(order, kind="stable")
    values = order[sort]
    starts = np.r_[0, np.nonzero(np.diff(values))[0] + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, values.size]))
    draws = np.empty_like(order)
    draws[sort] = np.arange(values.size) - run_start
    return draws
