"""The HDF5 sets of one training run: checked against each other, split, balanced and concatenated.

Every set is split patient-wise on its own (or by the split it records, e.g. MSD's fixed 100 / 22
patients), validated on its own, and contributes its share of each epoch (``--mix``). Class weights come
from the training cases only, weighted by each set's share of the epoch.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from litseg.runtime.errors import InputError
from litseg.runtime.spec import PreprocessSpec

from .config import TrainConfig
from .dataset import (
    Augment,
    Crop,
    SetInfo,
    SliceDataset,
    class_voxels_of,
    data_summary,
    patient_split,
    read_info,
    slice_label_counts,
)
from .losses import class_weights
from .sampling import EpochPlan, draws_per_set


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """One HDF5 set of a run: its split and the label counts of its training slices (``(n, 4)``)."""

    path: Path
    name: str  # for log columns: the file's stem (made unique within the run)
    info: SetInfo
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_counts: np.ndarray

    def rare(self) -> np.ndarray:
        """Per training slice: it shows the rarest class (tumor; liver for the liver task)."""
        return np.asarray(self.train_counts[:, self.info.spec.num_classes - 1] > 0)


def open_sets(config: TrainConfig, task: str | None = None) -> list[TrainingSet]:
    """Read, check and split the run's sets.

    Raises
    ------
    InputError
        A set prepared for another task, sets whose preprocessing specs differ (window, size, ...), or a
        set marked for testing only; each message names the file.
    """
    sets: list[TrainingSet] = []
    names: set[str] = set()
    first: tuple[Path, PreprocessSpec] | None = None
    for raw in config.data:
        path = Path(raw)
        info = read_info(path)
        wanted = task or config.task or info.task
        if info.task != wanted:
            raise InputError(f"{path}: prepared for the task {info.task}, not {wanted}; prepare it for {wanted}")
        if info.use == "test":
            raise InputError(f"{path} is marked for testing only (use=test); it must never be trained on")
        if first is None:
            first = (path, info.spec)
        elif info.spec != first[1]:
            raise InputError(
                f"{path} has a different preprocessing spec than {first[0]} ({info.spec.to_json()} vs "
                f"{first[1].to_json()}); sets mixed in one run must share it: prepare them with the same "
                "--window-hu and --size"
            )
        train_idx, val_idx = patient_split(info, config.val_fraction, config.seed)
        name = path.stem
        while name in names:
            name += "+"
        names.add(name)
        sets.append(TrainingSet(path, name, info, train_idx, val_idx, slice_label_counts(path, train_idx)))
    return sets


def epoch_plan(sets: list[TrainingSet], config: TrainConfig) -> EpochPlan:
    """How each epoch draws from the sets' training slices (mix, boost, samples per epoch)."""
    sizes = [s.train_idx.size for s in sets]
    total = config.slices_per_epoch or sum(sizes)
    offsets = tuple(int(v) for v in np.cumsum([0, *sizes[:-1]]))
    rare = tuple(s.rare() for s in sets)
    draws = draws_per_set(sizes, total, config.mix)
    return EpochPlan(offsets, rare, draws, config.rare_class_boost, config.seed)


def run_class_weights(sets: list[TrainingSet], plan: EpochPlan, weight_cap: float) -> torch.Tensor:
    """Class weights from the training slices only: each set's class fractions weighted by its share of
    the epoch (liver-or-tumor pixels count as liver)."""
    num_classes = sets[0].info.spec.num_classes
    voxels = np.zeros(num_classes)
    for s, draws in zip(sets, plan.draws, strict=True):
        per_slice = class_voxels_of(s.train_counts, num_classes) / max(1, s.train_idx.size)
        voxels += draws * per_slice
    return class_weights(np.maximum(voxels, 1.0), max_ratio=weight_cap)


def run_summary(sets: list[TrainingSet], plan: EpochPlan) -> dict[str, object]:
    """The training-data record of the checkpoint and the ONNX metadata: a single set as before; several
    sets as totals plus one entry per set with its share of the epoch."""
    summaries = [data_summary(s.path, s.info, s.train_idx, s.val_idx) for s in sets]
    if len(sets) == 1:
        return summaries[0]
    for summary, draws in zip(summaries, plan.draws, strict=True):
        summary["epoch_share"] = round(draws / max(1, plan.total), 4)
    totals = {
        key: sum(int(summary[key]) for summary in summaries)  # type: ignore[call-overload]
        for key in ("cases", "train_cases", "val_cases", "train_slices", "val_slices")
    }
    return {"file": " + ".join(s.path.name for s in sets), "task": sets[0].info.task, **totals, "sets": summaries}


class MixedSlices(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The training slices of several sets, concatenated in order (positions as :class:`EpochPlan` uses)."""

    def __init__(self, sets: list[TrainingSet], config: TrainConfig) -> None:
        spec = sets[0].info.spec
        augment = Augment.for_window(spec.window_hu, config.augment_scale) if config.augment else None
        crop = Crop(config.crop, config.crop_foreground) if config.crop else None
        self.parts = [SliceDataset(s.path, s.train_idx, augment, config.seed, crop=crop) for s in sets]
        self.starts = [int(v) for v in np.cumsum([0, *[len(p) for p in self.parts[:-1]]])]

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.epoch = epoch

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``i`` of the concatenation; ``i >= len(self)`` encodes a repeated draw (see
        :class:`~.sampling.EpochSampler`): ``draw, position = divmod(i, len(self))``."""
        draw, position = divmod(i, len(self))
        k = bisect_right(self.starts, position) - 1
        return self.parts[k].sample(position - self.starts[k], draw)
