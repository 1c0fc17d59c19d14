"""The settings of one training run (``litseg-train`` has one flag per field) and the lr schedule."""

from __future__ import annotations

from dataclasses import dataclass

from .dataset import Crop
from .losses import LOSSES

LR_SCHEDULES = ("constant", "poly")


def scheduled_lr(lr: float, schedule: str, progress: float) -> float:
    """The learning rate at ``progress`` (0 at the run's first step, 1 after its last)."""
    if schedule == "poly":
        return lr * float(max(0.0, 1.0 - progress) ** 0.9)
    return lr


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the CLI has one flag per field.

    ``data`` holds one HDF5 set or several to mix; ``mix`` the share of each epoch's samples drawn from
    each set (any positive numbers, normalised; None: in proportion to their training slices).
    """

    data: tuple[str, ...]
    out: str
    task: str | None = None  # None: the task of the HDF5 set(s)
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "poly": lr * (1 - progress) ** 0.9 over this run's epochs (nnU-Net)
    base: int = 64
    loss: str | None = None  # None: bce+dice for liver, ce+dice for liver-tumor
    class_weights: tuple[float, ...] | None = None  # None: from the training split's class frequencies
    weight_cap: float = 1000.0  # computed weights are capped at this multiple of the smallest
    val_fraction: float = 0.2  # of the cases of a set without a recorded split
    slices_per_epoch: int | None = None  # None: every training slice once per epoch
    rare_class_boost: float = 1.0  # sampling weight of slices showing the rarest class (tumor); 1 = uniform
    crop: int | None = None  # train on random square patches of this many pixels; None: whole slices
    crop_foreground: float = 0.5  # fraction of patches centred on the rarest class the slice shows
    augment: bool = True
    # Zoom range of the augmentation (> 1 enlarges): a scanner reconstructs fields of view of about 300-500
    # mm and the runtime resizes the whole field to the model's grid, so one abdomen appears at scales that
    # differ by 500 / 300 = 1.67 between series. The default keeps the 0.6 models' +-10 %.
    augment_scale: tuple[float, float] = (0.9, 1.1)
    seed: int = 0
    workers: int = 0
    amp: bool = True  # mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16 / AMX)
    resume: str | None = None
    init: str | None = None  # start from another run's weights (fine-tuning); tensors whose shape differs stay new
    mix: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # one path given as a string (the API before mixing; checkpoints of litseg < 0.5) is a set of one
        data = (self.data,) if isinstance(self.data, str) else tuple(str(d) for d in self.data)
        object.__setattr__(self, "data", data)
        if self.mix is not None:
            object.__setattr__(self, "mix", tuple(float(m) for m in self.mix))
        scale = tuple(float(v) for v in self.augment_scale)
        object.__setattr__(self, "augment_scale", scale)
        if len(scale) != 2 or not 0.5 <= scale[0] <= scale[1] <= 2.0:
            raise ValueError(f"augment_scale must be two zoom factors 0.5 <= low <= high <= 2; got {list(scale)}")
        if not self.data:
            raise ValueError("data must name at least one HDF5 set")
        if self.epochs < 1 or self.batch_size < 1 or self.base < 1 or not self.lr > 0:
            raise ValueError(
                f"epochs, batch_size and base must be >= 1 and lr > 0; got {self.epochs}, {self.batch_size}, "
                f"{self.base}, {self.lr}"
            )
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        if self.weight_cap < 1.0:
            raise ValueError(f"weight_cap must be >= 1; got {self.weight_cap}")
        if self.rare_class_boost < 1.0:
            raise ValueError(f"rare_class_boost must be >= 1; got {self.rare_class_boost}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}; got {self.lr_schedule!r}")
        if self.crop is not None:
            Crop(self.crop, self.crop_foreground)  # validates
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1); got {self.val_fraction}")
        if self.slices_per_epoch is not None and self.slices_per_epoch < 1:
            raise ValueError(f"slices_per_epoch must be >= 1; got {self.slices_per_epoch}")
        if self.mix is not None:
            if len(self.mix) != len(self.data):
                raise ValueError(f"mix needs one share per data set ({len(self.data)}); got {list(self.mix)}")
            if min(self.mix) < 0 or not sum(self.mix) > 0:
                raise ValueError(f"mix shares must be >= 0 with a positive sum; got {list(self.mix)}")
